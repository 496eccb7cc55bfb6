package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestResolve(t *testing.T) {
	full := t.TempDir()
	writeFiles(t, filepath.Join(full, "admin"), "ca.crt", "admin.crt", "admin.key")
	caOnly := t.TempDir()
	writeFiles(t, filepath.Join(caOnly, "admin"), "ca.crt")
	halfCert := t.TempDir()
	writeFiles(t, filepath.Join(halfCert, "admin"), "ca.crt", "admin.crt")
	empty := t.TempDir()
	adm := func(dir, f string) string { return filepath.Join(dir, "admin", f) }

	cases := []struct {
		name    string
		opts    GlobalOptions
		changed []string
		env     map[string]string
		want    Credentials
		wantErr string
	}{
		{
			name: "data dir admin files",
			opts: GlobalOptions{Server: DefaultServer, DataDir: full},
			want: Credentials{Server: DefaultServer, CACert: adm(full, "ca.crt"), Cert: adm(full, "admin.crt"), Key: adm(full, "admin.key")},
		},
		{
			name: "env server and data dir",
			opts: GlobalOptions{Server: DefaultServer, DataDir: DefaultDataDir},
			env:  map[string]string{"WARDEN_SERVER": "w1:7443", "WARDEN_DATA_DIR": full},
			want: Credentials{Server: "w1:7443", CACert: adm(full, "ca.crt"), Cert: adm(full, "admin.crt"), Key: adm(full, "admin.key")},
		},
		{
			name:    "flag wins over env",
			opts:    GlobalOptions{Server: "flag:1", DataDir: full},
			changed: []string{"server"},
			env:     map[string]string{"WARDEN_SERVER": "env:1"},
			want:    Credentials{Server: "flag:1", CACert: adm(full, "ca.crt"), Cert: adm(full, "admin.crt"), Key: adm(full, "admin.key")},
		},
		{
			name: "token from env replaces the admin certificate",
			opts: GlobalOptions{Server: DefaultServer, DataDir: full},
			env:  map[string]string{"WARDEN_TOKEN": " tok123\n"},
			want: Credentials{Server: DefaultServer, CACert: adm(full, "ca.crt"), Token: "tok123"},
		},
		{
			name:    "explicit files override the data dir",
			opts:    GlobalOptions{Server: DefaultServer, DataDir: full, CACert: "/etc/w/ca.pem", Cert: "/etc/w/me.crt", Key: "/etc/w/me.key"},
			changed: []string{"cacert", "cert", "key"},
			want:    Credentials{Server: DefaultServer, CACert: "/etc/w/ca.pem", Cert: "/etc/w/me.crt", Key: "/etc/w/me.key"},
		},
		{
			name: "cert files from env",
			opts: GlobalOptions{Server: DefaultServer, DataDir: empty},
			env:  map[string]string{"WARDEN_CACERT": "/c/ca", "WARDEN_CERT": "/c/crt", "WARDEN_KEY": "/c/key"},
			want: Credentials{Server: DefaultServer, CACert: "/c/ca", Cert: "/c/crt", Key: "/c/key"},
		},
		{
			name: "no client credentials: anonymous (login works)",
			opts: GlobalOptions{Server: DefaultServer, DataDir: caOnly},
			want: Credentials{Server: DefaultServer, CACert: adm(caOnly, "ca.crt")},
		},
		{
			name:    "no CA anywhere",
			opts:    GlobalOptions{Server: DefaultServer, DataDir: empty},
			wantErr: "no CA certificate to verify wardend",
		},
		{
			name:    "cert without key",
			opts:    GlobalOptions{Server: DefaultServer, DataDir: full, Cert: "/x.crt"},
			changed: []string{"cert"},
			wantErr: "--cert and --key must be given together",
		},
		{
			name:    "cert and token",
			opts:    GlobalOptions{Server: DefaultServer, DataDir: full, Cert: "/x.crt", Key: "/x.key", Token: "t"},
			changed: []string{"cert", "key", "token"},
			wantErr: "--cert and --token are exclusive",
		},
		{
			name:    "half of the admin pair",
			opts:    GlobalOptions{Server: DefaultServer, DataDir: halfCert},
			wantErr: "incomplete admin credentials",
		},
		{
			name:    "empty server",
			opts:    GlobalOptions{Server: "", DataDir: full},
			changed: []string{"server"},
			wantErr: "--server is empty",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			changed := map[string]bool{}
			for _, c := range tc.changed {
				changed[c] = true
			}
			got, err := Resolve(tc.opts, func(f string) bool { return changed[f] }, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// The root command's flags feed Resolve: an unchanged flag gives way to the environment.
func TestRootFlagsAndEnv(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, filepath.Join(dir, "admin"), "ca.crt", "admin.crt", "admin.key")
	cases := []struct {
		name       string
		args       []string
		env        map[string]string
		wantServer string
		wantToken  string
	}{
		{"defaults", nil, nil, DefaultServer, ""},
		{"env", nil, map[string]string{"WARDEN_SERVER": "env:7443", "WARDEN_TOKEN": "t1"}, "env:7443", "t1"},
		{"flags", []string{"--server", "flag:7443", "--token", "t2"}, map[string]string{"WARDEN_SERVER": "env:7443", "WARDEN_TOKEN": "t1"}, "flag:7443", "t2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &App{LookupEnv: func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }}
			root := a.Root()
			args := append([]string{"--data-dir", dir}, tc.args...)
			if err := root.ParseFlags(args); err != nil {
				t.Fatal(err)
			}
			if _, err := a.dial(); err == nil || !strings.Contains(err.Error(), "PEM") {
				// The placeholder CA is not PEM: resolution succeeded and loading failed, as expected.
				t.Fatalf("dial: %v", err)
			}
			if a.creds.Server != tc.wantServer || a.creds.Token != tc.wantToken {
				t.Errorf("server %q token %q, want %q %q", a.creds.Server, a.creds.Token, tc.wantServer, tc.wantToken)
			}
		})
	}
}

func TestOutputFlagValidated(t *testing.T) {
	var out, errOut strings.Builder
	code := Main(t.Context(), []string{"-o", "xml", "whoami"}, strings.NewReader(""), &out, &errOut, func(string) (string, bool) { return "", false })
	if code != 1 || !strings.Contains(errOut.String(), `-o "xml": want table, json or yaml`) {
		t.Fatalf("code %d, stderr %q", code, errOut.String())
	}
}
