package secretsvc

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
)

// FuzzAckFromProto feeds arbitrary AckSecretsRequest bytes, as an agent could send them, to the
// validation that turns them into the stored record.
func FuzzAckFromProto(f *testing.F) {
	now := time.Unix(1_700_000_000, 0)
	for _, req := range []*secretv1.AckSecretsRequest{
		{NodeId: "web-1", Version: 7, Held: []*secretv1.HeldSecret{{Name: "wa-secret", Numbers: []uint64{3, 2, 2}}}},
		{NodeId: "core-1", Held: []*secretv1.HeldSecret{{Name: "Bad/Name", Numbers: []uint64{0}}}, Error: "apply failed"},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &secretv1.AckSecretsRequest{}
		if proto.Unmarshal(b, req) != nil {
			return
		}
		rec, err := ackFromProto(req, now)
		if err != nil {
			return
		}
		if rec.RTT < 0 || rec.RTT > maxRTT || len(rec.ApplyErr) > maxApplyErrorLen+3 || len(rec.Held) > maxHeldSecrets {
			t.Fatalf("accepted out-of-range ack: %+v", rec)
		}
		for name, nums := range rec.Held {
			for i, n := range nums {
				if n == 0 || (i > 0 && nums[i-1] >= n) {
					t.Fatalf("held %s numbers %v not sorted, distinct and non-zero", name, nums)
				}
			}
		}
		if !rec.SkewAt.IsZero() && rec.Skew != rec.AgentTime.Add(rec.RTT/2).Sub(now) {
			t.Fatalf("skew %v from agent time %v rtt %v", rec.Skew, rec.AgentTime, rec.RTT)
		}
	})
}
