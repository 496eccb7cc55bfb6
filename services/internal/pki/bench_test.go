package pki

import (
	"testing"
	"time"

	"github.com/warden-sec/warden/services/internal/identity"
)

// BenchmarkIssueP256 measures the raw signing rate of one CA shared by all
// goroutines, as the server uses it.
func BenchmarkIssueP256(b *testing.B) {
	ca := newTestCA(b)
	pub := testKey(b, KeyECDSAP256).Public()
	tpl := Template{
		ID:       identity.NodeID(testTD, identity.RoleWebapp, "web-01"),
		DNSNames: []string{"web-01.prod.example"},
		Lifetime: 24 * time.Hour,
		Server:   true,
		Client:   true,
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := ca.Issue(tpl, pub, testNow); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkParseCSR(b *testing.B) {
	csr, err := CreateCSR(testKey(b, KeyECDSAP256), identity.NodeID(testTD, identity.RoleCoreapp, "core-1"))
	if err != nil {
		b.Fatalf("CreateCSR: %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCSR(csr); err != nil {
			b.Fatal(err)
		}
	}
}
