package seal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKEK(t testing.TB, id string, fill byte) KEK {
	t.Helper()
	k := KEK{ID: id}
	for i := range k.Key {
		k.Key[i] = fill + byte(i)
	}
	return k
}

func mustKeyring(t testing.TB, primary KEK, others ...KEK) *Keyring {
	t.Helper()
	k, err := NewKeyring(primary, others...)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return k
}

func mustSeal(t testing.TB, k *Keyring, plaintext []byte, aad string) []byte {
	t.Helper()
	sealed, err := k.Seal(plaintext, aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return sealed
}

func TestRoundTrip(t *testing.T) {
	k := mustKeyring(t, testKEK(t, "a", 1))
	for _, tc := range []struct {
		name      string
		plaintext []byte
		aad       string
	}{
		{"empty value", nil, "/warden/secret/x"},
		{"short value", []byte("hunter2"), "/warden/secret/x"},
		{"empty aad", []byte("value"), ""},
		{"large value", bytes.Repeat([]byte("0123456789"), 100_000), "/k"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sealed := mustSeal(t, k, tc.plaintext, tc.aad)
			got, err := k.Open(sealed, tc.aad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tc.plaintext) {
				t.Fatalf("Open returned %d bytes, want the %d sealed", len(got), len(tc.plaintext))
			}
			id, err := KEKID(sealed)
			if err != nil || id != "a" {
				t.Fatalf("KEKID = %q, %v; want \"a\", nil", id, err)
			}
		})
	}
}

func TestSealIsRandomised(t *testing.T) {
	k := mustKeyring(t, testKEK(t, "a", 1))
	a := mustSeal(t, k, []byte("same"), "ctx")
	b := mustSeal(t, k, []byte("same"), "ctx")
	if bytes.Equal(a, b) {
		t.Fatal("sealing the same value twice gave identical bytes; DEK or nonce is not fresh")
	}
}

func TestPlaintextAbsentFromSealed(t *testing.T) {
	k := mustKeyring(t, testKEK(t, "a", 1))
	secret := []byte("correct-horse-battery-staple-0123456789")
	sealed := mustSeal(t, k, secret, "ctx")
	for n := 6; n <= len(secret); n++ {
		for i := 0; i+n <= len(secret); i++ {
			if bytes.Contains(sealed, secret[i:i+n]) {
				t.Fatalf("sealed bytes contain plaintext fragment %q", secret[i:i+n])
			}
		}
	}
	if kek := testKEK(t, "a", 1); bytes.Contains(sealed, kek.Key[:8]) {
		t.Fatal("sealed bytes contain KEK material")
	}
}

func TestWrongAAD(t *testing.T) {
	k := mustKeyring(t, testKEK(t, "a", 1))
	sealed := mustSeal(t, k, []byte("value"), "/warden/secret/a")
	for _, aad := range []string{"/warden/secret/b", "", "/warden/secret/a ", "/warden/secret/"} {
		if _, err := k.Open(sealed, aad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Open with aad %q: err = %v, want ErrCorrupt", aad, err)
		}
	}
}

func TestTamperingEachRegion(t *testing.T) {
	k := mustKeyring(t, testKEK(t, "kek-1", 1), testKEK(t, "kek-2", 2))
	sealed := mustSeal(t, k, []byte("some secret value"), "ctx")
	idEnd := 2 + len("kek-1")
	regions := []struct {
		name       string
		start, end int
	}{
		{"format byte", 0, 1},
		{"id length", 1, 2},
		{"kek id", 2, idEnd},
		{"wrapped DEK", idEnd, idEnd + wrappedDEKSize},
		{"value nonce", idEnd + wrappedDEKSize, idEnd + wrappedDEKSize + nonceSize},
		{"ciphertext and tag", idEnd + wrappedDEKSize + nonceSize, len(sealed)},
	}
	for _, r := range regions {
		t.Run(r.name, func(t *testing.T) {
			for i := r.start; i < r.end; i++ {
				for _, mask := range []byte{0x01, 0x80, 0xff} {
					bad := bytes.Clone(sealed)
					bad[i] ^= mask
					if got, err := k.Open(bad, "ctx"); err == nil {
						t.Fatalf("byte %d ^ %#x opened to %q", i, mask, got)
					} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnknownKEK) {
						t.Fatalf("byte %d ^ %#x: err = %v, want ErrCorrupt or ErrUnknownKEK", i, mask, err)
					}
				}
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		for n := range len(sealed) {
			if _, err := k.Open(sealed[:n], "ctx"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("truncated to %d bytes: err = %v, want ErrCorrupt", n, err)
			}
		}
	})
	t.Run("extended", func(t *testing.T) {
		if _, err := k.Open(append(bytes.Clone(sealed), 0), "ctx"); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("trailing byte: err = %v, want ErrCorrupt", err)
		}
	})
	t.Run("kek id swapped for another held KEK", func(t *testing.T) {
		bad := bytes.Clone(sealed)
		copy(bad[2:idEnd], "kek-2")
		if _, err := k.Open(bad, "ctx"); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v, want ErrCorrupt", err)
		}
	})
}

