package sidecar

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/clock/fakeclock"
	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/linkgate/linkgate/probe"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hang guards against hangs only; nothing asserts on elapsed time.
const hang = 20 * time.Second

// fakeVCenter is a VCenterSource the test sets.
type fakeVCenter struct {
	mu      sync.Mutex
	status  []probe.Status
	changed chan struct{}
}

func newFakeVCenter(st ...probe.Status) *fakeVCenter {
	return &fakeVCenter{status: st, changed: make(chan struct{})}
}

func (f *fakeVCenter) Status() ([]probe.Status, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status, f.changed
}

func (f *fakeVCenter) set(st ...probe.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = st
	close(f.changed)
	f.changed = make(chan struct{})
}

func vcUp(now time.Time) probe.Status {
	return probe.Status{Target: "vc.example", Up: true, LastSuccess: now}
}

func vcRefused() probe.Status {
	return probe.Status{Target: "vc.example", Class: "transient", Kind: "refused", Reason: "connection refused"}
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

// newFakeClock is the tests' clock: it moves only on Advance.
func newFakeClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
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
	testkit.Run(t, hang, fn)
}

// waitState follows the gate's change signal until cond holds.
func waitState(t *testing.T, g *Gate, what string, cond func(*State) bool) *State {
	t.Helper()
	return testkit.Follow(t, what, hang, g.State, (*State).Changed, cond)
}

func isReady(st *State) bool    { return st.Ready }
func isNotReady(st *State) bool { return st.Version > 0 && !st.Ready }

func checkFails(name, reasonPart string) func(*State) bool {
	return func(st *State) bool {
		c, ok := st.Check(name)
		return ok && !c.OK && strings.Contains(c.Reason, reasonPart)
	}
}

// startCollector runs a collector on ns until the test ends, from its
// first dump on.
func startCollector(t *testing.T, ns *netnstest.NS, required ...string) *collector.Collector {
	t.Helper()
	c, err := collector.New(collector.Options{NetNS: ns.Path, Required: required})
	if err != nil {
		t.Fatal(err)
	}
	stop, err := c.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("collector: %v", err)
		}
	})
	return c
}

// waitSnapshot follows the collector until cond holds.
func waitSnapshot(t *testing.T, c Snapshots, what string, cond func(*collector.Snapshot) bool) *collector.Snapshot {
	t.Helper()
	return testkit.Follow(t, what, hang, c.Snapshot, (*collector.Snapshot).Changed, cond)
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
	return testkit.Recv(t, ch, what, hang)
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
