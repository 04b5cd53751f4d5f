package collector

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock/fakeclock"
	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestStaticMatchesCollector: a Static's snapshot, network status and
// route lookups are those of a running Collector on the same namespace.
func TestStaticMatchesCollector(t *testing.T) {
	a, b := pair(t)
	b.IP(t, "addr", "add", "10.76.0.2/24", "dev", "vb")
	a.IP(t, "addr", "add", "10.76.0.1/24", "dev", "va")
	a.IP(t, "route", "add", "default", "via", "10.76.0.2", "dev", "va")
	a.IP(t, "route", "add", "blackhole", "192.0.2.0/24")
	a.IP(t, "neigh", "add", "10.76.0.9", "lladdr", "02:00:00:00:00:09", "dev", "va", "nud", "permanent")
	noVA := func(name string) bool { return name != "va" }
	for _, opts := range []Options{
		{},
		{Required: []string{"va"}, DeviceFilter: noVA},
		{Required: []string{"va", "missing0"}},
	} {
		c := start(t, a, opts)
		waitConverged(t, c, a)
		opts.NetNS = a.Path
		s := staticConverged(t, a, opts)
		snap := s.Snapshot()
		if !snap.Verified || snap.Version != 1 || snap.Doubt != "" {
			t.Errorf("required %v: static snapshot version %d verified %v doubt %q", opts.Required, snap.Version, snap.Verified, snap.Doubt)
		}
		// The running collector may have counted an outage while va came
		// up: compare the status, and the outage count of a first look.
		want, got := c.Snapshot().Network, snap.Network
		if got.Up != want.Up || !reflect.DeepEqual(got.Required, want.Required) || !reflect.DeepEqual(got.Down, want.Down) ||
			got.Outages != map[bool]uint64{true: 0, false: 1}[got.Up] || got.DownSince.IsZero() == !got.Up {
			t.Errorf("required %v: static network status %+v, collector's %+v", opts.Required, got, want)
		}
		for _, dst := range []string{"10.76.0.2", "198.51.100.1", "192.0.2.1", "10.76.0.1"} {
			wr, werr := c.RouteGet(context.Background(), netip.MustParseAddr(dst))
			gr, gerr := s.RouteGet(context.Background(), netip.MustParseAddr(dst))
			if gr != wr || (gerr == nil) != (werr == nil) {
				t.Errorf("route get %s: static %+v, %v; collector %+v, %v", dst, gr, gerr, wr, werr)
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := s.RouteGet(context.Background(), netip.MustParseAddr("10.76.0.2")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("route get after Close: %v, want net.ErrClosed", err)
		}
		select {
		case <-s.Snapshot().Changed():
			t.Error("a static snapshot changed")
		default:
		}
	}
}

// staticConverged returns a Static of ns that equals the kernel's state
// as ip shows it right after, retrying a while: after links come up, IPv6
// duplicate address detection and discovery change the state for a while.
func staticConverged(t *testing.T, ns *netnstest.NS, opts Options) *Static {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		s, err := NewStatic(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		want, got := kernelView(t, ns), snapshotView(s.Snapshot())
		if got == want {
			return s
		}
		_ = s.Close()
		if time.Now().After(deadline) {
			t.Fatalf("static snapshot differs from the kernel:\n%s", lineDiff(want, got))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStaticRouteTypes: route types as the kernel reports them, in the
// snapshot and from RouteGet.
func TestStaticRouteTypes(t *testing.T) {
	a, _ := pair(t)
	a.IP(t, "addr", "add", "10.75.0.1/24", "dev", "va")
	a.IP(t, "route", "add", "blackhole", "192.0.2.0/24")
	a.IP(t, "route", "add", "unreachable", "198.51.100.0/24")
	a.IP(t, "route", "add", "prohibit", "203.0.113.0/24")
	s, err := NewStatic(context.Background(), Options{NetNS: a.Path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for dst, want := range map[string]RouteType{"10.75.0.2": RouteUnicast, "10.75.0.1": RouteLocal, "10.75.0.255": RouteBroadcast} {
		r, err := s.RouteGet(context.Background(), netip.MustParseAddr(dst))
		if err != nil || r.Type != want {
			t.Errorf("route get %s: %s (%+v), %v; want %s", dst, r.Type, r, err, want)
		}
	}
	// Through a route that does not forward, the kernel answers an error.
	for dst, want := range map[string]error{"192.0.2.1": unix.EINVAL, "198.51.100.1": unix.EHOSTUNREACH, "203.0.113.1": unix.EACCES} {
		if r, err := s.RouteGet(context.Background(), netip.MustParseAddr(dst)); !errors.Is(err, want) {
			t.Errorf("route get %s: %+v, %v; want %v", dst, r, err, want)
		}
	}
	types := map[string]RouteType{}
	for _, r := range s.Snapshot().Routes {
		types[r.Dst.String()] = r.Type
	}
	for dst, want := range map[string]RouteType{"192.0.2.0/24": RouteBlackhole, "198.51.100.0/24": RouteUnreachable, "203.0.113.0/24": RouteProhibit, "10.75.0.0/24": RouteUnicast} {
		if types[dst] != want {
			t.Errorf("route %s in the snapshot: type %s, want %s", dst, types[dst], want)
		}
	}
}

// TestStaticFails: NewStatic reports a missing namespace and an ended
// context without leaving anything open.
func TestStaticFails(t *testing.T) {
	if _, err := NewStatic(context.Background(), Options{NetNS: filepath.Join(t.TempDir(), "gone")}); err == nil {
		t.Error("NewStatic of a missing namespace succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewStatic(ctx, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("NewStatic with a cancelled context: %v", err)
	}
}

// TestStaticRetriesInterruptedDumps: a dump the kernel interrupts is
// retried until it is consistent, or until the context ends.
func TestStaticRetriesInterruptedDumps(t *testing.T) {
	a, _ := pair(t)
	c, err := New(Options{NetNS: a.Path})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.openNetNS(); err != nil {
		t.Fatal(err)
	}
	defer c.closeSockets()
	interrupts := 2 * dumpAttempts
	c.testHookDump = func(netlink.HeaderType) bool {
		interrupts--
		return interrupts >= 0
	}
	k, err := c.dumpOnce(context.Background())
	if err != nil || len(k.links) != 2 {
		t.Fatalf("dump after interruptions: %v, %+v", err, k)
	}
	c.testHookDump = func(netlink.HeaderType) bool { return true }
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.dumpOnce(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dump interrupted until the deadline: %v", err)
	}
}

func TestStartStop(t *testing.T) {
	a, _ := pair(t)
	c, err := New(Options{NetNS: a.Path, Required: []string{"va"}})
	if err != nil {
		t.Fatal(err)
	}
	stop, err := c.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Snapshot(); s.Version == 0 || !s.Verified || !s.Network.Up {
		t.Errorf("after Start: version %d verified %v network %+v", s.Version, s.Verified, s.Network)
	}
	if !c.Alive() {
		t.Errorf("after Start: %+v", c.Health())
	}
	if err := stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if h := c.Health(); h.Alive || h.Problem != "event loop not running" {
		t.Errorf("after stop: %+v", h)
	}
}

// TestStartFailsWithRun: when Run fails before the first dump, Start
// returns its error.
func TestStartFailsWithRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(Options{NetNS: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	stop, err := c.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "open network namespace") || stop != nil {
		t.Errorf("Start without a namespace: %v", err)
	}
}

// TestStartTimesOut: with no state after 10s (on the collector's clock),
// Start stops the loop and fails.
func TestStartTimesOut(t *testing.T) {
	a, _ := pair(t)
	clk := fakeclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c, err := New(Options{NetNS: a.Path, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	c.testHookDump = func(netlink.HeaderType) bool { return true } // never consistent
	type result struct {
		stop func() error
		err  error
	}
	done := make(chan result, 1)
	go func() {
		stop, err := c.Start(context.Background())
		done <- result{stop, err}
	}()
	if d := clk.NextTimer(t, waitTimeout); d != 10*time.Second {
		t.Fatalf("Start waits %s, want 10s", d)
	}
	clk.Advance(10 * time.Second)
	r := recv(t, done, "Start to give up")
	if r.err == nil || r.err.Error() != "no kernel network state after 10s" || r.stop != nil {
		t.Errorf("Start: %v", r.err)
	}
	if c.Health().Alive {
		t.Error("the event loop still runs after Start gave up")
	}
}

// TestStartCancelled: a context that ends before the first dump ends Start.
func TestStartCancelled(t *testing.T) {
	a, _ := pair(t)
	c, err := New(Options{NetNS: a.Path})
	if err != nil {
		t.Fatal(err)
	}
	c.testHookDump = func(netlink.HeaderType) bool { return true }
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Start(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Start with an expiring context: %v", err)
	}
}
