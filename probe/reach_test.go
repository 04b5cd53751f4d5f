package probe

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock/fakeclock"
	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/promtooltest"
	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

const reachTarget = "vc.example:443"

// reachOptions are the test's defaults: the fake clock, the jitter in the
// middle of its window (exactly Interval), the test's log.
func reachOptions(t *testing.T, clk *fakeclock.Clock, ports ...int) ReachOptions {
	o := DefaultReachOptions(reachTarget)
	o.Ports = ports
	o.Clock = clk
	o.Rand = fixedRand{0.5}
	o.Logger = testLogger(t)
	return o
}

// startReach builds a Reach and runs it until the test ends.
func startReach(t *testing.T, o ReachOptions, network Network) *Reach {
	t.Helper()
	r, err := NewReach(o, network)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, guard, r.Run)
	return r
}

// waitReach waits until cond holds for r's snapshot, failing after guard.
func waitReach(t *testing.T, r *Reach, what string, cond func(*Reachability) bool) *Reachability {
	t.Helper()
	deadline := time.After(guard)
	for {
		s := r.Snapshot()
		if cond(s) {
			return s
		}
		select {
		case <-s.Changed():
		case <-deadline:
			t.Fatalf("waiting for %s: last snapshot %s", what, showReach(s))
		}
	}
}

func showReach(s *Reachability) string {
	var b strings.Builder
	fmt.Fprintf(&b, "v%d paused=%v", s.Version, s.Paused)
	for _, h := range s.Hosts {
		fmt.Fprintf(&b, "\n  %s:", h.Name)
		for _, p := range h.Ports {
			fmt.Fprintf(&b, " %d checked=%v reachable=%v %s/%s since %s (%s);", p.Port, p.Checked, p.Reachable, p.Class, p.Kind,
				p.Since.Format(time.TimeOnly), p.Reason)
		}
	}
	return b.String()
}

// checked says every port of every one of hosts has been probed.
func checked(hosts ...string) func(*Reachability) bool {
	return func(s *Reachability) bool {
		for _, name := range hosts {
			h, ok := s.Host(name)
			if !ok {
				return false
			}
			for _, p := range h.Ports {
				if !p.Checked {
					return false
				}
			}
		}
		return true
	}
}

// port returns the result of one port of one host, failing if absent.
func port(t *testing.T, s *Reachability, host string, n int) PortReach {
	t.Helper()
	h, ok := s.Host(host)
	if !ok {
		t.Fatalf("no host %s in %s", host, showReach(s))
	}
	for _, p := range h.Ports {
		if p.Port == n {
			return p
		}
	}
	t.Fatalf("no port %d of %s in %s", n, host, showReach(s))
	return PortReach{}
}

// reachSeries gathers r through a pedantic registry: every series as
// name{label=value,...} (labels sorted) to its value.
func reachSeries(t *testing.T, r *Reach) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(r); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var kv []string
			for _, lp := range m.GetLabel() {
				kv = append(kv, lp.GetName(), lp.GetValue())
			}
			v := m.GetGauge().GetValue()
			if m.Counter != nil {
				v = m.GetCounter().GetValue()
			}
			out[seriesKey(mf.GetName(), kv...)] = v
		}
	}
	return out
}

