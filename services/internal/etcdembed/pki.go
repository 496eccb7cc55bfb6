package etcdembed

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names inside DataDir/etcd/pki. The CA key is deliberately not kept:
// once the three certificates exist nobody, wardend included, can mint a new
// client certificate, so the client key file is the only way in.
const (
	caCertFile     = "ca.crt"
	serverCertFile = "server.crt"
	serverKeyFile  = "server.key"
	clientCertFile = "client.crt"
	clientKeyFile  = "client.key"
)

const (
	certValidity = 10 * 365 * 24 * time.Hour
	// renewBefore makes a restart regenerate the whole set well before expiry,
	// so an etcd that has been up for years does not fail its next handshake.
	renewBefore = 30 * 24 * time.Hour
)

type pki struct {
	dir string
}

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }

// ensure makes sure dir holds a valid, unexpired CA, server and client
// certificate set, generating a fresh one when anything is missing or stale.
// Client and peer traffic never leave this machine and both ends are ours, so
// rotating everything at once is simpler than renewing piecemeal.
func (p pki) ensure(now time.Time) (generated bool, err error) {
	if err := p.validate(now); err == nil {
		return false, nil
	}
	if err := p.generate(now); err != nil {
		return false, err
	}
	return true, nil
}

func (p pki) validate(now time.Time) error {
	caPEM, err := os.ReadFile(p.path(caCertFile))
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("CA file holds no certificate")
	}
	for _, pair := range []struct {
		cert, key string
		usage     x509.ExtKeyUsage
	}{
		{serverCertFile, serverKeyFile, x509.ExtKeyUsageServerAuth},
		{clientCertFile, clientKeyFile, x509.ExtKeyUsageClientAuth},
	} {
		kp, err := tls.LoadX509KeyPair(p.path(pair.cert), p.path(pair.key))
		if err != nil {
			return fmt.Errorf("load %s: %w", pair.cert, err)
		}
		leaf := kp.Leaf
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots:       roots,
			CurrentTime: now.Add(renewBefore),
			KeyUsages:   []x509.ExtKeyUsage{pair.usage},
		}); err != nil {
			return fmt.Errorf("verify %s: %w", pair.cert, err)
		}
	}
	return nil
}

// generate writes a new set into a sibling temporary directory and renames it
// into place, so a crash never leaves a half-written set behind.
func (p pki) generate(now time.Time) error {
	parent := filepath.Dir(p.dir)
	tmp, err := os.MkdirTemp(parent, ".pki-")
	if err != nil {
		return fmt.Errorf("create temporary pki dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := writeCertSet(tmp, now); err != nil {
		return err
	}
	if err := os.RemoveAll(p.dir); err != nil {
		return fmt.Errorf("remove old pki dir: %w", err)
	}
	if err := os.Rename(tmp, p.dir); err != nil {
		return fmt.Errorf("install pki dir: %w", err)
	}
	return nil
}

func writeCertSet(dir string, now time.Time) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "warden embedded etcd CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, caCert, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("sign CA: %w", err)
	}
	if err := writePEM(filepath.Join(dir, caCertFile), "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}

	// The server certificate also carries client auth because etcd uses its
	// peer certificate both to serve and to dial peers.
	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "warden embedded etcd"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(certValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{"localhost"},
	}
	if err := issue(dir, serverCertFile, serverKeyFile, server, caCert, caKey); err != nil {
		return err
	}
	client := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "wardend"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(certValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return issue(dir, clientCertFile, clientKeyFile, client, caCert, caKey)
}

func issue(dir, certName, keyName string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key for %s: %w", certName, err)
	}
	der, _, err := sign(tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("sign %s: %w", certName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key for %s: %w", certName, err)
	}
	if err := writePEM(filepath.Join(dir, keyName), "PRIVATE KEY", keyDER, 0o600); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, certName), "CERTIFICATE", der, 0o644)
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return der, cert, nil
}

// writePEM creates the file with its final mode, so a key is never readable
// by others even for an instant.
func writePEM(path, blockType string, der []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", filepath.Base(path), err)
	}
	if err := pem.Encode(f, &pem.Block{Type: blockType, Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", filepath.Base(path), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", filepath.Base(path), err)
	}
	return nil
}

// clientTLS is the configuration wardend dials its embedded etcd with.
func (p pki) clientTLS() (*tls.Config, error) {
	caPEM, err := os.ReadFile(p.path(caCertFile))
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("CA file holds no certificate")
	}
	kp, err := tls.LoadX509KeyPair(p.path(clientCertFile), p.path(clientKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load client certificate: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      roots,
		Certificates: []tls.Certificate{kp},
		ServerName:   "127.0.0.1",
	}, nil
}
