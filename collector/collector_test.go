package collector

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/mdlayher/netlink"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout guards against hangs only; nothing asserts on elapsed time.
const waitTimeout = 20 * time.Second

// start runs a collector on ns until the test (or benchmark) ends and waits
// for its first dump.
func start(t testing.TB, ns *netnstest.NS, opts Options, tweak ...func(*Collector)) *Collector {
	t.Helper()
	opts.NetNS = ns.Path
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tweak {
		f(c)
	}
	stop, err := c.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

// waitFor blocks on the change signal until cond holds for the current
// snapshot, then returns it.
func waitFor(t *testing.T, c *Collector, what string, cond func(*Snapshot) bool) *Snapshot {
	t.Helper()
	return testkit.Follow(t, what, waitTimeout, c.Snapshot, (*Snapshot).Changed, cond)
}

func linkUp(name string, up bool) func(*Snapshot) bool {
	return func(s *Snapshot) bool {
		l, ok := s.LinkByName(name)
		return ok && l.Up == up
	}
}

// compare checks the exposition text of the named metrics.
func compare(t *testing.T, c *Collector, want string, names ...string) {
	t.Helper()
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

// exposition renders the named metrics as text.
func exposition(t *testing.T, c *Collector, names ...string) string {
	t.Helper()
	b, err := testutil.CollectAndFormat(c, expfmt.TypeTextPlain, names...)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func pair(t *testing.T) (*netnstest.NS, *netnstest.NS) {
	a, b := netnstest.New(t), netnstest.New(t)
	netnstest.Veth(t, a, "va", b, "vb")
	return a, b
}

func TestLinkDownUp(t *testing.T) {
	a, _ := pair(t)
	c := start(t, a, Options{Required: []string{"va"}})
	waitFor(t, c, "va up", linkUp("va", true))
	compare(t, c, `
# HELP linkgate_link_up Whether the link can carry traffic: operstate up, or unknown with admin up and carrier (operstates.rst).
# TYPE linkgate_link_up gauge
linkgate_link_up{device="lo"} 1
linkgate_link_up{device="va"} 1
# HELP linkgate_network_up Whether the required network is up: all required interfaces up, or with none required any non-loopback link.
# TYPE linkgate_network_up gauge
linkgate_network_up 1
`, "linkgate_link_up", "linkgate_network_up")

	a.IP(t, "link", "set", "va", "down")
	waitFor(t, c, "va down", linkUp("va", false))
	compare(t, c, `
# HELP linkgate_link_admin_up Whether the link is administratively up (IFF_UP).
# TYPE linkgate_link_admin_up gauge
linkgate_link_admin_up{device="lo"} 1
linkgate_link_admin_up{device="va"} 0
# HELP linkgate_link_transitions_total Up/down transitions of linkgate_link_up seen in rtnetlink events since start.
# TYPE linkgate_link_transitions_total counter
linkgate_link_transitions_total{device="lo",to="down"} 0
linkgate_link_transitions_total{device="lo",to="up"} 0
linkgate_link_transitions_total{device="va",to="down"} 1
linkgate_link_transitions_total{device="va",to="up"} 0
# HELP linkgate_network_outages_total Number of times the required network went down (including being down at start).
# TYPE linkgate_network_outages_total counter
linkgate_network_outages_total 1
# HELP linkgate_network_up Whether the required network is up: all required interfaces up, or with none required any non-loopback link.
# TYPE linkgate_network_up gauge
linkgate_network_up 0
`, "linkgate_link_admin_up", "linkgate_link_transitions_total", "linkgate_network_up", "linkgate_network_outages_total")
	if got := exposition(t, c, "linkgate_link_oper_state"); !strings.Contains(got, `linkgate_link_oper_state{device="va",state="down"} 1`) {
		t.Errorf("oper state after down:\n%s", got)
	}

	a.IP(t, "link", "set", "va", "up")
	s := waitFor(t, c, "va up again", linkUp("va", true))
	if !s.Network.Up || s.Network.Outages != 1 || s.Network.LastOutage <= 0 {
		t.Errorf("network status after recovery: %+v", s.Network)
	}
	got := exposition(t, c, "linkgate_link_transitions_total")
	if !strings.Contains(got, `linkgate_link_transitions_total{device="va",to="up"} 1`) {
		t.Errorf("transitions after up:\n%s", got)
	}
}

func TestCarrierLossOnPeer(t *testing.T) {
	a, b := pair(t)
	c := start(t, a, Options{Required: []string{"va"}})
	waitFor(t, c, "va up", linkUp("va", true))

	b.IP(t, "link", "set", "vb", "down")
	waitFor(t, c, "va without carrier", func(s *Snapshot) bool {
		l, ok := s.LinkByName("va")
		return ok && !l.Carrier
	})
	compare(t, c, `
# HELP linkgate_link_admin_up Whether the link is administratively up (IFF_UP).
# TYPE linkgate_link_admin_up gauge
linkgate_link_admin_up{device="lo"} 1
linkgate_link_admin_up{device="va"} 1
# HELP linkgate_link_carrier Whether the link has carrier (IFLA_CARRIER).
# TYPE linkgate_link_carrier gauge
linkgate_link_carrier{device="lo"} 1
linkgate_link_carrier{device="va"} 0
# HELP linkgate_link_up Whether the link can carry traffic: operstate up, or unknown with admin up and carrier (operstates.rst).
# TYPE linkgate_link_up gauge
linkgate_link_up{device="lo"} 1
linkgate_link_up{device="va"} 0
`, "linkgate_link_admin_up", "linkgate_link_carrier", "linkgate_link_up")

	b.IP(t, "link", "set", "vb", "up")
	waitFor(t, c, "carrier back", linkUp("va", true))
	s := c.Snapshot()
	if l, _ := s.LinkByName("va"); l.CarrierChanges < 2 {
		t.Errorf("carrier changes = %d, want >= 2", l.CarrierChanges)
	}
}

func TestAddressesRoutesNeighbours(t *testing.T) {
	a, b := pair(t)
	c := start(t, a, Options{})
	b.IP(t, "addr", "add", "10.77.0.2/24", "dev", "vb")

	a.IP(t, "addr", "add", "10.77.0.1/24", "dev", "va")
	waitFor(t, c, "address", func(s *Snapshot) bool {
		return len(s.DefaultRoutes(FamilyIPv4)) == 0 && hasAddr(s, "va", "10.77.0.1/24")
	})
	got := exposition(t, c, "linkgate_link_addresses")
	if !strings.Contains(got, `linkgate_link_addresses{device="va",family="inet",scope="global"} 1`) {
		t.Errorf("addresses:\n%s", got)
	}

	a.IP(t, "route", "add", "default", "via", "10.77.0.2", "dev", "va")
	waitFor(t, c, "default route", func(s *Snapshot) bool { return len(s.DefaultRoutes(FamilyIPv4)) == 1 })
	compare(t, c, `
# HELP linkgate_route_default Number of default routes in the main table by family.
# TYPE linkgate_route_default gauge
linkgate_route_default{family="inet"} 1
linkgate_route_default{family="inet6"} 0
`, "linkgate_route_default")
	r := c.Snapshot().DefaultRoutes(FamilyIPv4)[0]
	if r.Gateway.String() != "10.77.0.2" {
		t.Errorf("default route gateway = %v", r.Gateway)
	}

	a.IP(t, "neigh", "add", "10.77.0.9", "lladdr", "02:00:00:00:00:09", "dev", "va", "nud", "permanent")
	waitFor(t, c, "permanent neighbour", neighIs("10.77.0.9", NeighPermanent))
	if got := exposition(t, c, "linkgate_neighbors"); !strings.Contains(got, `linkgate_neighbors{device="va",state="permanent"} 1`) {
		t.Errorf("neighbours:\n%s", got)
	}
	a.IP(t, "neigh", "replace", "10.77.0.9", "lladdr", "02:00:00:00:00:09", "dev", "va", "nud", "stale")
	waitFor(t, c, "stale neighbour", neighIs("10.77.0.9", NeighStale))
	a.IP(t, "neigh", "del", "10.77.0.9", "dev", "va")
	waitFor(t, c, "neighbour gone", func(s *Snapshot) bool {
		for _, n := range s.Neighbors {
			if n.IP.String() == "10.77.0.9" {
				return false
			}
		}
		return true
	})

	a.IP(t, "route", "del", "default")
	waitFor(t, c, "default route gone", func(s *Snapshot) bool { return len(s.DefaultRoutes(FamilyIPv4)) == 0 })
	a.IP(t, "addr", "del", "10.77.0.1/24", "dev", "va")
	waitFor(t, c, "address gone", func(s *Snapshot) bool { return !hasAddr(s, "va", "10.77.0.1/24") })
	if got := exposition(t, c, "linkgate_link_addresses"); strings.Contains(got, `device="va",family="inet",`) {
		t.Errorf("stale address series:\n%s", got)
	}
}

func TestDeleteAndRename(t *testing.T) {
	a, _ := pair(t)
	c := start(t, a, Options{})
	a.IP(t, "link", "set", "va", "down")
	a.IP(t, "link", "set", "va", "name", "vrenamed", "alias", "uplink to vcenter")
	a.IP(t, "link", "set", "vrenamed", "up")
	waitFor(t, c, "renamed link", func(s *Snapshot) bool {
		_, old := s.LinkByName("va")
		l, ok := s.LinkByName("vrenamed")
		return !old && ok && l.Up && l.Alias != ""
	})
	got := exposition(t, c, "linkgate_link_info", "linkgate_link_up")
	if strings.Contains(got, `device="va"`) || !strings.Contains(got, `linkgate_link_info{address=`) ||
		!strings.Contains(got, `alias="uplink to vcenter",device="vrenamed",kind="veth"} 1`) {
		t.Errorf("after rename:\n%s", got)
	}

	a.IP(t, "link", "del", "vrenamed")
	waitFor(t, c, "link deleted", func(s *Snapshot) bool { _, ok := s.LinkByName("vrenamed"); return !ok })
	if got := exposition(t, c); strings.Contains(got, "vrenamed") {
		t.Errorf("stale series after delete:\n%s", got)
	}
}

func TestPollingFallback(t *testing.T) {
	a, _ := pair(t)
	c := start(t, a, Options{PollInterval: 50 * time.Millisecond}, func(c *Collector) {
		c.dialEvents = func(*netlink.Config) (*netlink.Conn, error) {
			return nil, &netlink.OpError{Op: "bind", Err: unix.EPERM}
		}
	})
	a.IP(t, "link", "set", "va", "down")
	waitFor(t, c, "va down while polling", linkUp("va", false))
	compare(t, c, `
# HELP linkgate_netlink_mode How kernel state is followed: events (multicast) or polling (fallback); 1 for the current mode.
# TYPE linkgate_netlink_mode gauge
linkgate_netlink_mode{mode="events"} 0
linkgate_netlink_mode{mode="polling"} 1
`, "linkgate_netlink_mode")
	if !c.Alive() {
		t.Error("polling collector should be alive")
	}
}

func TestReconnectAfterSocketError(t *testing.T) {
	a, _ := pair(t)
	var mu sync.Mutex
	var conns []*netlink.Conn
	c := start(t, a, Options{}, func(c *Collector) {
		c.dialEvents = func(cfg *netlink.Config) (*netlink.Conn, error) {
			conn, err := netlink.Dial(unix.NETLINK_ROUTE, cfg)
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			return conn, err
		}
	})
	// Break the event socket underneath the loop.
	mu.Lock()
	conns[0].Close()
	mu.Unlock()
	a.IP(t, "link", "set", "va", "mtu", "1400")
	waitFor(t, c, "mtu change after reconnect", func(s *Snapshot) bool {
		l, ok := s.LinkByName("va")
		return ok && l.MTU == 1400
	})
	if got := exposition(t, c, "linkgate_netlink_resyncs_total"); !strings.Contains(got, `linkgate_netlink_resyncs_total{reason="reconnect"} 1`) {
		t.Errorf("resyncs:\n%s", got)
	}
}

func TestMetricsLint(t *testing.T) {
	a, b := pair(t)
	b.IP(t, "addr", "add", "10.78.0.2/24", "dev", "vb")
	a.IP(t, "addr", "add", "10.78.0.1/24", "dev", "va")
	c := start(t, a, Options{Required: []string{"va", "missing0"}})
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("pedantic gather: %v", err)
	}
	got := exposition(t, c, "linkgate_network_required_interface_up", "linkgate_network_up")
	for _, want := range []string{
		`linkgate_network_required_interface_up{device="missing0"} 0`,
		`linkgate_network_required_interface_up{device="va"} 1`,
		`linkgate_network_up 0`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

func TestTrafficCounters(t *testing.T) {
	a, b := pair(t)
	a.IP(t, "addr", "add", "10.79.0.1/24", "dev", "va")
	b.IP(t, "addr", "add", "10.79.0.2/24", "dev", "vb")
	c := start(t, a, Options{StatsMinInterval: time.Nanosecond})
	before := c.stats()
	if err := a.Do(func() error {
		// Loopback-only traffic inside the test's namespaces.
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for range 10 {
			if err := unix.Sendto(fd, []byte("ping"), 0, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{10, 79, 0, 2}}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	l, _ := c.Snapshot().LinkByName("va")
	after := c.stats()
	if after[l.Index].TxPackets < before[l.Index].TxPackets+10 {
		t.Errorf("tx packets %d -> %d, want +10", before[l.Index].TxPackets, after[l.Index].TxPackets)
	}
	// A scrape refreshes again, and the kernel may have sent more since
	// (ARP, IPv6 discovery): at least what the last refresh saw.
	const series = `linkgate_link_transmit_packets_total{device="va"} `
	got := exposition(t, c, "linkgate_link_transmit_packets_total")
	if exposedValue(got, series) < after[l.Index].TxPackets {
		t.Errorf("Collect does not show fresh counters (want >= %d):\n%s", after[l.Index].TxPackets, got)
	}
	var text strings.Builder
	if err := c.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if exposedValue(text.String(), series) < after[l.Index].TxPackets {
		t.Errorf("WriteText does not show fresh counters (want >= %d)", after[l.Index].TxPackets)
	}
}

// exposedValue returns the integer value on the line starting with prefix.
func exposedValue(text, prefix string) uint64 {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return uint64(n)
		}
	}
	return 0
}

func hasAddr(s *Snapshot, dev, prefix string) bool {
	l, ok := s.LinkByName(dev)
	if !ok {
		return false
	}
	for _, a := range s.AddressesOf(l.Index) {
		if a.Prefix.String() == prefix {
			return true
		}
	}
	return false
}

func neighIs(ip string, st NeighState) func(*Snapshot) bool {
	return func(s *Snapshot) bool {
		for _, n := range s.Neighbors {
			if n.IP.String() == ip && n.State == st {
				return true
			}
		}
		return false
	}
}

// TestDuplicateAddressDetection: an IPv6 address that the peer already
// holds fails DAD; the snapshot shows it unusable, one added with nodad is
// usable.
func TestDuplicateAddressDetection(t *testing.T) {
	a, b := pair(t)
	c := start(t, a, Options{})
	waitFor(t, c, "va up", linkUp("va", true))
	b.IP(t, "addr", "add", "2001:db8:77::1/64", "dev", "vb", "nodad")
	a.IP(t, "addr", "add", "2001:db8:77::2/64", "dev", "va", "nodad")
	a.IP(t, "addr", "add", "2001:db8:77::1/64", "dev", "va")
	addr := func(s *Snapshot, prefix string) (Address, bool) {
		l, _ := s.LinkByName("va")
		for _, x := range s.AddressesOf(l.Index) {
			if x.Prefix.String() == prefix {
				return x, true
			}
		}
		return Address{}, false
	}
	s := waitFor(t, c, "duplicate detected", func(s *Snapshot) bool {
		x, ok := addr(s, "2001:db8:77::1/64")
		return ok && x.Flags&AddrFlagDADFailed != 0
	})
	if x, _ := addr(s, "2001:db8:77::1/64"); x.Usable() {
		t.Errorf("DAD-failed address counted usable: %+v", x)
	}
	if x, ok := addr(s, "2001:db8:77::2/64"); !ok || !x.Usable() {
		t.Errorf("nodad address: %+v %v", x, ok)
	}
}
