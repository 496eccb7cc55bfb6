package cliconfig

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

func TestLayers(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("listen: file:1\ndata-dir: /file\nservices: [cert, policy]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name                         string
		args                         []string
		env                          map[string]string
		wantListen, wantDir, wantSvc string
		wantSrc                      Source
	}{
		{"defaults", nil, nil, "def:1", "/def", "a,b", FromDefault},
		{"file", []string{"-config", file}, nil, "file:1", "/file", "cert,policy", FromFile},
		{"config from env", nil, map[string]string{"W_CONFIG": file}, "file:1", "/file", "cert,policy", FromFile},
		{"env over file", []string{"-config", file}, map[string]string{"W_LISTEN": "env:1"}, "env:1", "/file", "cert,policy", FromEnv},
		{"flag over env", []string{"-config", file, "-listen", "flag:1"}, map[string]string{"W_LISTEN": "env:1"}, "flag:1", "/file", "cert,policy", FromFlag},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.String("config", "", "")
			listen := fs.String("listen", "def:1", "")
			dirFlag := fs.String("data-dir", "/def", "")
			svc := List{"a", "b"}
			fs.Var(&svc, "services", "")
			src, err := Load(fs, tc.args, "W", "config", func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if err != nil {
				t.Fatal(err)
			}
			if *listen != tc.wantListen || *dirFlag != tc.wantDir || svc.String() != tc.wantSvc {
				t.Fatalf("got listen=%s dir=%s services=%s, want %s %s %s", *listen, *dirFlag, svc.String(), tc.wantListen, tc.wantDir, tc.wantSvc)
			}
			if src["listen"] != tc.wantSrc {
				t.Fatalf("listen source = %s, want %s", src["listen"], tc.wantSrc)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("lisen: typo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"unknown file key": {"-config", bad},
		"missing file":     {"-config", filepath.Join(dir, "nope.yaml")},
		"stray argument":   {"extra"},
	} {
		t.Run(name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.String("config", "", "")
			fs.String("listen", "", "")
			if _, err := Load(fs, args, "W", "config", func(string) (string, bool) { return "", false }); err == nil {
				t.Fatal("expected an error")
			}
		})
	}
	t.Run("bad env value", func(t *testing.T) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.Int("n", 1, "")
		_, err := Load(fs, nil, "W", "", func(k string) (string, bool) { return "x", k == "W_N" })
		if err == nil {
			t.Fatal("expected an error for W_N=x")
		}
	})
}
