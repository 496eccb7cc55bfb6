package envelope

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fuzzKeys is fixed so the committed corpus in testdata/fuzz/FuzzOpen, whose
// "valid-" entries were sealed under these secrets at t0, keeps opening.
func fuzzKeys(t testing.TB) *KeySet {
	return mustKeySet(t,
		Key{Version: 1, Secret: secret(1), State: Retiring},
		Key{Version: 2, Secret: secret(2), State: Active},
		Key{Version: 3, Secret: secret(3), State: Staged},
	)
}

// FuzzOpen checks that Open never panics, fails only with the package's
// sentinel errors, and accepts only the canonical encoding of what it
// authenticated: re-sealing the opened payload with the same header must
// reproduce the input byte for byte, so nothing in it is malleable.
func FuzzOpen(f *testing.F) {
	ks := fuzzKeys(f)
	for _, payload := range []string{"", "x", "a payload long enough to span more than one ChaCha20 block of sixty-four bytes"} {
		msg := mustSealAt(f, ks, []byte(payload), t0)
		f.Add(msg)
		f.Add(msg[:len(msg)-1])
	}
	f.Add([]byte{})
	f.Add(make([]byte, Overhead))

	known := []error{ErrMalformed, ErrTooLarge, ErrUnknownKey, ErrExpired, ErrFuture, ErrTampered}
	f.Fuzz(func(t *testing.T, msg []byte) {
		o := mustOpener(t, ks, WithClock(newFakeClock(t0).Now))
		payload, hdr, err := o.Open(msg)
		if err != nil {
			for _, k := range known {
				if errors.Is(err, k) {
					return
				}
			}
			t.Fatalf("Open failed with an unexpected error: %v", err)
		}
		vk, ok := ks.lookup(hdr.KeyVersion)
		if !ok {
			t.Fatalf("Open accepted unknown version %d", hdr.KeyVersion)
		}
		if again := sealWith(vk, hdr, payload); !bytes.Equal(again, msg) {
			t.Fatalf("Open accepted a non-canonical message:\n got %x\nwant %x", msg, again)
		}
		if _, _, err := o.Open(msg); !errors.Is(err, ErrReplayed) {
			t.Fatalf("second Open of the same bytes: err = %v, want ErrReplayed", err)
		}
	})
}

// TestFuzzCorpusStillValid guards the committed corpus: if the key schedule,
// fuzzKeys or t0 changes, the "valid-" seeds stop opening and the fuzzer loses
// its only way past the AEAD check, so fail loudly instead.
func TestFuzzCorpusStillValid(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzOpen", "valid-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no valid-* seeds in testdata/fuzz/FuzzOpen")
	}
	ks := fuzzKeys(t)
	for _, path := range paths {
		msg := readCorpusBytes(t, path)
		o := mustOpener(t, ks, WithClock(newFakeClock(t0).Now))
		if _, _, err := o.Open(msg); err != nil {
			t.Errorf("%s no longer opens: %v", path, err)
		}
	}
}

// readCorpusBytes reads a single-[]byte corpus file in the "go test fuzz v1" format.
func readCorpusBytes(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	header, body, ok := strings.Cut(string(raw), "\n")
	body = strings.TrimSpace(body)
	if !ok || header != "go test fuzz v1" || !strings.HasPrefix(body, "[]byte(") || !strings.HasSuffix(body, ")") {
		t.Fatalf("%s: not a single-[]byte corpus file", path)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(body, "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(s)
}
