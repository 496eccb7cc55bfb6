package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/warden-sec/warden/services/internal/agent/status"
	"github.com/warden-sec/warden/services/internal/backoff"
)

// errIdle ends a stream that stayed silent for longer than the heartbeats allow.
var errIdle = errors.New("stream idle: no message or heartbeat received")

// snapshot is what every Watch stream sends.
type snapshot interface {
	proto.Message
	GetVersion() int64
	GetHeartbeat() bool
	GetServerTime() *timestamppb.Timestamp
}

// streamSpec describes one Watch stream.
type streamSpec[T snapshot] struct {
	name string
	open func(ctx context.Context, conn *grpc.ClientConn, last int64, opts ...grpc.CallOption) (receiver[T], error)
	// apply writes and publishes a snapshot; on error the previous state stays in place.
	apply func(ctx context.Context, msg T) error
	// ack reports the outcome of apply; nil for streams without acknowledgement.
	ack func(ctx context.Context, msg T, applyErr error) error
	// box receives snapshots; shared when something else (renewal) also feeds the applier.
	box *mailbox[T]
}

// receiver is an open Watch stream.
type receiver[T any] struct {
	recv func() (T, error)
	// ctx is the stream's context, which names the server it reached (peer.FromContext).
	ctx context.Context
}

// server is the address of the control-plane replica the stream is connected to ("" if unknown).
func (r receiver[T]) server() string {
	if p, ok := peer.FromContext(r.ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// recvOf adapts a generated stream to the receiver streamSpec.open returns.
func recvOf[M any](s grpc.ServerStreamingClient[M], err error) (receiver[*M], error) {
	if err != nil {
		return receiver[*M]{}, err
	}
	return receiver[*M]{recv: s.Recv, ctx: s.Context()}, nil
}

// mailbox keeps only the newest value: a slow applier never makes the receiver block, and skipping
// intermediate snapshots is right because each one is a full state.
type mailbox[T any] struct {
	mu     sync.Mutex
	v      T
	has    bool
	signal chan struct{}
}

func newMailbox[T any]() *mailbox[T] { return &mailbox[T]{signal: make(chan struct{}, 1)} }

func (m *mailbox[T]) put(v T) {
	m.mu.Lock()
	m.v, m.has = v, true
	m.mu.Unlock()
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

func (m *mailbox[T]) tryTake() (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.v, m.has
	var zero T
	m.v, m.has = zero, false
	return v, ok
}

// take waits for a value; false when ctx ended.
func (m *mailbox[T]) take(ctx context.Context) (T, bool) {
	for {
		if v, ok := m.tryTake(); ok {
			return v, true
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, false
		case <-m.signal:
		}
	}
}

// runStream holds one stream until ctx is done: subscribe with the last applied version, hand every
// snapshot to the applier, and on failure resubscribe after a full-jitter back-off (at once when the
// connection was replaced).
func runStream[T snapshot](ctx context.Context, a *Agent, spec streamSpec[T]) {
	if spec.box == nil {
		spec.box = newMailbox[T]()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		applyLoop(ctx, a, spec)
	}()
	defer wg.Wait()

	bo := backoff.Default()
	for {
		conn, gen := a.conns.current()
		err := receive(ctx, a, spec, conn, &bo)
		if ctx.Err() != nil {
			return
		}
		a.cfg.Status.Stream(spec.name, func(s *status.Stream) {
			s.Connected = false
			s.Error = describeRPCError(err)
		})
		if _, now := a.conns.current(); now != gen {
			a.log.Debug("resubscribing on the new connection", "stream", spec.name)
			continue
		}
		d := bo.Next()
		a.log.Warn("stream ended; resubscribing", "stream", spec.name, "in", d.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-a.conns.changedSince(gen):
		case <-time.After(d):
		}
	}
}

func receive[T snapshot](ctx context.Context, a *Agent, spec streamSpec[T], conn *grpc.ClientConn, bo *backoff.Backoff) error {
	if conn == nil {
		return errors.New("no connection")
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// WaitForReady: while the control plane is down the call waits for the channel's own reconnection
	// instead of failing at once and spinning.
	r, err := spec.open(sctx, conn, a.version(spec.name), grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	a.cfg.Status.Stream(spec.name, func(s *status.Stream) { s.Connected = true })
	idle := time.AfterFunc(a.cfg.StreamIdle, func() { cancel(errIdle) })
	defer idle.Stop()
	for {
		msg, err := r.recv()
		if err != nil {
			if cause := context.Cause(sctx); errors.Is(cause, errIdle) {
				return cause
			}
			return err
		}
		idle.Reset(a.cfg.StreamIdle)
		now := a.cfg.Now()
		bo.Reset()
		a.contact(r.server())
		a.clock.observeSnapshot(a, msg.GetServerTime(), now)
		a.cfg.Status.Stream(spec.name, func(s *status.Stream) {
			s.Connected = true
			s.LastMessage = now
		})
		if msg.GetHeartbeat() {
			continue
		}
		spec.box.put(msg)
	}
}

// applyLoop applies the newest snapshot and acknowledges it. A failed apply keeps the previous files,
// is acknowledged with its error, and is retried with back-off until it succeeds or a newer snapshot
// replaces it.
func applyLoop[T snapshot](ctx context.Context, a *Agent, spec streamSpec[T]) {
	for {
		msg, ok := spec.box.take(ctx)
		if !ok {
			return
		}
		retry := backoff.Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: 1}
		for {
			err := spec.apply(ctx, msg)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				a.log.Error("applying snapshot failed; previous files kept", "stream", spec.name, "version", msg.GetVersion(), "err", err)
				a.cfg.Status.Stream(spec.name, func(s *status.Stream) { s.Error = fmt.Sprintf("apply version %d: %v", msg.GetVersion(), err) })
			}
			if spec.ack != nil {
				ackUntilDone(ctx, a, spec, msg, err)
			}
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry.Next()):
			case <-spec.box.signal:
			}
			if newer, ok := spec.box.tryTake(); ok {
				msg = newer
			}
		}
	}
}

// ackUntilDone sends the acknowledgement, retrying with back-off while the control plane is
// unreachable: rotations wait for it. It gives up when a newer snapshot arrives (that one will be
// acknowledged instead), leaving the newer snapshot in the mailbox.
func ackUntilDone[T snapshot](ctx context.Context, a *Agent, spec streamSpec[T], msg T, applyErr error) {
	bo := backoff.Default()
	for {
		err := spec.ack(ctx, msg, applyErr)
		if err == nil {
			a.cfg.Status.Stream(spec.name, func(s *status.Stream) { s.AckedVersion = msg.GetVersion() })
			return
		}
		if ctx.Err() != nil {
			return
		}
		d := bo.Next()
		a.log.Warn("acknowledgement failed; retrying", "stream", spec.name, "version", msg.GetVersion(), "in", d.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		case <-spec.box.signal:
			// Put the signal back for the caller's loop, which takes the newer snapshot.
			spec.box.mu.Lock()
			has := spec.box.has
			spec.box.mu.Unlock()
			if has {
				select {
				case spec.box.signal <- struct{}{}:
				default:
				}
				return
			}
		}
	}
}

// describeRPCError turns a stream error into a status line an operator can act on.
func describeRPCError(err error) string {
	if err == nil {
		return ""
	}
	st, ok := grpcstatus.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Sprintf("control plane refuses this node's identity (%s): %s; if the node was decommissioned or its identity revoked, create a join token (CreateJoinToken) and restart the agent with --join-token", st.Code(), st.Message())
	case codes.Unimplemented:
		return "the control plane does not implement this stream yet: " + st.Message()
	case codes.Unavailable:
		return "control plane unreachable: " + st.Message()
	default:
		return fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
}
