// Package testkit holds the small helpers that linkgate's tests in every
// package share: a log buffer that goroutines write while the test reads,
// and a bounded receive. It is imported by tests only.
package testkit

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer safe for concurrent Write and String: a logger's
// output that a test reads while the code under test writes.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WaitFor polls until the buffer contains text, failing the test after
// guard (a guard against hangs, not a timing assertion).
func (s *Buffer) WaitFor(t testing.TB, text string, guard time.Duration) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !strings.Contains(s.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("never got %q:\n%s", text, s.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Recv receives from ch, failing the test if nothing arrives within guard.
func Recv[T any](t testing.TB, ch <-chan T, what string, guard time.Duration) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guard):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// Follow waits until cond holds for the current value of a source that
// publishes immutable values with a close-on-change channel (a collector
// snapshot, a gate state), failing the test after guard; a value that is
// a fmt.Stringer is shown then.
func Follow[T any](t testing.TB, what string, guard time.Duration, current func() T, changed func(T) <-chan struct{}, cond func(T) bool) T {
	t.Helper()
	deadline := time.After(guard)
	for {
		v := current()
		if cond(v) {
			return v
		}
		select {
		case <-changed(v):
		case <-deadline:
			if s, ok := any(v).(fmt.Stringer); ok {
				t.Fatalf("timed out waiting for %s; last: %s", what, s)
			}
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// ClosedAddr returns a loopback host:port nothing listens on right now.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// BuildLinkgate builds the real binary, as shipped, into a temporary
// folder; LINKGATE_SOAK_BIN names a binary to test instead (a release, or
// a candidate fix).
func BuildLinkgate(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("LINKGATE_SOAK_BIN"); bin != "" {
		t.Logf("testing %s (LINKGATE_SOAK_BIN)", bin)
		return bin
	}
	bin := filepath.Join(t.TempDir(), "linkgate")
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, "github.com/linkgate/linkgate/cmd/linkgate")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built linkgate in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// Run runs fn (a part's Run) until stop is called or the test ends,
// whichever is first; it fails the test if fn returns an error, or does
// not return within guard of being cancelled.
func Run(t testing.TB, guard time.Duration, fn func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(guard):
				t.Errorf("Run did not return within %v of cancel", guard)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// AcceptAll accepts connections on ln and closes each at once until the
// test ends (a port that answers, nothing more), then closes ln and
// waits. It returns the count of connections accepted.
func AcceptAll(t testing.TB, ln net.Listener) *atomic.Int64 {
	n := new(atomic.Int64)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			_ = c.Close()
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return n
}

// SeedEnv replays a randomized test: set it to the seed the test logged.
const SeedEnv = "LINKGATE_SEED"

// ReplayRand returns the random source of a randomized test, seeded from
// LINKGATE_SEED (a decimal uint64) when set, else from the clock. It logs
// the seed, so that any run can be replayed.
func ReplayRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(SeedEnv); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want a decimal uint64", SeedEnv, v)
		}
		seed = n
	}
	t.Logf("seed %d (replay with %s=%d)", seed, SeedEnv, seed)
	return rand.New(rand.NewPCG(seed, 0))
}
