package ctl

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestFormatError(t *testing.T) {
	ec := errContext{server: "10.0.0.5:7443", creds: "bearer token", timeout: 30 * time.Second}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"unauthenticated", fmt.Errorf("whoami: %w", status.Error(codes.Unauthenticated, "token expired")),
			"whoami: not authenticated: token expired (using bearer token; check --cert/--key or --token)"},
		{"unavailable", fmt.Errorf("list nodes: %w", status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:7443: connect: connection refused\"")),
			"list nodes: wardend unavailable: connection error: desc = \"transport: Error while dialing: dial tcp 10.0.0.5:7443: connect: connection refused\" (is wardend running at 10.0.0.5:7443?)"},
		{"tls", status.Error(codes.Unavailable, "connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\""),
			"TLS handshake with 10.0.0.5:7443 failed: connection error: desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority\" (check --cacert, and --cert/--key if the server refused your certificate)"},
		{"failed precondition is the server's reason", fmt.Errorf("rotate secret: %w", status.Error(codes.FailedPrecondition, "version 4 is still staged")),
			"rotate secret: version 4 is still staged"},
		{"permission", status.Error(codes.PermissionDenied, "auditor may not call RevealSecret"),
			"permission denied: auditor may not call RevealSecret (check the role of your identity with `wardenctl whoami`)"},
		{"unimplemented", fmt.Errorf("get mesh status: %w", status.Error(codes.Unimplemented, "unknown service warden.mesh.v1.MeshService")),
			"get mesh status: not implemented by wardend at 10.0.0.5:7443: unknown service warden.mesh.v1.MeshService (the service is not hosted by this replica or not available in this version)"},
		{"deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"),
			"timed out after 30s: context deadline exceeded (raise --timeout)"},
		{"invalid", status.Error(codes.InvalidArgument, "node_id: must match [a-z0-9]"), "invalid argument: node_id: must match [a-z0-9]"},
		{"plain error", errors.New("--role: unknown role \"db\""), "--role: unknown role \"db\""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ec.FormatError(tc.err); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
			if strings.Contains(ec.FormatError(tc.err), "\n") {
				t.Error("error spans several lines")
			}
		})
	}
}
