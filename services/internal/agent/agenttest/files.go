package agenttest

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/warden-sec/warden/services/internal/agent/materialize"
)

// Files hashes every file an agent materialised under dataDir — certs/* (temporary files included, so a
// leftover of a failed write shows up as a difference) and the env file — by path relative to dataDir.
// Tests compare two calls to show that nothing was changed or lost.
func Files(t testing.TB, dataDir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	add := func(path string) {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(raw)
		rel, _ := filepath.Rel(dataDir, path)
		out[rel] = hex.EncodeToString(sum[:])
	}
	err := filepath.WalkDir(filepath.Join(dataDir, "certs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			add(path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	add(filepath.Join(dataDir, materialize.EnvFileName))
	return out
}
