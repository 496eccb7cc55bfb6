// Package apierr is the one place domain errors become gRPC statuses. Handlers return domain errors
// (sentinels, *Invalid, *Precondition); the server's last interceptor calls ToStatus. Internal errors
// reach clients masked with a correlation id and are logged in full.
package apierr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/authz"
	"github.com/warden-sec/warden/services/internal/fanout"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/store"
)

// Invalid is bad input: a request field that cannot be accepted.
type Invalid struct {
	Field  string
	Reason string
}

func (e *Invalid) Error() string { return e.Field + ": " + e.Reason }

// InvalidArg builds an *Invalid.
func InvalidArg(field, format string, args ...any) error {
	return &Invalid{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Precondition is a request that is well-formed but cannot be carried out in the current state.
type Precondition struct{ Reason string }

func (e *Precondition) Error() string { return e.Reason }

// FailedPrecondition builds a *Precondition.
func FailedPrecondition(format string, args ...any) error {
	return &Precondition{Reason: fmt.Sprintf(format, args...)}
}

// Sentinels for conditions without a natural domain error.
var (
	ErrNotFound        = errors.New("not found")
	ErrAlreadyExists   = errors.New("already exists")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrPermission      = errors.New("permission denied")
	ErrExhausted       = errors.New("resource exhausted")
)

// NotFound wraps ErrNotFound with what was looked for.
func NotFound(what string) error { return fmt.Errorf("%s: %w", what, ErrNotFound) }

// AlreadyExists wraps ErrAlreadyExists.
func AlreadyExists(what string) error { return fmt.Errorf("%s: %w", what, ErrAlreadyExists) }

// ToStatus maps err to a gRPC status error. Errors that already are statuses pass through.
func ToStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var inv *Invalid
	var pinv *pki.InvalidError
	var pre *Precondition
	switch {
	case errors.As(err, &inv):
		return status.Error(codes.InvalidArgument, inv.Error())
	case errors.As(err, &pinv):
		return status.Error(codes.InvalidArgument, pinv.Error())
	case errors.As(err, &pre):
		return status.Error(codes.FailedPrecondition, pre.Error())
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.FailedPrecondition, "the object changed since it was read (expected version is stale): read it again and retry")
	case errors.Is(err, ErrNotFound), errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, authn.ErrUnauthenticated), errors.Is(err, authz.ErrUnauthenticated), errors.Is(err, ErrUnauthenticated):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, authz.ErrDenied), errors.Is(err, ErrPermission):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrExhausted):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, fanout.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, store.ErrUnavailable):
		return status.Error(codes.Unavailable, "storage unavailable: etcd has no quorum or cannot be reached; retry later")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	id := correlationID()
	log.ErrorContext(ctx, "internal error", "method", method, "correlation_id", id, "err", err)
	return status.Errorf(codes.Internal, "internal error (correlation id %s)", id)
}

func correlationID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
