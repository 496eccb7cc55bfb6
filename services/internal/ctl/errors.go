package ctl

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errContext is what an error message may point the operator at.
type errContext struct {
	server  string
	creds   string
	timeout time.Duration
}

// FormatError turns err into the single line wardenctl prints: what went wrong, in the server's words
// where it gave some, and what to check. Errors that carry no gRPC status are printed as they are.
func (ec errContext) FormatError(err error) string {
	var gs interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &gs) || gs.GRPCStatus() == nil || gs.GRPCStatus().Code() == codes.OK {
		return err.Error()
	}
	st := gs.GRPCStatus()
	// Keep the caller's context ("list nodes: …") and drop the status' own rendering.
	prefix := strings.TrimSuffix(err.Error(), st.Err().Error())
	msg := st.Message()
	var line string
	switch st.Code() {
	case codes.Unauthenticated:
		line = fmt.Sprintf("not authenticated: %s (using %s; check --cert/--key or --token)", msg, ec.creds)
	case codes.PermissionDenied:
		line = fmt.Sprintf("permission denied: %s (check the role of your identity with `wardenctl whoami`)", msg)
	case codes.Unavailable:
		switch {
		case strings.Contains(msg, "handshake") || strings.Contains(msg, "certificate") || strings.Contains(msg, "x509"):
			line = fmt.Sprintf("TLS handshake with %s failed: %s (check --cacert, and --cert/--key if the server refused your certificate)", ec.server, msg)
		default:
			line = fmt.Sprintf("wardend unavailable: %s (is wardend running at %s?)", msg, ec.server)
		}
	case codes.FailedPrecondition:
		line = msg
	case codes.InvalidArgument:
		line = "invalid argument: " + msg
	case codes.NotFound:
		line = "not found: " + msg
	case codes.AlreadyExists:
		line = "already exists: " + msg
	case codes.Unimplemented:
		line = fmt.Sprintf("not implemented by wardend at %s: %s (the service is not hosted by this replica or not available in this version)", ec.server, msg)
	case codes.DeadlineExceeded:
		line = fmt.Sprintf("timed out after %s: %s (raise --timeout)", ec.timeout, msg)
	case codes.ResourceExhausted:
		line = "rate limited: " + msg + " (retry later)"
	case codes.Internal:
		line = "internal error in wardend: " + msg + " (the server log has the details under that id)"
	default:
		line = fmt.Sprintf("%s: %s", strings.ToLower(st.Code().String()), msg)
	}
	return prefix + line
}

// codeOf is the gRPC code of err (wrapped or not), Unknown for errors without a status.
func codeOf(err error) codes.Code {
	return status.Code(err)
}

// errExit signals a failure already reported (e.g. validation errors printed as a table).
var errExit = errors.New("")