// seriesKey names a series as reachSeries does; target is added.
func seriesKey(name string, kv ...string) string {
	var pairs []string
	hasTarget := false
	for i := 0; i+1 < len(kv); i += 2 {
		pairs = append(pairs, kv[i]+"="+kv[i+1])
		hasTarget = hasTarget || kv[i] == "target"
	}
	if !hasTarget {
		pairs = append(pairs, "target="+reachTarget)
	}
	slices.Sort(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

func reachableKey(host string, port int) string {
	return seriesKey("linkgate_vsphere_host_reachable", "host", host, "port", strconv.Itoa(port))
}

func reachErrorsKey(host string, port int, class Class, kind Kind) string {
	return seriesKey("linkgate_vsphere_host_probe_errors_total", "host", host, "port", strconv.Itoa(port),
		"class", string(class), "kind", string(kind))
}

// hostSeries returns the series that name host.
func hostSeries(series map[string]float64, host string) []string {
	var out []string
	for k := range series {
		if strings.Contains(k, "host="+host+",") {
			out = append(out, k)
		}
	}
	return out
}

// fakeDialer counts connects by address, fails those with an error set,
// and, while blocking, holds each until released or cancelled.
type fakeDialer struct {
	mu       sync.Mutex
	dials    map[string]int
	errs     map[string]error
	block    bool
	release  chan struct{}
	active   int
	max      int
	canceled int
	changed  chan struct{}
}

func newFakeDialer() *fakeDialer {
	return &fakeDialer{dials: map[string]int{}, errs: map[string]error{}, release: make(chan struct{}), changed: make(chan struct{})}
}

func (d *fakeDialer) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *fakeDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	if network != "tcp" {
		d.mu.Unlock()
		return nil, fmt.Errorf("network %q", network)
	}
	d.dials[addr]++
	d.active++
	d.max = max(d.max, d.active)
	block, err := d.block, d.errs[addr]
	d.notifyLocked()
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.active--
		d.notifyLocked()
		d.mu.Unlock()
	}()
	if block {
		select {
		case <-d.release:
		case <-ctx.Done():
			d.mu.Lock()
			d.canceled++
			d.mu.Unlock()
			return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
		}
	}
	if err != nil {
		return nil, err
	}
	a, b := net.Pipe()
	_ = b.Close()
	return a, nil
}

func (d *fakeDialer) set(f func(d *fakeDialer)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d)
}

// wait waits until cond holds, failing after guard.
func (d *fakeDialer) wait(t *testing.T, what string, cond func(d *fakeDialer) bool) {
	t.Helper()
	deadline := time.After(guard)
	for {
		d.mu.Lock()
		ok, ch := cond(d), d.changed
		state := fmt.Sprintf("dials %v, active %d", d.dials, d.active)
		d.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("waiting for %s: %s", what, state)
		}
	}
}

func (d *fakeDialer) count(addr string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dials[addr]
}

func refused() error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}

// noTimer fails unless clk has no timer pending.
func noTimer(t *testing.T, clk *fakeclock.Clock, why string) {
	t.Helper()
	far := clk.Now().Add(1000 * time.Hour)
	if next := clk.NextDeadline(far); !next.Equal(far) {
		t.Errorf("%s: a timer is pending for %s", why, next)
	}
}

