package deploytest

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"

	"sigs.k8s.io/yaml"
)

// repoRoot is the repository root (…/services/internal/deploytest → …).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

func deployPath(t testing.TB, parts ...string) string {
	return filepath.Join(append([]string{repoRoot(t), "deploy"}, parts...)...)
}

func servicesPath(t testing.TB, parts ...string) string {
	return filepath.Join(append([]string{repoRoot(t), "services"}, parts...)...)
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// docSeparator is a YAML document separator line (optionally followed by a comment).
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// yamlDocs splits a multi-document YAML file and decodes every non-empty document.
func yamlDocs(t testing.TB, path string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for i, part := range docSeparator.Split(string(readFile(t, path)), -1) {
		if len(bytes.TrimSpace(stripComments([]byte(part)))) == 0 {
			continue
		}
		var doc map[string]any
		if err := yaml.UnmarshalStrict([]byte(part), &doc); err != nil {
			t.Fatalf("%s: document %d: %v", filepath.Base(path), i, err)
		}
		out = append(out, doc)
	}
	return out
}

var commentLine = regexp.MustCompile(`(?m)^[ \t]*#.*$`)

func stripComments(b []byte) []byte { return commentLine.ReplaceAll(b, nil) }

func yamlFile(t testing.TB, path string) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := yaml.UnmarshalStrict(readFile(t, path), &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

// Accessors for decoded YAML. A missing or mistyped element yields the zero value, and the assertions
// that use it then fail with a message naming what was expected.

func m(v any) map[string]any { r, _ := v.(map[string]any); return r }

func s(v any) string { r, _ := v.(string); return r }

func l(v any) []any { r, _ := v.([]any); return r }

// get walks a path of map keys.
func get(v any, keys ...string) any {
	for _, k := range keys {
		v = m(v)[k]
	}
	return v
}

func strs(v any) []string {
	var out []string
	for _, e := range l(v) {
		out = append(out, s(e))
	}
	return out
}

// etcdVersion is the etcd server release wardend embeds, from services/go.mod, so that the etcd images
// in deploy/ run the same version.
func etcdVersion(t testing.TB) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^\s*go\.etcd\.io/etcd/server/v3 (v[0-9][^\s]*)`)
	sm := re.FindSubmatch(readFile(t, servicesPath(t, "go.mod")))
	if sm == nil {
		t.Fatal("services/go.mod does not require go.etcd.io/etcd/server/v3")
	}
	return string(sm[1])
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
