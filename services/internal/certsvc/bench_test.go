package certsvc

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/store"
)

// benchNodes is more than the parallel goroutines, so each goroutine has a node of its own.
const benchNodes = 64

// BenchmarkIssueStored measures the issuance path of the service: CSR parsed, certificate signed and
// stored with its audit event in one etcd transaction. Compare with BenchmarkIssueRaw, the signing
// alone, to see what recording costs.
func BenchmarkIssueStored(b *testing.B) {
	e := start(b)
	ctx := authn.WithCaller(context.Background(), authn.Caller{Role: authn.RoleAdmin, Method: authn.MethodMTLS, Name: "bench", ID: identity.AdminID(testTD, "bench")})
	for i := range benchNodes {
		e.createNode(fmt.Sprintf("bench-%d", i), certv1.NodeRole_NODE_ROLE_COREAPP, "core.example.com")
	}
	// A fresh key for every request, as agents renew: a key seen before is found in the by-key index,
	// which sends the request to etcd for its inputs (the idempotent path) instead of the mirror.
	csrs := make([]string, b.N)
	for i := range csrs {
		_, csrs[i] = newCSR(b, pki.DefaultKeyType, "x")
	}
	var next, seq atomic.Int64
	// Many requests in flight, as from many agents: etcd commits concurrent writes together.
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(1)-1) % benchNodes
		req := &certv1.IssueCertificateRequest{NodeId: fmt.Sprintf("bench-%d", i), Kind: certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION}
		for pb.Next() {
			req.CsrPem = csrs[next.Add(1)-1]
			if _, err := e.svc.IssueCertificate(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkIssueRaw signs the same certificate with pki alone: no parsing, no etcd.
func BenchmarkIssueRaw(b *testing.B) {
	ca, err := pki.NewRootCA(testTD, time.Hour*24*365, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		b.Fatal(err)
	}
	tpl := pki.Template{ID: identity.NodeID(testTD, identity.RoleCoreapp, "bench-0"), DNSNames: []string{"core.example.com"}, Lifetime: DefaultServerLifetime, Server: true}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := ca.Issue(tpl, key.Public(), time.Now()); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkTidy measures how fast the elected replica prunes the records of long-expired certificates
// (record, node index entry, audit event per batch): the rate at which a backlog drains.
func BenchmarkTidy(b *testing.B) {
	e := start(b)
	ctx := context.Background()
	expired := e.clock.Now().Add(-DefaultRetention - 24*time.Hour)
	var rev int64
	for i := 0; i < b.N; {
		var ops []store.Op
		for ; i < b.N && len(ops) < 100; i++ {
			rec := certRecord{Serial: fmt.Sprintf("%032x", i), NodeID: fmt.Sprintf("gone-%d", i%100), Kind: kindIdentity,
				NotBefore: expired.Add(-24 * time.Hour), NotAfter: expired, PEM: "-"}
			ops = append(ops, store.PutOp(keyCert(rec.Serial), encode(rec)), store.PutOp(keyNodeCert(rec.NodeID, rec.Serial), []byte{}))
		}
		var err error
		if rev, err = e.st.Txn(ctx, nil, ops); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.view.Mirror().WaitRevision(ctx, rev); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	pruned := 0
	for more := true; more; {
		n, m, err := e.svc.tidy(ctx, e.clock.Now())
		if err != nil {
			b.Fatal(err)
		}
		pruned, more = pruned+n, m
	}
	b.StopTimer()
	if pruned != b.N {
		b.Fatalf("pruned %d of %d", pruned, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}
