package seal

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzOpen checks that Open never panics, fails only with ErrCorrupt or
// ErrUnknownKEK, and opens nothing but untampered output of Seal: the keys are
// fixed (the fuzzing workers rebuild them independently), so an accepted input
// must carry the context and one of the plaintexts sealed below, and must be
// the canonical encoding of its parts, leaving no byte malleable.
func FuzzOpen(f *testing.F) {
	k := mustKeyring(f, testKEK(f, "primary", 1), testKEK(f, "older", 2))
	older := mustKeyring(f, testKEK(f, "older", 2))
	const aad = "/warden/secrets/fuzz"
	plaintexts := []string{"", "x", "a longer secret value that spans blocks"}
	for _, pt := range plaintexts {
		for _, sealer := range []*Keyring{k, older} {
			sealed := mustSeal(f, sealer, []byte(pt), aad)
			f.Add(sealed, aad)
			f.Add(sealed, "/warden/secrets/other")
			f.Add(sealed[:len(sealed)-1], aad)
		}
	}
	f.Add([]byte{formatV1, 1, 'a'}, aad)
	f.Add([]byte{}, "")

	f.Fuzz(func(t *testing.T, data []byte, ctx string) {
		if _, err := KEKID(data); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("KEKID: unexpected error class: %v", err)
		}
		got, err := k.Open(data, ctx)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnknownKEK) {
				t.Fatalf("Open: unexpected error class: %v", err)
			}
			return
		}
		if ctx != aad {
			t.Fatalf("Open accepted context %q; everything was sealed under %q", ctx, aad)
		}
		known := false
		for _, pt := range plaintexts {
			known = known || string(got) == pt
		}
		if !known {
			t.Fatalf("Open produced plaintext %q that was never sealed", got)
		}
		env, err := parse(data)
		if err != nil {
			t.Fatalf("Open accepted bytes that parse rejects: %v", err)
		}
		if !bytes.Equal(env.marshal(), data) {
			t.Fatal("Open accepted a non-canonical encoding")
		}
	})
}
