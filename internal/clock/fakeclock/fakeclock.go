// Package fakeclock is the one fake clock.Clock of linkgate's tests: time
// moves only when a test calls Advance, and every timer created is visible
// to the test, so it can read the schedule the code under test chose and
// wait until that code has scheduled a deadline before moving time past it.
package fakeclock

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
)

// Clock is a fake clock.Clock.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	pending []*timer
	created chan time.Duration // durations passed to NewTimer, in order
	changed chan struct{}      // closed whenever the pending timers change
}

// New returns a fake clock reading start.
func New(start time.Time) *Clock {
	return &Clock{now: start, created: make(chan time.Duration, 1000), changed: make(chan struct{})}
}

type timer struct {
	clk *Clock
	c   chan time.Time
	at  time.Time
}

var _ clock.Clock = (*Clock)(nil)

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when Advance reaches now+d (at once
// for d <= 0). Its duration is reported on Created.
func (c *Clock) NewTimer(d time.Duration) clock.Timer {
	c.mu.Lock()
	t := &timer{clk: c, c: make(chan time.Time, 1), at: c.now.Add(d)}
	if d <= 0 {
		t.c <- c.now
	} else {
		c.pending = append(c.pending, t)
		c.notifyLocked()
	}
	c.mu.Unlock()
	select {
	case c.created <- d:
	default: // nobody reads the schedule: do not block the code under test
	}
	return t
}

func (c *Clock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (t *timer) C() <-chan time.Time { return t.c }

func (t *timer) Stop() bool {
	c := t.clk
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.pending, t)
	if i < 0 {
		return false
	}
	c.pending = slices.Delete(c.pending, i, i+1)
	c.notifyLocked()
	return true
}

// Advance moves time forward by d and fires every timer that is due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.pending[:0]
	for _, t := range c.pending {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.c <- c.now
	}
	clear(c.pending[len(kept):])
	c.pending = kept
	c.notifyLocked()
}

// Created reports the duration of every NewTimer call, in order (the
// last 1000 unread ones).
func (c *Clock) Created() <-chan time.Duration { return c.created }

// NextTimer returns the duration of the next NewTimer call, failing the
// test if none comes within guard.
func (c *Clock) NextTimer(t testing.TB, guard time.Duration) time.Duration {
	t.Helper()
	select {
	case d := <-c.created:
		return d
	case <-time.After(guard):
		t.Fatalf("no timer created within %v", guard)
		return 0
	}
}

// DrainCreated forgets the reported NewTimer durations, for tests that
// drive the clock by deadlines instead of reading the schedule.
func (c *Clock) DrainCreated() {
	for {
		select {
		case <-c.created:
		default:
			return
		}
	}
}

// NextDeadline returns when the earliest pending timer fires, or end if
// none fires before it.
func (c *Clock) NextDeadline(end time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := end
	for _, t := range c.pending {
		if t.at.Before(next) {
			next = t.at
		}
	}
	return next
}

// WaitTimer blocks until a timer due at exactly at is pending, i.e. until
// the code under test has scheduled that deadline; it fails the test after
// guard.
func (c *Clock) WaitTimer(t testing.TB, at time.Time, guard time.Duration) {
	t.Helper()
	deadline := time.After(guard)
	for {
		c.mu.Lock()
		found := slices.ContainsFunc(c.pending, func(x *timer) bool { return x.at.Equal(at) })
		var pending []time.Time
		for _, x := range c.pending {
			pending = append(pending, x.at)
		}
		ch := c.changed
		c.mu.Unlock()
		if found {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no timer scheduled for %s; pending: %v", at, pending)
		}
	}
}
