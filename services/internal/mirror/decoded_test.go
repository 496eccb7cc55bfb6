package mirror

import (
	"errors"
	"testing"

	"github.com/warden-sec/warden/services/internal/store"
)

func TestDecodedDecodesEachRevisionOnce(t *testing.T) {
	calls := 0
	d := NewDecoded(func(kv store.KV) (string, error) {
		calls++
		if string(kv.Value) == "bad" {
			return "", errors.New("bad value")
		}
		return "decoded " + string(kv.Value), nil
	})
	for _, tc := range []struct {
		kv        store.KV
		want      string
		wantErr   bool
		wantCalls int
	}{
		{store.KV{Key: "a", Value: []byte("1"), ModRevision: 5}, "decoded 1", false, 1},
		{store.KV{Key: "a", Value: []byte("1"), ModRevision: 5}, "decoded 1", false, 1},
		{store.KV{Key: "a", Value: []byte("2"), ModRevision: 7}, "decoded 2", false, 2},
		{store.KV{Key: "b", Value: []byte("bad"), ModRevision: 7}, "", true, 3},
		{store.KV{Key: "b", Value: []byte("bad"), ModRevision: 7}, "", true, 3},
		// An older revision read from a lagging source is decoded, but does not replace the newer one.
		{store.KV{Key: "a", Value: []byte("1"), ModRevision: 5}, "decoded 1", false, 4},
		{store.KV{Key: "a", Value: []byte("2"), ModRevision: 7}, "decoded 2", false, 4},
	} {
		got, err := d.Decode(tc.kv)
		if got != tc.want || (err != nil) != tc.wantErr || calls != tc.wantCalls {
			t.Fatalf("Decode(%s@%d) = %q, %v after %d calls; want %q, error %v, %d calls",
				tc.kv.Key, tc.kv.ModRevision, got, err, calls, tc.want, tc.wantErr, tc.wantCalls)
		}
	}
}
