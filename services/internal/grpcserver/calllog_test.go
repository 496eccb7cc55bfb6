package grpcserver

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// records runs one unary call through callLog with a logger at level and returns what it logged.
func records(t *testing.T, level slog.Level, err error) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	l := callLog{log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 4242}})
	info := &grpc.UnaryServerInfo{FullMethod: "/warden.secret.v1.SecretService/AckSecrets"}
	if _, got := l.unary(ctx, nil, info, func(context.Context, any) (any, error) { return nil, err }); got != err {
		t.Fatalf("the handler's error %v came back as %v", err, got)
	}
	var out []map[string]any
	dec := json.NewDecoder(&buf)
	for dec.More() {
		rec := map[string]any{}
		if err := dec.Decode(&rec); err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
	}
	return out
}

func TestCallLogLevels(t *testing.T) {
	for _, tc := range []struct {
		name      string
		level     slog.Level
		err       error
		wantLevel string // "" for nothing logged
		wantCode  string
	}{
		{"ok at info is not logged", slog.LevelInfo, nil, "", ""},
		{"ok at debug", slog.LevelDebug, nil, "DEBUG", "OK"},
		{"not found is quiet", slog.LevelInfo, status.Error(codes.NotFound, "no node"), "", ""},
		{"refusal at info", slog.LevelInfo, status.Error(codes.PermissionDenied, "not yours"), "INFO", "PermissionDenied"},
		{"internal at error", slog.LevelWarn, status.Error(codes.Internal, "boom"), "ERROR", "Internal"},
		{"refusal below a warn level", slog.LevelWarn, status.Error(codes.InvalidArgument, "bad"), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := records(t, tc.level, tc.err)
			if tc.wantLevel == "" {
				if len(got) != 0 {
					t.Fatalf("logged %v, want nothing", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("logged %d records, want 1: %v", len(got), got)
			}
			r := got[0]
			for k, want := range map[string]any{
				"level": tc.wantLevel, "msg": "finished call", "grpc.code": tc.wantCode, "grpc.component": "server",
				"grpc.service": "warden.secret.v1.SecretService", "grpc.method": "AckSecrets", "grpc.method_type": "unary",
				"peer.address": "10.0.0.7:4242",
			} {
				if r[k] != want {
					t.Errorf("%s = %v, want %v", k, r[k], want)
				}
			}
			if _, ok := r["grpc.time_ms"].(float64); !ok {
				t.Errorf("grpc.time_ms = %v, want a number", r["grpc.time_ms"])
			}
			if e, _ := r["grpc.error"].(string); (tc.err != nil) != (e != "") {
				t.Errorf("grpc.error = %q for error %v", e, tc.err)
			}
		})
	}
}

func TestCallLogStreamKinds(t *testing.T) {
	for _, tc := range []struct {
		client, server bool
		want           string
	}{{false, true, "server_stream"}, {true, false, "client_stream"}, {true, true, "bidi_stream"}} {
		var buf bytes.Buffer
		l := callLog{log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		info := &grpc.StreamServerInfo{FullMethod: "/warden.policy.v1.PolicyService/WatchPolicy", IsClientStream: tc.client, IsServerStream: tc.server}
		_ = l.stream(nil, fakeStream{ctx: context.Background()}, info, func(any, grpc.ServerStream) error { return nil })
		rec := map[string]any{}
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["grpc.method_type"] != tc.want {
			t.Errorf("client=%v server=%v: grpc.method_type %v, want %s", tc.client, tc.server, rec["grpc.method_type"], tc.want)
		}
	}
}

// TestCallLogOKCallsDoNotAllocate: what every agent acknowledgement pays at the usual log levels.
func TestCallLogOKCallsDoNotAllocate(t *testing.T) {
	l := callLog{log: slog.New(slog.NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	ctx := context.Background()
	info := &grpc.UnaryServerInfo{FullMethod: "/warden.secret.v1.SecretService/AckSecrets"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	if n := testing.AllocsPerRun(100, func() { _, _ = l.unary(ctx, nil, info, handler) }); n != 0 {
		t.Fatalf("an OK call at info level allocates %v times", n)
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f fakeStream) Context() context.Context { return f.ctx }
