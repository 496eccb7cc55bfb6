package rungroup

import (
	"context"
	"errors"
	"testing"
)

func TestFirstErrorCancelsOthers(t *testing.T) {
	g := New(t.Context())
	boom := errors.New("boom")
	g.Go("waiter", func(ctx context.Context) error { <-ctx.Done(); return nil })
	g.Go("failer", func(context.Context) error { return boom })
	if err := g.Wait(); !errors.Is(err, boom) {
		t.Fatalf("Wait = %v, want boom", err)
	}
}

func TestParentCancelIsClean(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	g := New(ctx)
	g.Go("waiter", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatalf("Wait = %v, want nil after parent cancel", err)
	}
}

func TestEarlyReturnIsAnError(t *testing.T) {
	g := New(t.Context())
	g.Go("quitter", func(context.Context) error { return nil })
	if err := g.Wait(); err == nil {
		t.Fatal("a task returning early without error must fail the group")
	}
}
