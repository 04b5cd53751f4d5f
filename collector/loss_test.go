package collector

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// These tests force each way the collector can lose events and assert
// that it says so (Verified false, linkgate_netlink_state_verified 0)
// from the loss until the resync completes, then converges.

// holdResync makes the next resync (of a reason other than "") wait until
// the returned release is called, and reports the reason on the channel.
func holdResync(t *testing.T, c *Collector) (reasons <-chan string, release func()) {
	ch := make(chan string, 1)
	gate := make(chan struct{})
	var held atomic.Bool
	c.testHookResync = func(reason string) {
		if reason == "" || !held.CompareAndSwap(false, true) {
			return
		}
		ch <- reason
		<-gate
	}
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return ch, release
}

// assertUnverified checks what a consumer sees while a resync is held.
func assertUnverified(t *testing.T, c *Collector) {
	t.Helper()
	s := c.Snapshot()
	if s.Verified || !strings.Contains(s.Doubt, "resyncing after lost events") {
		t.Errorf("during the resync: Verified=%v Doubt=%q, want unverified with a reason", s.Verified, s.Doubt)
	}
	if got := exposition(t, c, "linkgate_netlink_state_verified"); !strings.Contains(got, "linkgate_netlink_state_verified 0") {
		t.Errorf("during the resync:\n%s", got)
	}
	if h := c.Health(); !h.Alive || h.Verified || h.Doubt == "" {
		t.Errorf("during the resync: health %+v, want alive and unverified", h)
	}
}

func assertVerified(t *testing.T, c *Collector) {
	t.Helper()
	waitFor(t, c, "a verified state", func(s *Snapshot) bool { return s.Verified })
	if got := exposition(t, c, "linkgate_netlink_state_verified"); !strings.Contains(got, "linkgate_netlink_state_verified 1") {
		t.Errorf("after the resync:\n%s", got)
	}
}

// stall parks the event loop until release, so that a burst fills the
// receive queue.
func stall(t *testing.T, c *Collector) (release func()) {
	gate, parked := make(chan struct{}), make(chan struct{})
	c.inLoop(func(*loop) { close(parked); <-gate })
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	recv(t, parked, "the event loop to park")
	return release
}

// flood makes many changes on links va0..va(n-1), far more than a 4 KiB
// receive queue holds.
func flood(t *testing.T, a interface {
	TryIP(...string) (string, error)
}, links int) {
	rng := rand.New(rand.NewPCG(7, 8))
	_, _ = a.TryIP("-force", "-batch", burst(t, rng, 300, links))
}

// floodAndResync runs a collector with a 4 KiB receive queue, parks its
// event loop while a burst overflows the queue, and holds the resync that
// follows to check that the state is unverified until it completes, then
// verified and equal to the kernel's. It returns the collector and the
// reason of the resync.
func floodAndResync(t *testing.T, tweak ...func(*Collector)) (*Collector, string) {
	t.Helper()
	const links = 4
	a := multiPair(t, links)
	var reasons <-chan string
	var releaseResync func()
	c := start(t, a, Options{ReceiveBuffer: 4096}, append(tweak, func(c *Collector) {
		reasons, releaseResync = holdResync(t, c)
	})...)
	releaseRead := stall(t, c)
	flood(t, a, links)
	releaseRead()
	reason := recv(t, reasons, "a resync after the loss")
	assertUnverified(t, c)
	releaseResync()
	assertVerified(t, c)
	waitConverged(t, c, a)
	return c, reason
}

func TestOverflowFailsClosedUntilResynced(t *testing.T) {
	if _, r := floodAndResync(t); r != ResyncOverflow && r != ResyncDrops {
		t.Errorf("resync reason %q", r)
	}
}

// TestSilentDropsAreDetected turns off the kernel's ENOBUFS report
// (NETLINK_NO_ENOBUFS), as happens after the first overflow of a
// congestion episode: drops show only in SK_MEMINFO_DROPS.
func TestSilentDropsAreDetected(t *testing.T) {
	c, r := floodAndResync(t, func(c *Collector) {
		c.dialEvents = func(cfg *netlink.Config) (*netlink.Conn, error) {
			conn, err := netlink.Dial(unix.NETLINK_ROUTE, cfg)
			if err != nil {
				return nil, err
			}
			if err := conn.SetOption(netlink.NoENOBUFS, true); err != nil {
				conn.Close()
				return nil, err
			}
			return conn, nil
		}
	})
	if r != ResyncDrops {
		t.Errorf("resync reason %q, want %q", r, ResyncDrops)
	}
	got := exposition(t, c, "linkgate_netlink_socket_drops_total", "linkgate_netlink_resyncs_total")
	if exposedValue(got, "linkgate_netlink_socket_drops_total") == 0 {
		t.Errorf("drops not counted:\n%s", got)
	}
	if strings.Contains(got, `linkgate_netlink_resyncs_total{reason="overflow"} 1`) {
		t.Errorf("no ENOBUFS should have been reported:\n%s", got)
	}
}

