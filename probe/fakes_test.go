package probe

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock moves only when the test says so. Every NewTimer is reported
// on timers, so a test can read the schedule the prober chose, wait for
// the prober to be idle in it, and then move time past it.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	pending []*fakeTimer
	timers  chan time.Duration // durations passed to NewTimer, in order
}

func newFakeClock() *fakeClock {
	return &fakeClock{
		now:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		timers: make(chan time.Duration, 1000),
	}
}

type fakeTimer struct {
	clk     *fakeClock
	c       chan time.Time
	at      time.Time
	stopped bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) newTimer(d time.Duration) *fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clk: c, c: make(chan time.Time, 1), at: c.now.Add(d)}
	if d <= 0 {
		t.c <- c.now
		return t
	}
	c.pending = append(c.pending, t)
	return t
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := c.newTimer(d)
	c.timers <- d
	return t
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time { return c.newTimer(d).c }

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.clk.mu.Lock()
	defer t.clk.mu.Unlock()
	was := !t.stopped && len(t.c) == 0
	t.stopped = true
	return was
}

// Advance moves time forward by d and fires every timer that is due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.pending[:0]
	for _, t := range c.pending {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.c <- c.now
		default:
			keep = append(keep, t)
		}
	}
	c.pending = keep
}

// nextTimer returns the duration of the next NewTimer call.
func (c *fakeClock) nextTimer(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.timers:
		return d
	case <-time.After(guard):
		t.Fatalf("no timer created within %v", guard)
		return 0
	}
}

// fixedRand is a rand.Source whose Float64 is always r.
type fixedRand struct{ r float64 }

func (f fixedRand) Uint64() uint64 { return uint64(f.r * (1 << 53)) }

// fakeNetwork is a Network the test switches by hand.
type fakeNetwork struct {
	mu      sync.Mutex
	up      bool
	changed chan struct{}
	calls   int
}

func newFakeNetwork(up bool) *fakeNetwork {
	return &fakeNetwork{up: up, changed: make(chan struct{})}
}

func (n *fakeNetwork) NetworkState() (bool, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls++
	return n.up, n.changed
}

// poke signals a change that leaves up as it is, as a collector does for
// every neighbour or address update.
func (n *fakeNetwork) poke() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.changed)
	n.changed = make(chan struct{})
}

// awaitCall runs f and waits until NetworkState is called after it: the
// prober has seen what f did.
func (n *fakeNetwork) awaitCall(t *testing.T, f func()) {
	t.Helper()
	n.mu.Lock()
	before := n.calls
	n.mu.Unlock()
	f()
	deadline := time.Now().Add(guard)
	for {
		n.mu.Lock()
		after := n.calls
		n.mu.Unlock()
		if after > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("prober never looked at the network")
		}
		time.Sleep(time.Millisecond)
	}
}

func (n *fakeNetwork) set(up bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.up == up {
		return
	}
	n.up = up
	close(n.changed)
	n.changed = make(chan struct{})
}

// nextDeadline returns when the earliest pending timer fires; end if
// there is none before it.
func (c *fakeClock) nextDeadline(end time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := end
	for _, t := range c.pending {
		if !t.stopped && t.at.Before(next) {
			next = t.at
		}
	}
	return next
}

// drainTimers forgets the reported NewTimer durations, for tests that
// drive the clock by deadlines instead of reading the schedule.
func (c *fakeClock) drainTimers() {
	for {
		select {
		case <-c.timers:
		default:
			return
		}
	}
}

// waitIdle waits until every prober schedule goroutine is blocked waiting
// for time or the network (in sleep or park) with nothing ready to
// receive: it has finished reacting to whatever the test just did, so the
// test may move the clock on. The goroutine dump is the only place that
// says a goroutine is blocked; a goroutine woken by a timer or a network
// change shows as runnable until it has handled the wake.
func waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !probersIdle() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("prober not idle within %v:\n%s", guard, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func probersIdle() bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	loops := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if !strings.Contains(g, "probe.(*Prober).loop(") {
			continue
		}
		loops++
		header, frames, _ := strings.Cut(g, "\n")
		if !strings.Contains(header, "[select") {
			return false
		}
		// The first frame outside the runtime is where it waits.
		var where string
		for line := range strings.SplitSeq(frames, "\n") {
			if strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "runtime.") {
				continue
			}
			where = line
			break
		}
		if !strings.Contains(where, "probe.(*Prober).sleep(") && !strings.Contains(where, "probe.(*Prober).park(") {
			return false
		}
	}
	return loops > 0
}
