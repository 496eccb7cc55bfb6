package adminsvc_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/adminsvc"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/testutil/etcdtest"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

// rotatedKeyring is the running server's dev keyring with a new primary KEK in front of it.
func rotatedKeyring(t *testing.T, env *wardentest.Env) *seal.Keyring {
	t.Helper()
	old, err := os.ReadFile(filepath.Join(env.DataDir, "seal.key"))
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	_, _ = rand.Read(key[:])
	path := filepath.Join(t.TempDir(), "rotated.key")
	content := "kek-new:" + base64.StdEncoding.EncodeToString(key[:]) + "\n" + string(old)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := seal.LoadKeyringFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRewrapSealed(t *testing.T) {
	t.Parallel()
	env := wardentest.Start(t, wardentest.Options{})
	ctx := t.Context()
	raw := env.Platform.Client.Raw()
	oldRing := env.Platform.Seal
	oldID := oldRing.PrimaryID()

	put := func(key string, val []byte) {
		t.Helper()
		if _, err := raw.Put(ctx, key, string(val)); err != nil {
			t.Fatal(err)
		}
	}
	mustSeal := func(k *seal.Keyring, plain, aad string) []byte {
		t.Helper()
		out, err := k.Seal([]byte(plain), aad)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	const rawKey, jsonKey = "/warden/zz-test/raw", "/warden/zz-test/external"
	put(rawKey, mustSeal(oldRing, "raw secret", rawKey))
	rec, _ := json.Marshal(map[string]any{"node_id": "web-1", "chain_pem": "x", "sealed_key": mustSeal(oldRing, "external key", jsonKey)})
	put(jsonKey, rec)
	put("/warden/zz-test/plain", []byte(`{"not":"sealed"}`))

	newRing := rotatedKeyring(t, env)
	svc, err := adminsvc.New(adminsvc.Config{
		Store: env.Platform.Client.Namespace(adminsvc.Prefix), Client: env.Platform.Client, Certs: env.Platform.Certs,
		Audit: env.Platform.Audit, Seal: newRing, Log: etcdtest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	counts := func() map[string]int64 {
		t.Helper()
		st, err := svc.GetSealStatus(ctx, &adminv1.GetSealStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int64{}
		for _, k := range st.Keys {
			m[k.KekId] = k.Values
			if k.Primary != (k.KekId == "kek-new") {
				t.Fatalf("key %s primary=%v", k.KekId, k.Primary)
			}
		}
		return m
	}
	before := counts()
	// The CA key, the raw value and the JSON-embedded key at least.
	if before[oldID] < 3 || before["kek-new"] != 0 {
		t.Fatalf("before rewrap: %v", before)
	}

	resp, err := svc.RewrapSealed(ctx, &adminv1.RewrapSealedRequest{})
	if err != nil {
		t.Fatalf("RewrapSealed: %v", err)
	}
	if resp.Rewrapped != before[oldID] || resp.Unchanged != 0 {
		t.Fatalf("RewrapSealed = %v, want %d re-wrapped", resp, before[oldID])
	}
	after := counts()
	if _, left := after[oldID]; left || after["kek-new"] != before[oldID] {
		t.Fatalf("after rewrap: %v", after)
	}

	// Every sealed value still opens, under the new key and bound to its key.
	get := func(key string) []byte {
		t.Helper()
		r, err := raw.Get(ctx, key)
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("get %s: %v", key, err)
		}
		return r.Kvs[0].Value
	}
	if plain, err := newRing.Open(get(rawKey), rawKey); err != nil || string(plain) != "raw secret" {
		t.Fatalf("raw value: %q, %v", plain, err)
	}
	var ext struct {
		NodeID    string `json:"node_id"`
		SealedKey []byte `json:"sealed_key"`
	}
	if err := json.Unmarshal(get(jsonKey), &ext); err != nil || ext.NodeID != "web-1" {
		t.Fatalf("external record: %+v, %v", ext, err)
	}
	if id, _ := seal.KEKID(ext.SealedKey); id != "kek-new" {
		t.Fatalf("external key under %q", id)
	}
	if plain, err := newRing.Open(ext.SealedKey, jsonKey); err != nil || string(plain) != "external key" {
		t.Fatalf("external key: %q, %v", plain, err)
	}
	caKeys, err := raw.Get(ctx, "/warden/cert/ca/key/", clientv3.WithPrefix())
	if err != nil || len(caKeys.Kvs) == 0 {
		t.Fatalf("CA keys: %v", err)
	}
	for _, kv := range caKeys.Kvs {
		if _, err := newRing.Open(kv.Value, string(kv.Key)); err != nil {
			t.Fatalf("CA key %s: %v", kv.Key, err)
		}
	}
	if string(get("/warden/zz-test/plain")) != `{"not":"sealed"}` {
		t.Fatal("an unsealed value was touched")
	}

	again, err := svc.RewrapSealed(ctx, &adminv1.RewrapSealedRequest{})
	if err != nil || again.Rewrapped != 0 || again.Unchanged != before[oldID] {
		t.Fatalf("second RewrapSealed = %v, %v", again, err)
	}

	t.Run("unopenable value is reported", func(t *testing.T) {
		var other [32]byte
		_, _ = rand.Read(other[:])
		foreign, err := seal.NewKeyring(seal.KEK{ID: "kek-foreign", Key: other})
		if err != nil {
			t.Fatal(err)
		}
		const key = "/warden/zz-test/foreign"
		put(key, mustSeal(foreign, "x", key))
		_, err = svc.RewrapSealed(ctx, &adminv1.RewrapSealedRequest{})
		// Called directly, so the error is the domain error the interceptor would map.
		var pre *apierr.Precondition
		if !errors.As(err, &pre) {
			t.Fatalf("rewrap with a value of an unknown key: %v, want a failed precondition", err)
		}
		if !strings.Contains(err.Error(), key) {
			t.Fatalf("error %v does not name %s", err, key)
		}
	})
}