func TestUnknownKEK(t *testing.T) {
	sealer := mustKeyring(t, testKEK(t, "old", 1))
	sealed := mustSeal(t, sealer, []byte("value"), "ctx")
	opener := mustKeyring(t, testKEK(t, "new", 2))
	if _, err := opener.Open(sealed, "ctx"); !errors.Is(err, ErrUnknownKEK) {
		t.Fatalf("err = %v, want ErrUnknownKEK", err)
	}
	// Same id, different key material: must not be mistaken for "unknown".
	impostor := mustKeyring(t, testKEK(t, "old", 3))
	if _, err := impostor.Open(sealed, "ctx"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("same id, other key: err = %v, want ErrCorrupt", err)
	}
}

func TestRewrap(t *testing.T) {
	oldKEK, newKEK := testKEK(t, "kek-2024", 1), testKEK(t, "kek-2025", 2)
	before := mustKeyring(t, oldKEK)
	sealed := mustSeal(t, before, []byte("database password"), "/warden/secrets/db")

	during := mustKeyring(t, newKEK, oldKEK)
	out, changed, err := during.Rewrap(sealed, "/warden/secrets/db")
	if err != nil || !changed {
		t.Fatalf("Rewrap = changed %v, err %v; want changed, nil", changed, err)
	}
	if id, _ := KEKID(out); id != "kek-2025" {
		t.Fatalf("rewrapped KEK id = %q, want kek-2025", id)
	}
	oldEnv, _ := parse(sealed)
	newEnv, _ := parse(out)
	if !bytes.Equal(oldEnv.nonce, newEnv.nonce) || !bytes.Equal(oldEnv.ciphertext, newEnv.ciphertext) {
		t.Fatal("Rewrap changed the value ciphertext; only the wrapped DEK may change")
	}

	again, changed, err := during.Rewrap(out, "/warden/secrets/db")
	if err != nil || changed || !bytes.Equal(again, out) {
		t.Fatalf("second Rewrap = changed %v, err %v; want the input unchanged", changed, err)
	}

	after := mustKeyring(t, newKEK)
	got, err := after.Open(out, "/warden/secrets/db")
	if err != nil || string(got) != "database password" {
		t.Fatalf("Open after removing old KEK = %q, %v", got, err)
	}
	if _, err := after.Open(sealed, "/warden/secrets/db"); !errors.Is(err, ErrUnknownKEK) {
		t.Fatalf("opening the un-rewrapped original without the old KEK: err = %v, want ErrUnknownKEK", err)
	}
}

func TestRewrapRejectsBadInput(t *testing.T) {
	oldKEK, newKEK := testKEK(t, "old", 1), testKEK(t, "new", 2)
	sealed := mustSeal(t, mustKeyring(t, oldKEK), []byte("v"), "ctx")
	k := mustKeyring(t, newKEK, oldKEK)

	if _, _, err := k.Rewrap(sealed, "other"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong aad: err = %v, want ErrCorrupt", err)
	}
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, _, err := k.Rewrap(bad, "ctx"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("tampered ciphertext: err = %v, want ErrCorrupt", err)
	}
	if _, _, err := mustKeyring(t, newKEK).Rewrap(sealed, "ctx"); !errors.Is(err, ErrUnknownKEK) {
		t.Errorf("old KEK missing: err = %v, want ErrUnknownKEK", err)
	}
}

func TestNewKeyringValidation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		primary KEK
		others  []KEK
	}{
		{"empty id", testKEK(t, "", 1), nil},
		{"id with colon", testKEK(t, "a:b", 1), nil},
		{"id too long", testKEK(t, strings.Repeat("a", 65), 1), nil},
		{"duplicate id", testKEK(t, "a", 1), []KEK{testKEK(t, "a", 2)}},
		{"zero key", KEK{ID: "z"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewKeyring(tc.primary, tc.others...); err == nil {
				t.Fatal("NewKeyring accepted an invalid keyring")
			}
		})
	}
}

func writeKeyringFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyring")
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode is filtered by the umask; set it exactly.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func b64Key(fill byte) string {
	var k [32]byte
	for i := range k {
		k[i] = fill + byte(i)
	}
	return base64.StdEncoding.EncodeToString(k[:])
}

func TestLoadKeyringFile(t *testing.T) {
	content := "# rotated 2025-01\n\nkek-2:" + b64Key(2) + "\n  kek-1 : " + b64Key(1) + "  \n"
	path := writeKeyringFile(t, content, 0o600)
	k, err := LoadKeyringFile(path)
	if err != nil {
		t.Fatalf("LoadKeyringFile: %v", err)
	}
	if k.PrimaryID() != "kek-2" {
		t.Fatalf("PrimaryID = %q, want kek-2 (first line)", k.PrimaryID())
	}
	old := mustSeal(t, mustKeyring(t, testKEK(t, "kek-1", 1)), []byte("v"), "ctx")
	if got, err := k.Open(old, "ctx"); err != nil || string(got) != "v" {
		t.Fatalf("opening a value sealed under the second key = %q, %v", got, err)
	}
}

func TestLoadKeyringFileRejects(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		wantErr       string
	}{
		{"group readable", "a:" + b64Key(1) + "\n", 0o640, "must not be accessible to group or others"},
		{"world readable", "a:" + b64Key(1) + "\n", 0o604, "must not be accessible to group or others"},
		{"group writable only", "a:" + b64Key(1) + "\n", 0o620, "must not be accessible to group or others"},
		{"empty", "# nothing\n", 0o600, "no keys"},
		{"missing colon", "a" + b64Key(1) + "\n", 0o600, "line 1"},
		{"short key", "a:" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n", 0o600, "31 bytes"},
		{"long key", "a:" + base64.StdEncoding.EncodeToString(make([]byte, 33)) + "\n", 0o600, "33 bytes"},
		{"bad base64", "a:not*base64\n", 0o600, "not valid standard base64"},
		{"bad id", "a b:" + b64Key(1) + "\n", 0o600, "line 1"},
		{"duplicate id", "a:" + b64Key(1) + "\na:" + b64Key(2) + "\n", 0o600, "duplicate"},
		{"overlong line", strings.Repeat("x", 4096), 0o600, "read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeKeyringFile(t, tc.content, tc.mode)
			_, err := LoadKeyringFile(path)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), b64Key(1)) {
				t.Fatal("error message leaks key material")
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		if _, err := LoadKeyringFile(filepath.Join(t.TempDir(), "absent")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err = %v, want os.ErrNotExist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKeyringFile(dir); err == nil {
			t.Fatal("loaded a directory as a keyring")
		}
	})
}

func TestGenerateKeyringFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring")
	k, err := GenerateKeyringFile(path)
	if err != nil {
		t.Fatalf("GenerateKeyringFile: %v", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Fatalf("mode = %04o, want 0600", perm)
	}
	loaded, err := LoadKeyringFile(path)
	if err != nil {
		t.Fatalf("loading the generated file: %v", err)
	}
	if loaded.PrimaryID() != k.PrimaryID() {
		t.Fatalf("loaded primary %q, generated %q", loaded.PrimaryID(), k.PrimaryID())
	}
	sealed := mustSeal(t, k, []byte("v"), "ctx")
	if _, err := loaded.Open(sealed, "ctx"); err != nil {
		t.Fatalf("loaded keyring cannot open what the generated one sealed: %v", err)
	}

	before, _ := os.ReadFile(path)
	if _, err := GenerateKeyringFile(path); !errors.Is(err, os.ErrExist) {
		t.Fatalf("second GenerateKeyringFile: err = %v, want os.ErrExist", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("refused overwrite still changed the file")
	}
}

func TestKEKIDMalformed(t *testing.T) {
	for _, in := range [][]byte{nil, {formatV1}, {0x00, 1, 'a'}, {formatV1, 0}} {
		if _, err := KEKID(in); !errors.Is(err, ErrCorrupt) {
			t.Errorf("KEKID(%x): err = %v, want ErrCorrupt", in, err)
		}
	}
}
