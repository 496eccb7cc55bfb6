// Package audit records who did what to the control plane. Every mutation adds its event to the same
// etcd transaction as the change (Op), so a change without its audit record cannot exist; refusals are
// recorded on their own (Record, RecordDenied). Events never carry secret values.
package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/store"
)

// Prefix is the audit log's namespace in etcd.
const Prefix = "/warden/audit/"

// Outcome of an audited action.
type Outcome = adminv1.Outcome

// Outcomes.
const (
	Success = adminv1.Outcome_OUTCOME_SUCCESS
	Denied  = adminv1.Outcome_OUTCOME_DENIED
	Failed  = adminv1.Outcome_OUTCOME_FAILED
)

// Event is one audited action.
type Event struct {
	Target  string
	Outcome Outcome
	Reason  string
	Details map[string]string
}

// Log writes and reads the audit log.
type Log struct {
	st  *store.Store
	log *slog.Logger
	now func() time.Time

	// Refusals are sampled: a flood of bad calls must not turn into a flood of etcd writes.
	mu         sync.Mutex
	window     time.Time
	inWindow   int
	suppressed int
}

// maxDeniedPerSecond bounds refusal records; the rest are counted into the next record.
const maxDeniedPerSecond = 50

// New returns the audit log on c.
func New(c *store.Client, log *slog.Logger) *Log {
	return &Log{st: c.Namespace(Prefix), log: log, now: time.Now}
}

// Store is the audit namespace, for transactions that span it.
func (l *Log) Store() *store.Store { return l.st }

// Op returns the put of ev, attributed to the caller in ctx, for the caller's own transaction.
func (l *Log) Op(ctx context.Context, ev Event) store.Op {
	id, val := l.encode(ctx, ev)
	return store.PutOp(id, val).In(l.st)
}

// Record writes ev on its own (refusals, failures, reveals).
func (l *Log) Record(ctx context.Context, ev Event) {
	id, val := l.encode(ctx, ev)
	if _, err := l.st.Put(context.WithoutCancel(ctx), id, val, store.Any()); err != nil {
		l.log.ErrorContext(ctx, "audit record lost", "err", err, "target", ev.Target, "outcome", ev.Outcome.String())
	}
}

// RecordDenied records a refused call; it implements grpcserver.DenialRecorder.
func (l *Log) RecordDenied(ctx context.Context, c authn.Caller, method string, reason error) {
	l.mu.Lock()
	now := l.now()
	if now.Sub(l.window) >= time.Second {
		l.window, l.inWindow = now, 0
	}
	l.inWindow++
	if l.inWindow > maxDeniedPerSecond {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	ev := Event{Outcome: Denied, Reason: reason.Error()}
	if suppressed > 0 {
		ev.Details = map[string]string{"suppressed_before": fmt.Sprint(suppressed)}
	}
	ctx = authn.WithCaller(ctx, c)
	id, val := l.encodeMethod(ctx, method, ev)
	if _, err := l.st.Put(context.WithoutCancel(ctx), id, val, store.Any()); err != nil {
		l.log.ErrorContext(ctx, "audit record lost", "err", err, "method", method)
	}
}

func (l *Log) encode(ctx context.Context, ev Event) (string, []byte) {
	method, _ := grpc.Method(ctx)
	return l.encodeMethod(ctx, method, ev)
}

func (l *Log) encodeMethod(ctx context.Context, method string, ev Event) (string, []byte) {
	c := authn.FromContext(ctx)
	now := l.now()
	id := NewID(now)
	pb := &adminv1.AuditEvent{
		Id:        id,
		Time:      timestamppb.New(now),
		Actor:     c.String(),
		Method:    method,
		Target:    ev.Target,
		Outcome:   ev.Outcome,
		Reason:    ev.Reason,
		RequestId: RequestID(ctx),
		Peer:      c.Peer,
		Details:   ev.Details,
	}
	return id, marshal(pb)
}

// marshal cannot fail once every string is valid UTF-8 (proto3 refuses invalid UTF-8, and targets and
// reasons can echo client input).
func marshal(pb *adminv1.AuditEvent) []byte {
	clean := func(s string) string { return strings.ToValidUTF8(s, "\ufffd") }
	pb.Actor, pb.Target, pb.Reason, pb.RequestId, pb.Peer = clean(pb.Actor), clean(pb.Target), clean(pb.Reason), clean(pb.RequestId), clean(pb.Peer)
	details := make(map[string]string, len(pb.Details))
	for k, v := range pb.Details {
		details[clean(k)] = clean(v)
	}
	pb.Details = details
	val, _ := proto.Marshal(pb)
	return val
}

// NewID is a time-ordered unique id: keys sort by time, so listing newest-first is a reverse scan.
func NewID(t time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%020d-%s", t.UnixNano(), hex.EncodeToString(b[:]))
}

// RequestID is the x-request-id the client sent, if any.
func RequestID(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-request-id"); len(v) > 0 && len(v[0]) <= 128 {
		return v[0]
	}
	return ""
}
