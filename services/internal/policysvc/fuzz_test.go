package policysvc

import (
	"maps"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
)

// FuzzPolicyDecode feeds arbitrary bytes through everything a stored or submitted document goes
// through: protobuf decoding, validation against a current version, rendering for both roles (with
// and without a node override) and diffing. None of it may panic.
func FuzzPolicyDecode(f *testing.F) {
	for _, d := range []*policyv1.PolicyDocument{{}, defaultDocument(), docWith(nil), fuzzSeed()} {
		b, err := proto.Marshal(d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	cur := docWith(nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		doc := &policyv1.PolicyDocument{}
		if err := proto.Unmarshal(data, doc); err != nil {
			return
		}
		role := func(n string) string {
			if len(n)%2 == 0 {
				return roleWebapp
			}
			return roleCoreapp
		}
		ev := evaluate(doc, cur, role)
		_ = evaluate(cur, doc, nil)
		for _, i := range slices.Concat(ev.errs, ev.allWarnings()) {
			if i.Field == "" {
				t.Fatalf("issue without a field path: %v", i)
			}
		}
		nodes := append([]string{""}, slices.Sorted(maps.Keys(doc.GetNodes()))...)
		for _, r := range []string{roleWebapp, roleCoreapp} {
			for _, n := range nodes[:min(len(nodes), 3)] {
				out, err := render(doc, 1, r, "webapp", n)
				if err != nil {
					t.Fatalf("render %s/%q: %v", r, n, err)
				}
				if _, ok := out.GetEnv()["WA_SECRET"]; ok {
					t.Fatal("rendered WA_SECRET")
				}
			}
		}
		_ = diff(cur, doc)
	})
}

func fuzzSeed() *policyv1.PolicyDocument {
	return docWith(func(d *policyv1.PolicyDocument) {
		settings(d, "roles:webapp").Tls = &policyv1.TLSSettings{Profile: policyv1.TLSProfile_TLS_PROFILE_OLD}
		headers(d, "roles:webapp").Mode = policyv1.HeaderMode_HEADER_MODE_COMPATIBLE
		headers(d, "nodes:web-1").StrictTransportSecurity = proto.String("max-age=5")
		extra(d, "nodes:web-1", "Referrer-Policy", "unsafe-url")
		dbSSL(d, "nodes:web-1").Verify = proto.Bool(false)
		d.Defaults.Network.Zones[0].Cidrs = []string{"::ffff:10.0.0.0/104", "0.0.0.0/0", "bad"}
	})
}
