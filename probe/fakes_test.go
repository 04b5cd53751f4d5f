package probe

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock/fakeclock"
)

// epoch is when the fake clocks of these tests start.
var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newFakeClock() *fakeclock.Clock { return fakeclock.New(epoch) }

// nextWait returns the next wait the schedule chose: the duration of the
// next timer created, skipping the timers of the password and CA file
// checks (fileCheckInterval), which the fake clock reports too. It is
// for tests whose schedule never waits exactly fileCheckInterval; the
// others read clk.NextTimer.
func nextWait(t *testing.T, clk *fakeclock.Clock) time.Duration {
	t.Helper()
	for {
		if d := clk.NextTimer(t, guard); d != fileCheckInterval {
			return d
		}
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
