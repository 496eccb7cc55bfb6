package adminsvc

import (
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/warden-sec/warden/services/internal/audit"
)

// FuzzPageToken feeds client page tokens through the decoding both list RPCs use: anything accepted
// must round-trip and name a key of the expected shape.
func FuzzPageToken(f *testing.F) {
	for _, s := range []string{encodePageToken("alice"), encodePageToken("00000000001700000000-0a1b2c3d"), "", "!!", "YWxpY2U="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		v, err := decodePageToken(tok)
		if err != nil {
			return
		}
		if encodePageToken(v) != tok {
			t.Fatalf("token %q decodes to %q, which encodes differently", tok, v)
		}
		if audit.ValidID(v) && len(v) != 29 {
			t.Fatalf("ValidID accepted %q", v)
		}
		if usernameRE.MatchString(v) && (len(v) > 63 || v == "") {
			t.Fatalf("username pattern accepted %q", v)
		}
	})
}

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
