package status

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestTrackerWriteReadRender(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tr := NewTracker(dir, Status{Role: "webapp", NodeID: "web-1", PID: 42, Servers: []string{"a:1", "b:2"}, StartedAt: start})
	tr.now = func() time.Time { return start.Add(time.Minute) }
	tr.Stream(StreamCredentials, func(s *Stream) { s.Connected, s.Version, s.AckedVersion, s.AppliedAt = true, 17, 17, start })
	tr.Stream(StreamPolicy, func(s *Stream) { s.Error = "control plane unreachable: connection refused" })
	tr.Update(func(s *Status) {
		s.TrustDomain = "warden.local"
		s.LastContact = start.Add(30 * time.Second)
		s.Server = "a:1"
		s.Skew = 1500 * time.Millisecond
		s.Certs = []Cert{{Kind: "identity", Serial: "abc", NotAfter: start.Add(24 * time.Hour), RenewAt: start.Add(16 * time.Hour)}}
		s.Secrets = []Secret{{Name: "wa-secret", Versions: []SecretVersion{{Number: 2, State: "active"}, {Number: 3, State: "staged"}}}}
		s.Mesh = &Mesh{ControlAddress: "10.0.0.1:6252", Peers: []Peer{{NodeID: "core-2", Address: "10.0.0.2:6252", Error: "refused"}}}
	})
	tr.SetWarning("zones", "no zones")
	tr.SetError("identity", "expired")
	tr.SetError("identity", "expired again")
	if err := tr.Write(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("status file mode %o", fi.Mode().Perm())
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeID != "web-1" || got.Streams[StreamCredentials].Version != 17 || len(got.Errors) != 1 || got.Errors[0] != "identity: expired again" {
		t.Fatalf("read back %+v", got)
	}
	var buf bytes.Buffer
	if err := Render(&buf, got, start.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"web-1 (webapp)", "last contact 1m30s ago", "stream credentials:", "version 17", "acked 17",
		"control plane unreachable", "cert identity:", "serial abc", "secret wa-secret:", "v2 active, v3 staged",
		"peer core-2:", "UNREACHABLE: refused", "WARNING:", "zones: no zones", "ERROR:", "clock skew:", "1.5s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rendering lacks %q:\n%s", want, out)
		}
	}
}

func TestTrackerRunWritesOnChange(t *testing.T) {
	dir := t.TempDir()
	tr := NewTracker(dir, Status{NodeID: "n"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx, time.Hour) }()
	tr.Update(func(s *Status) { s.PolicyNumber = 9 })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s, err := Read(dir); err == nil && s.PolicyNumber == 9 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("status not written after a change")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
