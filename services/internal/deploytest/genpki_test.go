package deploytest

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/warden-sec/warden/services/internal/seal"
)

// TestGenPKI runs deploy/docker-compose/gen-pki.sh and checks that what it makes is what the compose
// file's consumers need: etcd's server certificate for "etcd", wardend's client certificate, the db
// server certificate, and a seal key wardend accepts.
func TestGenPKI(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	run := func() {
		cmd := exec.CommandContext(t.Context(), "sh", deployPath(t, "docker-compose", "gen-pki.sh"), dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("gen-pki.sh: %v\n%s", err, out)
		}
	}
	run()
	sealKey := readFile(t, filepath.Join(dir, "secrets", "seal.key"))

	etcdRoots := pool(t, filepath.Join(dir, "etcd-pki", "etcd", "ca.crt"))
	verify(t, filepath.Join(dir, "etcd-pki", "etcd", "server.crt"), etcdRoots, "etcd", x509.ExtKeyUsageServerAuth)
	verify(t, filepath.Join(dir, "etcd-pki", "wardend", "wardend-client.crt"), pool(t, filepath.Join(dir, "etcd-pki", "wardend", "ca.crt")), "", x509.ExtKeyUsageClientAuth)
	verify(t, filepath.Join(dir, "db-pki", "server.crt"), pool(t, filepath.Join(dir, "db-pki", "ca.crt")), "db", x509.ExtKeyUsageServerAuth)

	if _, err := seal.LoadKeyringFile(filepath.Join(dir, "secrets", "seal.key")); err != nil {
		t.Errorf("wardend would refuse the generated seal key: %v", err)
	}
	for _, key := range []string{"etcd-pki/etcd/server.key", "etcd-pki/wardend/wardend-client.key", "db-pki/server.key", "ca/etcd/ca.key"} {
		info, err := os.Stat(filepath.Join(dir, key))
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", key, perm)
		}
	}
	// CA keys are never in a directory a container mounts.
	for _, mounted := range []string{"etcd-pki/etcd", "etcd-pki/wardend", "db-pki", "secrets"} {
		entries, err := os.ReadDir(filepath.Join(dir, mounted))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() == "ca.key" {
				t.Errorf("%s/ca.key is in a mounted directory", mounted)
			}
		}
	}

	// A second run keeps every key in use.
	run()
	if !bytes.Equal(sealKey, readFile(t, filepath.Join(dir, "secrets", "seal.key"))) {
		t.Error("a second run replaced the seal key")
	}
}

func pool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(readFile(t, path)) {
		t.Fatalf("%s: no certificate", path)
	}
	return p
}

func verify(t *testing.T, path string, roots *x509.CertPool, dnsName string, usage x509.ExtKeyUsage) {
	t.Helper()
	block, _ := pem.Decode(readFile(t, path))
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: dnsName, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		t.Errorf("%s does not verify for %q: %v", path, dnsName, err)
	}
}
