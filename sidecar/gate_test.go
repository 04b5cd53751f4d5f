package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/probe"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func pair(t *testing.T) (*netnstest.NS, *netnstest.NS) {
	a, b := netnstest.New(t), netnstest.New(t)
	netnstest.Veth(t, a, "va", b, "vb")
	return a, b
}

func TestReadyOnlyWhenLinksAndVCenterGood(t *testing.T) {
	a, b := pair(t)
	c := startCollector(t, a, "va")
	vc := newFakeVCenter(vcRefused())
	checks, err := Checks(Config{VCenter: true})
	if err != nil {
		t.Fatal(err)
	}
	g := startGate(t, GateOptions{Snapshots: c, VCenter: vc, Checks: checks})
	h := NewHandler(g, HandlerOptions{})
	t.Cleanup(h.Close)

	// A new veth reaches operstate up shortly after creation (linkwatch).
	waitState(t, g, "links ok, vcenter failing", func(st *State) bool {
		l, ok := st.Check(CheckLinks)
		return ok && l.OK && checkFails(CheckVCenter, "connection refused")(st)
	})
	code, body := get(t, h, "/ready?verbose")
	if want := "[+]links ok\n[-]vcenter failed: transient: refused: connection refused\nreadyz check failed\n"; code != http.StatusServiceUnavailable || body != want {
		t.Errorf("vCenter down: %d %q, want 503 %q", code, body, want)
	}

	vc.set(vcUp(time.Now()))
	waitState(t, g, "ready", isReady)
	if code, body := get(t, h, "/ready"); code != http.StatusOK || body != "ok" {
		t.Errorf("all good: %d %q, want 200 ok", code, body)
	}

	a.IP(t, "link", "set", "va", "down")
	waitState(t, g, "links failing", checkFails(CheckLinks, "va: administratively down"))
	code, body = get(t, h, "/ready")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]links failed: va: administratively down\n") ||
		!strings.Contains(body, "[+]vcenter ok\n") {
		t.Errorf("link down: %d %q", code, body)
	}

	// Carrier loss on the peer's side, the realistic outage.
	a.IP(t, "link", "set", "va", "up")
	waitState(t, g, "ready again", isReady)
	b.IP(t, "link", "set", "vb", "down")
	st := waitState(t, g, "no carrier", checkFails(CheckLinks, "va: no carrier"))
	if st.Ready {
		t.Error("gate ready without carrier")
	}
}

