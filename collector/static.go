package collector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Static is one full dump of a network namespace's state, for one-shot
// use (like `linkgate check`): no event subscription, no goroutine. Its
// snapshot never changes. Create it with NewStatic; Close it.
type Static struct {
	c *Collector

	// mu: RouteGet holds it shared, Close exclusively, so that no lookup
	// runs on (or re-dials, outside the namespace) a closed Static.
	mu     sync.RWMutex
	closed bool
}

// NewStatic dumps the kernel's links, addresses, routes and neighbours
// once. The snapshot's network status applies opts.Required as a running
// Collector's first snapshot would; DeviceFilter, as there, changes only
// metrics. The tables are dumped one after the other without following
// events, so a change during the dump may show in some and not others.
//
// ctx bounds the dump by its deadline (each request is also bounded, as
// in Collector); a dump the kernel keeps interrupting with changes is
// retried until ctx ends.
func NewStatic(ctx context.Context, opts Options) (*Static, error) {
	s, _, err := newStatic(ctx, opts)
	return s, err
}

// newStatic is NewStatic, also returning the state it built (benchmarks
// start from it).
func newStatic(ctx context.Context, opts Options) (*Static, *state, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	c, err := New(opts)
	if err != nil {
		return nil, nil, err
	}
	if err := c.openNetNS(); err != nil {
		return nil, nil, err
	}
	s := &Static{c: c}
	k, err := c.dumpOnce(ctx)
	if err != nil {
		_ = s.Close()
		return nil, nil, err
	}
	st := newState()
	st.adopt(k, c.now())
	c.publish(st, true)
	return s, st, nil
}

// dumpOnce is dumpAll, retried while the kernel interrupts it, with the
// pauses of loop.resync, until ctx ends.
func (c *Collector) dumpOnce(ctx context.Context) (*kernelState, error) {
	wait := resyncRetryMin
	for {
		k, err := c.dumpAll(ctx)
		switch {
		case err == nil:
			return k, nil
		case ctx.Err() != nil:
			return nil, fmt.Errorf("%w (%w)", err, ctx.Err())
		case !errors.Is(err, errDumpInterrupted):
			return nil, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-t.C:
		}
		wait = min(wait*2, resyncRetryMax)
	}
}

// Snapshot returns the dumped state: verified, and never superseded (its
// Changed channel never closes).
func (s *Static) Snapshot() *Snapshot { return s.c.Snapshot() }

// RouteGet asks the kernel which route it would use to reach dst, as
// Collector.RouteGet does, in the Static's namespace. It fails once the
// Static is closed.
func (s *Static) RouteGet(ctx context.Context, dst netip.Addr) (Route, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return Route{}, fmt.Errorf("route get %s: %w", dst, net.ErrClosed)
	}
	return s.c.RouteGet(ctx, dst)
}

// Close releases the request socket and the namespace. The snapshot stays
// readable.
func (s *Static) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.c.closeSockets()
}
