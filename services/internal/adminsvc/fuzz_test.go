package adminsvc

import (
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// FuzzAsSealed checks that scanning arbitrary stored values for sealed data never panics and only
// reports values whose key id parses.
func FuzzAsSealed(f *testing.F) {
	for _, s := range []string{`{"sealed_key":"oQNrZWs="}`, `{"sealed_key":1}`, "\xa1\x03kek", `{"a":"b"}`, ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, val []byte) {
		v, ok := asSealed(&mvccpb.KeyValue{Key: []byte("/warden/x"), Value: val})
		if ok && v.kekID == "" {
			t.Fatalf("sealed value without a key id: %q", val)
		}
	})
}