func TestAutoRequiredFollowsRouteChange(t *testing.T) {
	a, b1, b2 := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	netnstest.Veth(t, a, "va1", b1, "vb1")
	netnstest.Veth(t, a, "va2", b2, "vb2")
	a.IP(t, "addr", "add", "10.82.1.1/24", "dev", "va1")
	a.IP(t, "addr", "add", "10.82.2.1/24", "dev", "va2")
	b1.IP(t, "addr", "add", "10.82.1.2/24", "dev", "vb1")
	b2.IP(t, "addr", "add", "10.82.2.2/24", "dev", "vb2")
	a.IP(t, "route", "add", "192.0.2.10/32", "via", "10.82.1.2", "dev", "va1")

	c := startCollector(t, a) // required_interfaces: auto starts with none
	path := PathOptions{Targets: []string{"https://192.0.2.10/sdk"}, Routes: c}
	auto, err := NewAutoRequired(path, c, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	run(t, auto.Run)
	checks, err := Checks(Config{Path: path, VCenter: true})
	if err != nil {
		t.Fatal(err)
	}
	g := startGate(t, GateOptions{Snapshots: c, VCenter: newFakeVCenter(vcUp(time.Now())), Checks: checks})

	requires := func(names ...string) func(*collector.Snapshot) bool {
		return func(s *collector.Snapshot) bool { return slices.Equal(s.Network.Required, names) }
	}
	waitSnapshot(t, c, "required = va1", requires("va1"))
	waitState(t, g, "ready via va1", isReady)

	a.IP(t, "route", "replace", "192.0.2.10/32", "via", "10.82.2.2", "dev", "va2")
	waitSnapshot(t, c, "required = va2", requires("va2"))

	// va1 no longer matters; va2 does.
	b1.IP(t, "link", "set", "vb1", "down")
	waitSnapshot(t, c, "va1 without carrier", func(s *collector.Snapshot) bool {
		l, ok := s.LinkByName("va1")
		return ok && !l.Up
	})
	waitState(t, g, "ready via va2 while va1 is down", isReady)
	b2.IP(t, "link", "set", "vb2", "down")
	st := waitState(t, g, "links failing on va2", checkFails(CheckLinks, "va2: no carrier"))
	if c, _ := st.Check(CheckPath); c.OK {
		t.Errorf("path check passes with its egress link down: %+v", c)
	}
}

// hostResolver resolves from a map.
type hostResolver map[string][]netip.Addr

func (r hostResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("lookup %s: no such host", host)
}

func TestPathCheckFollowsKernelRoute(t *testing.T) {
	a, b := pair(t)
	a.IP(t, "addr", "add", "10.84.0.1/24", "dev", "va")
	b.IP(t, "addr", "add", "10.84.0.2/24", "dev", "vb")
	a.IP(t, "route", "add", "192.0.2.10/32", "via", "10.84.0.2", "dev", "va")
	c := startCollector(t, a)
	check, err := PathCheck(PathOptions{
		Targets:  []string{"https://administrator:s3cret@vc.example/sdk"},
		Routes:   c,
		Resolver: hostResolver{"vc.example": {netip.MustParseAddr("192.0.2.10")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	g := startGate(t, GateOptions{Snapshots: c, Checks: []Check{LinksCheck(), check}})
	waitState(t, g, "ready", isReady)

	// The kernel announces FAILED only for an entry that was valid, as
	// when a gateway stops answering ARP.
	a.IP(t, "neigh", "replace", "10.84.0.2", "dev", "va", "lladdr", "02:00:00:00:00:02", "nud", "reachable")
	waitSnapshot(t, c, "gateway neighbour", func(s *collector.Snapshot) bool { return len(s.Neighbors) > 0 })
	a.IP(t, "neigh", "replace", "10.84.0.2", "dev", "va", "nud", "failed")
	st := waitState(t, g, "gateway FAILED", checkFails(CheckPath, "vc.example [192.0.2.10]: gateway 10.84.0.2 on va is FAILED"))
	if strings.Contains(fmt.Sprint(st.Checks), "s3cret") {
		t.Errorf("reason leaks URL credentials: %v", st.Checks)
	}
	a.IP(t, "neigh", "replace", "10.84.0.2", "dev", "va", "lladdr", "02:00:00:00:00:02", "nud", "permanent")
	waitState(t, g, "gateway reachable again", isReady)

	a.IP(t, "route", "del", "192.0.2.10/32")
	waitState(t, g, "no route", checkFails(CheckPath, "no route: network is unreachable"))
}

func TestFlapDamping(t *testing.T) {
	a, _ := pair(t)
	c := startCollector(t, a, "va")
	clk := newFakeClock()
	const stable = 10 * time.Second
	g := startGate(t, GateOptions{Snapshots: c, Checks: []Check{LinksCheck()}, StableFor: stable, Clock: clk})

	t0 := clk.Now()
	st := waitState(t, g, "links ok, damping", func(s *State) bool { return s.Version > 0 && len(s.Failing()) == 0 })
	if st.Ready || !st.ReadyAt.Equal(t0.Add(stable)) {
		t.Fatalf("first ok: ready=%v readyAt=%v, want not ready until %v", st.Ready, st.ReadyAt, t0.Add(stable))
	}
	clk.WaitTimer(t, t0.Add(stable), hang)
	clk.Advance(6 * time.Second)

	// A flap restarts the damping period from the recovery.
	a.IP(t, "link", "set", "va", "down")
	waitState(t, g, "links failing", checkFails(CheckLinks, "va"))
	clk.Advance(time.Second)
	a.IP(t, "link", "set", "va", "up")
	recovered := t0.Add(7 * time.Second)
	st = waitState(t, g, "links ok again", func(s *State) bool { return len(s.Failing()) == 0 && !s.ReadyAt.IsZero() })
	if st.Ready || !st.ReadyAt.Equal(recovered.Add(stable)) {
		t.Fatalf("after flap: ready=%v readyAt=%v, want not ready until %v", st.Ready, st.ReadyAt, recovered.Add(stable))
	}
	clk.WaitTimer(t, recovered.Add(stable), hang)
	clk.Advance(9 * time.Second) // past the first deadline, short of the second
	clk.Advance(time.Second)
	st = waitState(t, g, "ready after stable-for", isReady)
	if !st.Since.Equal(recovered.Add(stable)) {
		t.Errorf("ready since %v, want %v", st.Since, recovered.Add(stable))
	}

	// Down is immediate: no clock movement needed.
	a.IP(t, "link", "set", "va", "down")
	st = waitState(t, g, "not ready at once", isNotReady)
	if !st.Since.Equal(clk.Now()) {
		t.Errorf("not ready since %v, want %v", st.Since, clk.Now())
	}

	want := fmt.Sprintf(`
# HELP linkgate_ready Whether the readiness gate is ready: every check has held for the stable-for period.
# TYPE linkgate_ready gauge
linkgate_ready 0
# HELP linkgate_ready_check Whether each readiness check currently holds (before flap damping).
# TYPE linkgate_ready_check gauge
linkgate_ready_check{check="links"} 0
# HELP linkgate_ready_last_change_timestamp_seconds Unix time of the last readiness gate transition (or of the gate's start).
# TYPE linkgate_ready_last_change_timestamp_seconds gauge
linkgate_ready_last_change_timestamp_seconds %s
# HELP linkgate_ready_transitions_total Transitions of the readiness gate, by new state.
# TYPE linkgate_ready_transitions_total counter
linkgate_ready_transitions_total{to="not_ready"} 1
linkgate_ready_transitions_total{to="ready"} 1
`, strconv.FormatFloat(float64(clk.Now().Unix()), 'g', -1, 64))
	if err := testutil.CollectAndCompare(g, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// fakeRoutes answers RouteGet from a map.
type fakeRoutes map[netip.Addr]collector.Route

func (f fakeRoutes) RouteGet(_ context.Context, dst netip.Addr) (collector.Route, error) {
	if r, ok := f[dst]; ok {
		return r, nil
	}
	return collector.Route{}, errors.New("network is unreachable")
}

func TestPathCheckReasons(t *testing.T) {
	snap := healthySnapshot().s
	snap.Links = append(snap.Links, collector.Link{Index: 3, Name: "eth1", AdminUp: true, OperState: collector.OperDown})
	vc1, vc2, vc3 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::3")
	routes := fakeRoutes{
		vc1: {Type: collector.RouteUnicast, LinkIndex: 2},
		vc2: {Type: collector.RouteUnicast, LinkIndex: 3},
		vc3: {Type: 6},
	}
	for _, tc := range []struct {
		target, want string
		egress       []string
	}{
		{"192.0.2.1", "", []string{"eth0"}},
		{"https://192.0.2.2:443/sdk", "192.0.2.2: egress link eth1: no carrier (operstate down)", []string{"eth1"}},
		{"[2001:db8::3]:443", "2001:db8::3: route is blackhole", nil},
		{"two.example", "", []string{"eth0"}}, // first address fails, second is good
		{"gone.example", "gone.example: resolve: lookup gone.example: no such host", nil},
	} {
		opts := PathOptions{Targets: []string{tc.target}, Routes: routes, Resolver: hostResolver{"two.example": {vc2, vc1}}}
		check, err := PathCheck(opts)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if err := check.Check(context.Background(), &Input{Snapshot: snap, Now: time.Now()}); err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%s: reason %q, want %q", tc.target, got, tc.want)
		}
		f, _ := newPathFinder(opts)
		if e := egress(f.trace(context.Background(), snap, time.Now())); !slices.Equal(e, tc.egress) {
			t.Errorf("%s: egress %v, want %v", tc.target, e, tc.egress)
		}
	}
	if _, err := PathCheck(PathOptions{Targets: []string{"https://user:pw@/sdk"}, Routes: routes}); err == nil || strings.Contains(err.Error(), "pw") {
		t.Errorf("bad target: %v", err)
	}
}

func TestVCenterCheck(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	check := VCenterCheck(90 * time.Second)
	for _, tc := range []struct {
		name      string
		status    []probe.Status
		want      string
		permanent bool
		recheck   time.Time
	}{
		{"none", nil, "no vCenter probe results yet", false, time.Time{}},
		{"fresh", []probe.Status{{Target: "vc", Up: true, LastSuccess: now.Add(-time.Minute)}}, "", false, now.Add(30 * time.Second)},
		{"stale", []probe.Status{{Target: "vc", Up: true, LastSuccess: now.Add(-2 * time.Minute)}}, "stale: no successful probe within 1m30s", false, time.Time{}},
		{"refused", []probe.Status{vcRefused()}, "transient: refused: connection refused", false, time.Time{}},
		{"permanent", []probe.Status{{Target: "vc", Class: "permanent", Kind: "auth", Reason: "incorrect user name or password", Permanent: true}},
			"permanent: auth: incorrect user name or password", true, time.Time{}},
		{"paused", []probe.Status{{Target: "vc", Paused: true, Reason: "network down"}}, "probe paused: network down", false, time.Time{}},
		// The prober still counts a target up during its fast retries; the
		// gate does not: the last probe failed.
		{"retrying", []probe.Status{{Target: "vc", Up: true, LastSuccess: now.Add(-time.Second), Class: "transient", Kind: "refused", Reason: "connection refused"}},
			"transient: refused: connection refused", false, time.Time{}},
		{"two targets", []probe.Status{vcUp(now), {Target: "https://u:p@vc2.example/sdk", Class: "permanent", Kind: "tls_certificate", Reason: "certificate pin mismatch"}},
			"https://vc2.example/sdk: permanent: tls_certificate: certificate pin mismatch", false, now.Add(90 * time.Second)},
	} {
		in := &Input{VCenter: tc.status, Now: now}
		err := check.Check(context.Background(), in)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want || errors.Is(err, ErrPermanent) != tc.permanent || !in.recheck.Equal(tc.recheck) {
			t.Errorf("%s: %q permanent=%v recheck=%v, want %q %v %v", tc.name, got, errors.Is(err, ErrPermanent), in.recheck, tc.want, tc.permanent, tc.recheck)
		}
	}
}

func TestVCenterFreshnessExpiresWithoutSignal(t *testing.T) {
	clk := newFakeClock()
	vc := newFakeVCenter(vcUp(clk.Now()))
	g := startGate(t, GateOptions{Snapshots: healthySnapshot(), VCenter: vc, Checks: []Check{LinksCheck(), VCenterCheck(time.Minute)}, Clock: clk})
	waitState(t, g, "ready", isReady)
	clk.WaitTimer(t, clk.Now().Add(time.Minute), hang)
	clk.Advance(time.Minute)
	waitState(t, g, "stale", checkFails(CheckVCenter, "stale"))
}

func TestNetworkChecks(t *testing.T) {
	s := healthySnapshot().s
	s.Addresses = []collector.Address{
		{LinkIndex: 2, Family: collector.FamilyIPv4, Prefix: netip.MustParsePrefix("10.0.0.5/24")},
		{LinkIndex: 2, Family: collector.FamilyIPv6, Prefix: netip.MustParsePrefix("fe80::1/64"), Scope: 253},
	}
	s.Routes = []collector.Route{
		{Family: collector.FamilyIPv4, Table: collector.TableMain, Dst: netip.MustParsePrefix("0.0.0.0/0"), LinkIndex: 2, Type: collector.RouteUnicast},
		{Family: collector.FamilyIPv6, Table: collector.TableMain, Dst: netip.MustParsePrefix("::/0"), Type: 6},
	}
	both := []collector.Family{collector.FamilyIPv4, collector.FamilyIPv6}
	for _, tc := range []struct {
		check Check
		want  string
	}{
		{AddressesCheck(collector.FamilyIPv4), ""},
		{AddressesCheck(both...), "eth0: no global inet6 address"},
		{DefaultRouteCheck(collector.FamilyIPv4), ""},
		{DefaultRouteCheck(both...), "no inet6 default route in the main table"},
		{LinksCheck(), ""},
	} {
		got := ""
		if err := tc.check.Check(context.Background(), &Input{Snapshot: s}); err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.check.Name(), got, tc.want)
		}
	}
	if err := LinksCheck().Check(context.Background(), &Input{Snapshot: &collector.Snapshot{}}); err == nil {
		t.Error("links check passes before the first dump")
	}
}

func TestCheckReport(t *testing.T) {
	checks, err := Checks(Config{Addresses: []collector.Family{collector.FamilyIPv4}, VCenter: true})
	if err != nil {
		t.Fatal(err)
	}
	checks = append(checks, NewCheck("boom", func(context.Context, *Input) error { panic("bug") }))
	r := Evaluate(context.Background(), checks, &Input{Snapshot: healthySnapshot().s, VCenter: []probe.Status{
		{Target: "vc", Class: "permanent", Kind: "auth", Reason: "bad\npassword", Permanent: true},
	}})
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	want := `NAME       STATUS  REASON
links      ok      
addresses  failed  eth0: no global inet address
vcenter    failed  permanent: auth: bad password
boom       failed  check panicked: bug
`
	if r.Ready || b.String() != want {
		t.Errorf("ready=%v table:\n%s\nwant:\n%s", r.Ready, b.String(), want)
	}
	if !r.Checks[2].Permanent || r.Checks[1].Permanent {
		t.Errorf("permanent flags: %+v", r.Checks)
	}
}

func TestNewGateRejectsBadChecks(t *testing.T) {
	for _, checks := range [][]Check{
		{LinksCheck(), LinksCheck()},
		{NewCheck("a/b", nil)},
		{NewCheck("", nil)},
	} {
		if _, err := NewGate(GateOptions{Snapshots: healthySnapshot(), Checks: checks}); err == nil {
			t.Errorf("NewGate accepted %v", checks)
		}
	}
}

func TestMetricsLint(t *testing.T) {
	g, err := NewGate(GateOptions{Snapshots: healthySnapshot(), Checks: []Check{LinksCheck(), VCenterCheck(0)}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWebhooks(g, WebhookOptions{Hooks: []Webhook{{URL: "https://hooks.example/x"}}})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	for _, c := range []prometheus.Collector{g, w} {
		problems, err := testutil.CollectAndLint(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("pedantic gather: %v", err)
	}
}

// countingResolver counts lookups and fails when told to.
type countingResolver struct {
	lookups int
	fail    bool
	addrs   []netip.Addr
}

func (r *countingResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	r.lookups++
	if r.fail {
		return nil, errors.New("lookup vc.example: server misbehaving")
	}
	return r.addrs, nil
}

func TestPathResolutionCache(t *testing.T) {
	snap := healthySnapshot().s
	vc := netip.MustParseAddr("192.0.2.1")
	res := &countingResolver{addrs: []netip.Addr{vc}}
	check, err := PathCheck(PathOptions{
		Targets: []string{"vc.example:443"}, Routes: fakeRoutes{vc: {Type: collector.RouteUnicast, LinkIndex: 2}},
		Resolver: res, ResolveTTL: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	eval := func(at time.Duration) error {
		return check.Check(context.Background(), &Input{Snapshot: snap, Now: now.Add(at)})
	}
	for _, at := range []time.Duration{0, 30 * time.Second} {
		if err := eval(at); err != nil {
			t.Fatal(err)
		}
	}
	if res.lookups != 1 {
		t.Errorf("%d lookups within the TTL, want 1", res.lookups)
	}
	// DNS fails after the TTL: the known address is kept, and the lookup
	// is retried only after the failure TTL.
	res.fail = true
	if err := eval(61 * time.Second); err != nil {
		t.Errorf("DNS failure with a known address: %v", err)
	}
	if err := eval(62 * time.Second); err != nil || res.lookups != 2 {
		t.Errorf("within the failure TTL: %v, %d lookups, want nil, 2", err, res.lookups)
	}
	if err := eval(67 * time.Second); err != nil || res.lookups != 3 {
		t.Errorf("after the failure TTL: %v, %d lookups, want nil, 3", err, res.lookups)
	}

	never := &countingResolver{fail: true}
	check, _ = PathCheck(PathOptions{Targets: []string{"vc.example"}, Routes: fakeRoutes{}, Resolver: never})
	if err := check.Check(context.Background(), &Input{Snapshot: snap, Now: now}); err == nil ||
		err.Error() != "vc.example: resolve: lookup vc.example: server misbehaving" {
		t.Errorf("never resolved: %v", err)
	}
}

func TestChecksComposition(t *testing.T) {
	fams, err := ParseFamilies("both")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFamilies("ipx"); err == nil {
		t.Error("ParseFamilies accepted ipx")
	}
	checks, err := Checks(Config{
		Addresses: fams, DefaultRoute: fams, VCenter: true,
		Path: PathOptions{Targets: []string{"192.0.2.1"}, Routes: fakeRoutes{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGate(GateOptions{Snapshots: healthySnapshot(), Checks: checks})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(g.CheckNames(), ","); got != "links,addresses,default-route,path,vcenter" {
		t.Errorf("check order %s", got)
	}
	if _, err := Checks(Config{Path: PathOptions{Targets: []string{"vc"}}}); err == nil {
		t.Error("path check without a route lookup")
	}

	// With no required interfaces, one up link with the address suffices.
	s := healthySnapshot().s
	s.Network.Required = nil
	in := &Input{Snapshot: s}
	if err := AddressesCheck(collector.FamilyIPv4).Check(context.Background(), in); err == nil ||
		err.Error() != "no up link has a global inet address" {
		t.Errorf("no address anywhere: %v", err)
	}
	s.Addresses = []collector.Address{{LinkIndex: 2, Family: collector.FamilyIPv4, Prefix: netip.MustParsePrefix("10.0.0.5/24")}}
	if err := AddressesCheck(collector.FamilyIPv4).Check(context.Background(), in); err != nil {
		t.Errorf("address on eth0: %v", err)
	}
}

// An IPv6 address still in (or failed) duplicate address detection cannot
// be used, so it does not satisfy the addresses check.
func TestTentativeAddressDoesNotCount(t *testing.T) {
	snap := healthySnapshot().s
	check := AddressesCheck(collector.FamilyIPv6)
	for _, tc := range []struct {
		flags uint32
		ok    bool
	}{
		{0, true},
		{collector.AddrFlagTentative, false},
		{collector.AddrFlagDADFailed | collector.AddrFlagTentative, false},
	} {
		s := *snap
		s.Addresses = []collector.Address{{LinkIndex: 2, Family: collector.FamilyIPv6,
			Prefix: netip.MustParsePrefix("2001:db8::1/64"), Flags: tc.flags}}
		err := check.Check(context.Background(), &Input{Snapshot: &s})
		if (err == nil) != tc.ok {
			t.Errorf("flags %#x: %v, want ok=%v", tc.flags, err, tc.ok)
		}
	}
}

// TestCheckNames: the names come from the same composition as Checks,
// in report order, and need no routes.
func TestCheckNames(t *testing.T) {
	cfg := Config{Addresses: []collector.Family{collector.FamilyIPv4}, Path: PathOptions{Targets: []string{"vc.example"}}, VCenter: true}
	if got, want := CheckNames(cfg), []string{CheckLinks, CheckAddresses, CheckPath, CheckVCenter}; !slices.Equal(got, want) {
		t.Errorf("CheckNames = %v, want %v", got, want)
	}
	cfg.NoLinks, cfg.Path = true, PathOptions{}
	checks, err := Checks(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var built []string
	for _, c := range checks {
		built = append(built, c.Name())
	}
	if got := CheckNames(cfg); !slices.Equal(got, built) || !slices.Equal(got, []string{CheckAddresses, CheckVCenter}) {
		t.Errorf("CheckNames = %v, Checks built %v", got, built)
	}
}
