// Package rungroup runs a process's long-lived components together: the first one to fail (or to return
// while the group is not being stopped) cancels the others, and Wait returns that first error.
package rungroup

import (
	"context"
	"fmt"
	"sync"
)

// Group is a set of Run(ctx) error tasks sharing one context.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

// New returns a group whose context is derived from ctx.
func New(ctx context.Context) *Group {
	ctx, cancel := context.WithCancel(ctx)
	return &Group{ctx: ctx, cancel: cancel}
}

// Context is cancelled when any task fails or the parent is done.
func (g *Group) Context() context.Context { return g.ctx }

// Go starts a named task.
func (g *Group) Go(name string, fn func(ctx context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		err := fn(g.ctx)
		if err == nil && g.ctx.Err() == nil {
			err = fmt.Errorf("%s stopped unexpectedly", name)
		} else if err != nil {
			err = fmt.Errorf("%s: %w", name, err)
		}
		if err != nil && g.ctx.Err() == nil {
			g.once.Do(func() { g.err = err })
		}
		g.cancel()
	}()
}

// Wait waits for every task and returns the first failure (nil when the parent context ended the group).
func (g *Group) Wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}
