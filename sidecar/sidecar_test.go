package sidecar

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/netnstest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hang guards against hangs only; nothing asserts on elapsed time.
const hang = 20 * time.Second

// fakeVCenter is a VCenterSource the test sets.
type fakeVCenter struct {
	mu      sync.Mutex
	status  []VCenterStatus
	changed chan struct{}
}

func newFakeVCenter(st ...VCenterStatus) *fakeVCenter {
	return &fakeVCenter{status: st, changed: make(chan struct{})}
}

func (f *fakeVCenter) VCenterStatus() ([]VCenterStatus, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status, f.changed
}

func (f *fakeVCenter) set(st ...VCenterStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = st
	close(f.changed)
	f.changed = make(chan struct{})
}

func vcUp(now time.Time) VCenterStatus {
	return VCenterStatus{Target: "vc.example", Up: true, LastSuccess: now}
}

func vcRefused() VCenterStatus {
	return VCenterStatus{Target: "vc.example", Class: "transient", Kind: "refused", Reason: "connection refused"}
}

// staticSnapshots never changes; for tests that need no kernel.
type staticSnapshots struct{ s *collector.Snapshot }

func (s staticSnapshots) Snapshot() *collector.Snapshot { return s.s }

func healthySnapshot() staticSnapshots {
	return staticSnapshots{&collector.Snapshot{
		Version:  1,
		Verified: true,
		Links: []collector.Link{
			{Index: 1, Name: "lo", Loopback: true, Up: true, AdminUp: true, OperState: collector.OperUnknown, Carrier: true},
			{Index: 2, Name: "eth0", Up: true, AdminUp: true, OperState: collector.OperUp, Carrier: true},
		},
		Network: collector.NetworkStatus{Up: true, Required: []string{"eth0"}},
	}}
}

// fakeClock is a Clock the test advances. Timers fire during Advance.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed whenever the set of pending timers changes
}

type fakeTimer struct {
	clock *fakeClock
	at    time.Time
	ch    chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), changed: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{clock: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	c.notifyLocked()
	return t
}

func (c *fakeClock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.timers, t)
	if i < 0 {
		return false
	}
	c.timers = slices.Delete(c.timers, i, i+1)
	c.notifyLocked()
	return true
}

// Advance moves the clock and fires every timer that is due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if t.at.After(c.now) {
			kept = append(kept, t)
			continue
		}
		t.ch <- c.now
	}
	c.timers = kept
	c.notifyLocked()
}

// waitTimer blocks until a timer due at exactly at is pending, i.e. until
// the code under test has scheduled that deadline.
func (c *fakeClock) waitTimer(t *testing.T, at time.Time) {
	t.Helper()
	deadline := time.After(hang)
	for {
		c.mu.Lock()
		found := slices.ContainsFunc(c.timers, func(x *fakeTimer) bool { return x.at.Equal(at) })
		var pending []time.Time
		for _, x := range c.timers {
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

// startGate runs a gate until the test ends.
func startGate(t *testing.T, opts GateOptions) *Gate {
	t.Helper()
	g, err := NewGate(opts)
	if err != nil {
		t.Fatal(err)
	}
	run(t, g.Run)
	return g
}

// run starts fn in a goroutine and, at cleanup, cancels it and waits.
func run(t *testing.T, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := fn(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// waitState follows the gate's change signal until cond holds.
func waitState(t *testing.T, g *Gate, what string, cond func(*State) bool) *State {
	t.Helper()
	deadline := time.After(hang)
	for {
		st := g.State()
		if cond(st) {
			return st
		}
		select {
		case <-st.Changed():
		case <-deadline:
			t.Fatalf("timed out waiting for %s; gate: %s", what, st.Summary())
		}
	}
}

func isReady(st *State) bool    { return st.Ready }
func isNotReady(st *State) bool { return st.Version > 0 && !st.Ready }

func checkFails(name, reasonPart string) func(*State) bool {
	return func(st *State) bool {
		c, ok := st.Check(name)
		return ok && !c.OK && strings.Contains(c.Reason, reasonPart)
	}
}

// startCollector runs a collector on ns until the test ends and waits for
// its first dump (as collector_test.go does).
func startCollector(t *testing.T, ns *netnstest.NS, required ...string) *collector.Collector {
	t.Helper()
	c, err := collector.New(collector.Options{NetNS: ns.Path, Required: required})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c.Run)
	select {
	case <-c.Synced():
	case <-time.After(hang):
		t.Fatal("collector did not publish a first snapshot")
	}
	return c
}

// waitSnapshot follows the collector until cond holds.
func waitSnapshot(t *testing.T, c Snapshots, what string, cond func(*collector.Snapshot) bool) *collector.Snapshot {
	t.Helper()
	deadline := time.After(hang)
	for {
		s := c.Snapshot()
		if cond(s) {
			return s
		}
		select {
		case <-s.Changed():
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// serve runs h on a test server; at cleanup the handler is closed first,
// so that parked long-polls do not block the server's Close.
func serve(t *testing.T, h *Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(func() { h.Close(); srv.Close() })
	return srv
}

// recv receives from ch or fails the test after the hang guard.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hang):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// get performs a request against h and returns status and body.
func get(t *testing.T, h http.Handler, target string, header ...string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}