// TestInterruptedDumpsRetryWithoutRedial: a resync whose dumps keep being
// interrupted stays unverified and is retried on the same socket until a
// dump is consistent; it never turns into a re-dial.
func TestInterruptedDumpsRetryWithoutRedial(t *testing.T) {
	a, _ := pair(t)
	var interrupts atomic.Int32
	var sawUnverified atomic.Bool
	c := start(t, a, Options{}, func(cc *Collector) {
		cc.testHookDump = func(tp netlink.HeaderType) bool {
			if tp != unix.RTM_GETLINK || interrupts.Load() <= 0 {
				return false
			}
			interrupts.Add(-1)
			if s := cc.Snapshot(); !s.Verified && strings.Contains(s.Doubt, "resyncing after lost events") {
				sawUnverified.Store(true)
			}
			return true
		}
	})
	const n = 3*dumpAttempts + 1 // three rounds of immediate retries, then one more
	interrupts.Store(n)
	c.inLoop(func(l *loop) { l.lose(ResyncDrops) })
	a.IP(t, "link", "set", "va", "mtu", "1400")
	waitFor(t, c, "mtu 1400 after the interrupted resync", func(s *Snapshot) bool {
		l, ok := s.LinkByName("va")
		return ok && l.MTU == 1400 && s.Verified
	})
	if interrupts.Load() != 0 {
		t.Errorf("%d interruptions left unused", interrupts.Load())
	}
	if !sawUnverified.Load() {
		t.Error("the state was not marked unverified while dumps were interrupted")
	}
	got := exposition(t, c, "linkgate_netlink_resyncs_total", "linkgate_netlink_dump_failures_total")
	if !strings.Contains(got, `linkgate_netlink_resyncs_total{reason="reconnect"} 0`) {
		t.Errorf("interrupted dumps re-dialed:\n%s", got)
	}
	if !strings.Contains(got, fmt.Sprintf(`linkgate_netlink_dump_failures_total{reason="interrupted"} %d`, n)) {
		t.Errorf("interruptions not counted:\n%s", got)
	}
}

// TestAntiEntropyRepairsACorruptedState corrupts the event loop's state
// behind the kernel's back and expects the periodic verification to find
// every difference, count it, log it and repair it.
func TestAntiEntropyRepairsACorruptedState(t *testing.T) {
	a, b := pair(t)
	a.IP(t, "addr", "add", "10.77.0.1/24", "dev", "va")
	b.IP(t, "addr", "add", "10.77.0.2/24", "dev", "vb")
	var logs testkit.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	c := start(t, a, Options{VerifyInterval: 100 * time.Millisecond, Logger: logger})
	waitFor(t, c, "the address", func(s *Snapshot) bool { return hasAddr(s, "va", "10.77.0.1/24") })
	waitFor(t, c, "a first clean verification", func(*Snapshot) bool { return c.verifications[verifyOK].Load() > 0 })

	c.inLoop(func(l *loop) {
		st := l.st
		for ix, lk := range st.links {
			if lk.Name == "va" {
				lk.MTU = 9999
				st.links[ix] = lk
				st.touch(linkTable)
				// A bogus address, and a deleted route.
				p := netip.MustParsePrefix("192.0.2.99/32")
				st.addrs[addrKey{ix, p}] = Address{LinkIndex: ix, Family: FamilyIPv4, Prefix: p}
				st.touch(addrTable)
			}
		}
		for k, r := range st.routes {
			if r.Dst == netip.MustParsePrefix("10.77.0.0/24") {
				delete(st.routes, k)
				st.touch(routeTable)
			}
		}
		l.c.publish(st, false)
	})
	waitFor(t, c, "the repair", func(s *Snapshot) bool {
		l, ok := s.LinkByName("va")
		return ok && l.MTU == 1500 && !hasAddr(s, "va", "192.0.2.99/32") && c.divergences[objectRoute].Load() > 0
	})
	waitConverged(t, c, a)
	got := exposition(t, c, "linkgate_netlink_divergences_total")
	for _, obj := range []string{objectLink, objectAddress, objectRoute} {
		if !strings.Contains(got, fmt.Sprintf(`linkgate_netlink_divergences_total{object=%q} 1`, obj)) {
			t.Errorf("divergence of %s not counted once:\n%s", obj, got)
		}
	}
	if !strings.Contains(got, `linkgate_netlink_divergences_total{object="neighbor"} 0`) {
		t.Errorf("neighbours did not diverge:\n%s", got)
	}
	out := logs.String()
	for _, want := range []string{"snapshot diverged from the kernel", "mtu=9999", "192.0.2.99/32", "10.77.0.0/24"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	return testkit.Recv(t, ch, what, waitTimeout)
}