func TestReachOptions(t *testing.T) {
	d := DefaultReachOptions("vc")
	if !slices.Equal(d.Ports, []int{443, 902}) || d.Interval != 30*time.Second || d.Concurrency != 16 || d.Target != "vc" {
		t.Errorf("DefaultReachOptions = %+v", d)
	}
	r, err := NewReach(ReachOptions{Target: "vc", Ports: []int{902}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.o.Interval != DefaultReachInterval || r.o.Timeout != DefaultReachTimeout || r.o.Concurrency != DefaultReachConcurrency {
		t.Errorf("zero options not defaulted: %+v", r.o)
	}
	for _, c := range []struct {
		field string
		o     ReachOptions
	}{
		{"Interval", ReachOptions{Interval: -time.Second}},
		{"Timeout", ReachOptions{Timeout: -1}},
		{"Concurrency", ReachOptions{Concurrency: -1}},
		{"Ports", ReachOptions{Ports: []int{0}}},
		{"Ports", ReachOptions{Ports: []int{443, 65536}}},
		{"Ports", ReachOptions{Ports: []int{443, 902, 443}}},
	} {
		_, err := NewReach(c.o, nil)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != c.field {
			t.Errorf("NewReach(%+v) = %v, want a config error on %s", c.o, err, c.field)
			continue
		}
		if class, kind := Classify(err); class != Permanent || kind != KindConfig {
			t.Errorf("%v classified %s/%s", err, class, kind)
		}
	}
}

// TestReachLoopback probes a listener and a closed port on loopback:
// reachable and refused, in the snapshot and the metrics; a host that
// leaves leaves the metrics, and one that comes back is probed at once
// and starts afresh.
func TestReachLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testkit.AcceptAll(t, ln)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open, shut := ln.Addr().(*net.TCPAddr).Port, closed.Addr().(*net.TCPAddr).Port
	_ = closed.Close()

	clk := newFakeClock()
	r := startReach(t, reachOptions(t, clk, open, shut), nil)
	const host = "127.0.0.1"
	r.SetHosts([]string{host, "", host})
	s := waitReach(t, r, "both ports probed", checked(host))
	if len(s.Hosts) != 1 || s.Target != reachTarget || !slices.Equal(s.Ports, []int{open, shut}) || s.Paused {
		t.Fatalf("snapshot: %s", showReach(s))
	}
	if p := port(t, s, host, open); !p.Reachable || p.Class != "" || p.Reason != "" || !p.Since.Equal(epoch) {
		t.Errorf("open port: %+v", p)
	}
	if p := port(t, s, host, shut); p.Reachable || p.Class != Transient || p.Kind != KindRefused || !strings.Contains(p.Reason, "refused") {
		t.Errorf("closed port: %+v", p)
	}
	h, _ := s.Host(host)
	if h.Reachable() || !strings.Contains(h.Problem(), fmt.Sprintf("port %d: refused", shut)) {
		t.Errorf("host: reachable %v, problem %q", h.Reachable(), h.Problem())
	}

	series := reachSeries(t, r)
	for k, want := range map[string]float64{
		reachableKey(host, open):                           1,
		reachableKey(host, shut):                           0,
		reachErrorsKey(host, shut, Transient, KindRefused): 1,
	} {
		if got, ok := series[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v; all: %v", k, got, ok, want, series)
		}
	}
	if len(series) != 3 {
		t.Errorf("series: %v, want 3", series)
	}
	problems, err := testutil.CollectAndLint(r)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
	text, err := testutil.CollectAndFormat(r, expfmt.TypeTextPlain)
	if err != nil {
		t.Fatal(err)
	}
	promtooltest.CheckMetrics(t, string(text))

	// The host leaves: no series of it remain.
	r.SetHosts(nil)
	waitReach(t, r, "host gone", func(s *Reachability) bool { return len(s.Hosts) == 0 })
	if got := hostSeries(reachSeries(t, r), host); len(got) > 0 {
		t.Errorf("series of a host that left: %v", got)
	}

	// It comes back: probed at once (the clock has not moved, nothing
	// else is due), counted from zero.
	r.SetHosts([]string{host})
	s = waitReach(t, r, "host back and probed", checked(host))
	if p := port(t, s, host, open); !p.Reachable {
		t.Errorf("open port after re-adding: %+v", p)
	}
	if got := reachSeries(t, r)[reachErrorsKey(host, shut, Transient, KindRefused)]; got != 1 {
		t.Errorf("errors after re-adding = %v, want 1 (a fresh start)", got)
	}
}

// TestReachCadence: a round at once for a new host, the next one an
// Interval later (jittered), none in between; a host added later is
// probed at once without disturbing the others' schedule.
func TestReachCadence(t *testing.T) {
	clk := newFakeClock()
	d := newFakeDialer()
	o := reachOptions(t, clk, 443, 902)
	o.Dialer = d.dial
	d.errs["esx-gone.example:902"] = &net.OpError{Op: "dial", Net: "tcp",
		Err: &net.DNSError{Err: "no such host", Name: "esx-gone.example", IsNotFound: true}}
	r := startReach(t, o, nil)
	r.SetHosts([]string{"esx-b", "esx-a"})
	s := waitReach(t, r, "first round", checked("esx-a", "esx-b"))
	if names := []string{s.Hosts[0].Name, s.Hosts[1].Name}; !slices.Equal(names, []string{"esx-a", "esx-b"}) {
		t.Errorf("hosts not sorted: %v", names)
	}
	for _, addr := range []string{"esx-a:443", "esx-a:902", "esx-b:443", "esx-b:902"} {
		if n := d.count(addr); n != 1 {
			t.Errorf("%s dialed %d times in the first round", addr, n)
		}
	}

	clk.WaitTimer(t, epoch.Add(30*time.Second), guard)
	clk.Advance(29 * time.Second) // fires nothing: no probe before the interval
	clk.Advance(time.Second)
	d.wait(t, "second round", func(d *fakeDialer) bool {
		return d.dials["esx-a:443"] == 2 && d.dials["esx-a:902"] == 2 && d.dials["esx-b:443"] == 2 && d.dials["esx-b:902"] == 2
	})

	// A host joining mid-interval is probed now; the others wait for
	// their time (the clock does not move here).
	clk.WaitTimer(t, epoch.Add(60*time.Second), guard)
	clk.Advance(10 * time.Second)
	r.SetHosts([]string{"esx-a", "esx-b", "esx-gone.example"})
	s = waitReach(t, r, "new host probed", checked("esx-gone.example"))
	if p := port(t, s, "esx-gone.example", 902); p.Kind != KindDNS || p.Class != Transient || p.Reachable {
		t.Errorf("a name that does not resolve: %+v", p)
	}
	if p := port(t, s, "esx-gone.example", 443); !p.Reachable || !p.Since.Equal(epoch.Add(40*time.Second)) {
		t.Errorf("new host's 443: %+v", p)
	}
	if n := d.count("esx-a:443"); n != 2 {
		t.Errorf("esx-a dialed %d times, want 2: adding a host probed the others", n)
	}

	// Each keeps its own cadence: the first two at 60s, the new one at
	// 70s.
	clk.Advance(20 * time.Second)
	d.wait(t, "third round of the first hosts", func(d *fakeDialer) bool {
		return d.dials["esx-a:443"] == 3 && d.dials["esx-b:902"] == 3
	})
	if n := d.count("esx-gone.example:443"); n != 1 {
		t.Errorf("the new host dialed %d times at 60s, want 1", n)
	}
	clk.WaitTimer(t, epoch.Add(70*time.Second), guard)
	clk.Advance(10 * time.Second)
	d.wait(t, "second round of the new host", func(d *fakeDialer) bool { return d.dials["esx-gone.example:443"] == 2 })
}

// TestReachReconnectStamp: a host whose connection stamp changed
// reconnected, even though no SetConnected saw it gone: it is probed at
// once, afresh; the same stamp again probes nothing.
func TestReachReconnectStamp(t *testing.T) {
	clk := newFakeClock()
	d := newFakeDialer()
	o := reachOptions(t, clk, 443)
	o.Dialer = d.dial
	r := startReach(t, o, nil)
	r.SetConnected(map[string]uint64{"esx-a": 7, "esx-b": 8})
	waitReach(t, r, "first round", checked("esx-a", "esx-b"))
	clk.WaitTimer(t, epoch.Add(30*time.Second), guard)

	r.SetConnected(map[string]uint64{"esx-a": 7, "esx-b": 8}) // unchanged
	r.SetConnected(map[string]uint64{"esx-a": 7, "esx-b": 9}) // esx-b reconnected
	d.wait(t, "esx-b probed again at once", func(d *fakeDialer) bool { return d.dials["esx-b:443"] == 2 })
	waitReach(t, r, "esx-b afresh", checked("esx-b"))
	if n := d.count("esx-a:443"); n != 1 {
		t.Errorf("esx-a dialed %d times, want 1: its connection did not change", n)
	}
}

// TestReachJitter: each round waits Interval ±25%, by the jitter draw.
func TestReachJitter(t *testing.T) {
	for _, c := range []struct {
		r    float64
		want time.Duration
	}{{0, 22500 * time.Millisecond}, {0.5, 30 * time.Second}, {0.75, 33750 * time.Millisecond}} {
		t.Run(strconv.FormatFloat(c.r, 'g', -1, 64), func(t *testing.T) {
			clk := newFakeClock()
			d := newFakeDialer()
			o := reachOptions(t, clk, 902)
			o.Dialer, o.Rand = d.dial, fixedRand{c.r}
			r := startReach(t, o, nil)
			r.SetHosts([]string{"esx"})
			clk.WaitTimer(t, epoch.Add(c.want), guard)
		})
	}
}

// TestReachPause: nothing is probed while the network is down, every
// host is probed the moment it returns, and connects that the outage
// interrupted count for nothing.
func TestReachPause(t *testing.T) {
	clk := newFakeClock()
	d := newFakeDialer()
	nw := newFakeNetwork(false)
	o := reachOptions(t, clk, 443, 902)
	o.Dialer = d.dial
	r := startReach(t, o, nw)
	r.SetHosts([]string{"esx"})
	s := waitReach(t, r, "paused from the start", func(s *Reachability) bool { return s.Paused && len(s.Hosts) == 1 })
	if h := s.Hosts[0]; h.Reachable() || h.Problem() != "port 443: not probed yet; port 902: not probed yet" {
		t.Errorf("unprobed host: reachable %v, problem %q", h.Reachable(), h.Problem())
	}
	noTimer(t, clk, "paused at start")
	if got := reachSeries(t, r); len(got) != 0 {
		t.Errorf("series before any probe: %v", got)
	}

	nw.set(true)
	waitReach(t, r, "probed when the network comes up", func(s *Reachability) bool { return !s.Paused && checked("esx")(s) })

	// Down mid-interval: parked, no timer; an hour passes.
	clk.WaitTimer(t, epoch.Add(30*time.Second), guard)
	clk.Advance(10 * time.Second)
	nw.set(false)
	waitReach(t, r, "paused", func(s *Reachability) bool { return s.Paused })
	noTimer(t, clk, "paused")
	clk.Advance(time.Hour)
	d.set(func(d *fakeDialer) { d.errs["esx:902"] = refused() })
	if n := d.count("esx:443"); n != 1 {
		t.Errorf("dialed %d times before the network came back, want 1", n)
	}

	// Back: probed at once, though not due by the cadence.
	nw.set(true)
	s = waitReach(t, r, "probed when the network returns", func(s *Reachability) bool {
		return !s.Paused && port(t, s, "esx", 902).Kind == KindRefused
	})
	if p := port(t, s, "esx", 443); !p.Reachable || !p.Since.Equal(epoch) {
		t.Errorf("443 after the outage: %+v", p)
	}
	resumed := clk.Now()
	if p := port(t, s, "esx", 902); !p.Since.Equal(resumed) {
		t.Errorf("902 since %s, want %s", p.Since, resumed)
	}

	// An outage under connects in flight: they are cancelled, and their
	// errors are neither shown nor counted.
	clk.WaitTimer(t, resumed.Add(30*time.Second), guard) // armed once the round is over
	d.set(func(d *fakeDialer) { d.block = true; delete(d.errs, "esx:902") })
	clk.Advance(30 * time.Second)
	d.wait(t, "connects in flight", func(d *fakeDialer) bool { return d.active == 2 })
	nw.set(false)
	waitReach(t, r, "paused again", func(s *Reachability) bool { return s.Paused })
	d.wait(t, "connects cancelled", func(d *fakeDialer) bool { return d.active == 0 && d.canceled == 2 })
	d.set(func(d *fakeDialer) { d.block = false })
	nw.set(true)
	s = waitReach(t, r, "reachable after the second outage", func(s *Reachability) bool {
		return !s.Paused && port(t, s, "esx", 902).Reachable
	})
	if p := port(t, s, "esx", 443); !p.Reachable || !p.Since.Equal(epoch) {
		t.Errorf("443 after a cancelled connect: %+v", p)
	}
	series := reachSeries(t, r)
	for k := range series {
		if strings.Contains(k, "kind="+string(KindCanceled)) {
			t.Errorf("a cancelled connect was counted: %s", k)
		}
	}
	if got := series[reachErrorsKey("esx", 902, Transient, KindRefused)]; got != 1 {
		t.Errorf("refused count %v, want 1; all: %v", got, series)
	}
}

// TestReachConcurrency: never more than Concurrency connects at once,
// and every one of them made.
func TestReachConcurrency(t *testing.T) {
	clk := newFakeClock()
	d := newFakeDialer()
	d.block = true
	o := reachOptions(t, clk, 443, 902)
	o.Dialer, o.Concurrency = d.dial, 3
	r := startReach(t, o, nil)
	var hosts []string
	for i := range 20 {
		hosts = append(hosts, fmt.Sprintf("esx-%02d", i))
	}
	r.SetHosts(hosts)
	d.wait(t, "the first connects", func(d *fakeDialer) bool { return d.active == 3 })
	for range 2 * len(hosts) {
		select {
		case d.release <- struct{}{}:
		case <-time.After(guard):
			t.Fatal("no connect waiting to be released")
		}
	}
	s := waitReach(t, r, "every host probed", checked(hosts...))
	for _, h := range s.Hosts {
		if !h.Reachable() {
			t.Errorf("%s: %s", h.Name, h.Problem())
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.max != 3 {
		t.Errorf("at most %d connects at once, want 3", d.max)
	}
	if len(d.dials) != 40 {
		t.Errorf("%d addresses dialed, want 40", len(d.dials))
	}
}

// TestReachNoPorts: an empty port list probes nothing; hosts are listed,
// reachable on every (no) port.
func TestReachNoPorts(t *testing.T) {
	clk := newFakeClock()
	d := newFakeDialer()
	o := reachOptions(t, clk)
	o.Ports, o.Dialer = []int{}, d.dial
	r := startReach(t, o, nil)
	r.SetHosts([]string{"esx"})
	s := waitReach(t, r, "host listed", func(s *Reachability) bool { return len(s.Hosts) == 1 })
	if h := s.Hosts[0]; !h.Reachable() || h.Problem() != "" || len(h.Ports) != 0 {
		t.Errorf("host without ports: %+v", h)
	}
	noTimer(t, clk, "no ports")
	if got := reachSeries(t, r); len(got) != 0 {
		t.Errorf("series without ports: %v", got)
	}
	if n := d.count("esx:443"); n != 0 {
		t.Errorf("dialed %d times without ports", n)
	}
	if err := r.Run(context.Background()); err == nil {
		t.Error("a second Run did not fail")
	}
}

// TestReachNetns probes three hosts in a network namespace from another:
// one reachable, one refusing (nothing listens), one behind a link the
// test takes down; then the pause while the (fake) network is down, and
// the immediate probe when it returns, find the link back.
func TestReachNetns(t *testing.T) {
	a := netnstest.New(t) // the hosts
	b := netnstest.New(t) // this node
	netnstest.Veth(t, a, "va", b, "vb")
	netnstest.Veth(t, a, "va2", b, "vb2")
	a.IP(t, "addr", "add", "10.99.2.1/24", "dev", "va")
	a.IP(t, "addr", "add", "10.99.2.2/24", "dev", "va")
	b.IP(t, "addr", "add", "10.99.2.10/24", "dev", "vb")
	a.IP(t, "addr", "add", "10.99.3.1/24", "dev", "va2")
	b.IP(t, "addr", "add", "10.99.3.10/24", "dev", "vb2")
	const ok, refusing, cut = "10.99.2.1", "10.99.2.2", "10.99.3.1"
	ports := []int{443, 902}

	for _, host := range []string{ok, cut} {
		for _, p := range ports {
			var ln net.Listener
			if err := a.Do(func() error {
				var err error
				ln, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			testkit.AcceptAll(t, ln)
		}
	}

	clk := newFakeClock()
	nw := newFakeNetwork(true)
	var mu sync.Mutex
	dials := map[string]int{}
	o := reachOptions(t, clk, ports...)
	o.Timeout = time.Second
	o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dials[addr]++
		mu.Unlock()
		var conn net.Conn
		err := b.Do(func() error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	dialed := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(dials)
	}
	r := startReach(t, o, nw)
	r.SetHosts([]string{ok, refusing, cut})

	s := waitReach(t, r, "first round", checked(ok, refusing, cut))
	for _, p := range ports {
		if got := port(t, s, ok, p); !got.Reachable {
			t.Errorf("%s:%d: %+v", ok, p, got)
		}
		if got := port(t, s, cut, p); !got.Reachable {
			t.Errorf("%s:%d before the cut: %+v", cut, p, got)
		}
		if got := port(t, s, refusing, p); got.Reachable || got.Class != Transient || got.Kind != KindRefused {
			t.Errorf("%s:%d: %+v, want refused", refusing, p, got)
		}
	}
	series := reachSeries(t, r)
	for k, want := range map[string]float64{
		reachableKey(ok, 902):                                 1,
		reachableKey(refusing, 443):                           0,
		reachableKey(cut, 902):                                1,
		reachErrorsKey(refusing, 902, Transient, KindRefused): 1,
	} {
		if got, present := series[k]; !present || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, present, want)
		}
	}

	// The link to the third host goes down on the far side: its
	// connects time out (or find no route to the host).
	a.IP(t, "link", "set", "va2", "down")
	clk.WaitTimer(t, epoch.Add(30*time.Second), guard)
	clk.Advance(30 * time.Second)
	s = waitReach(t, r, "the cut host unreachable", func(s *Reachability) bool {
		h, _ := s.Host(cut)
		return len(h.Ports) == 2 && !h.Ports[0].Reachable && !h.Ports[1].Reachable
	})
	for _, p := range ports {
		got := port(t, s, cut, p)
		if got.Class != Transient || (got.Kind != KindTimeout && got.Kind != KindHostUnreachable && got.Kind != KindNetUnreachable) {
			t.Errorf("%s:%d behind a down link: %+v", cut, p, got)
		}
		if !got.Since.Equal(epoch.Add(30 * time.Second)) {
			t.Errorf("%s:%d unreachable since %s", cut, p, got.Since)
		}
		t.Logf("%s:%d behind a down link: %s: %s", cut, p, got.Kind, got.Reason)
		if n := reachSeries(t, r)[reachErrorsKey(cut, p, got.Class, got.Kind)]; n != 1 {
			t.Errorf("%s:%d errors = %v, want 1", cut, p, n)
		}
		if got := port(t, s, ok, p); !got.Reachable {
			t.Errorf("%s:%d in round two: %+v", ok, p, got)
		}
	}

	// The node's network goes down: nothing is probed however long, and
	// the link returns meanwhile.
	nw.set(false)
	waitReach(t, r, "paused", func(s *Reachability) bool { return s.Paused })
	noTimer(t, clk, "paused")
	before := dialed()
	clk.Advance(time.Hour)
	a.IP(t, "link", "set", "va2", "up")
	// The kernel turns a link on asynchronously (linkwatch, up to a
	// second): make sure the path works before the probes try it.
	waitFor(t, "the path to the cut host back", func() bool {
		return b.Do(func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(cut, "443"), 100*time.Millisecond)
			if err == nil {
				_ = c.Close()
			}
			return err
		}) == nil
	})
	if after := dialed(); !maps.Equal(after, before) {
		t.Errorf("dialed while paused: %v, then %v", before, after)
	}

	// The network returns: every host probed at once (the clock does not
	// move), and the cut host is reachable again.
	nw.set(true)
	s = waitReach(t, r, "the cut host reachable after the pause", func(s *Reachability) bool {
		h, _ := s.Host(cut)
		return !s.Paused && h.Reachable()
	})
	for addr, n := range before {
		waitFor(t, addr+" probed again", func() bool { return dialed()[addr] == n+1 })
	}
	if got := port(t, s, cut, 443).Since; !got.Equal(clk.Now()) {
		t.Errorf("reachable since %s, want %s", got, clk.Now())
	}

	// Two hosts leave the inventory: their series go with them.
	r.SetHosts([]string{ok})
	waitReach(t, r, "one host left", func(s *Reachability) bool { return len(s.Hosts) == 1 })
	series = reachSeries(t, r)
	for _, h := range []string{refusing, cut} {
		if got := hostSeries(series, h); len(got) > 0 {
			t.Errorf("series of %s after it left: %v", h, got)
		}
	}
	if len(hostSeries(series, ok)) != 2 {
		t.Errorf("series of %s: %v", ok, series)
	}
}

// waitFor polls cond, failing after guard.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
