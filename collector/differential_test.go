package collector

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/testkit"
	"golang.org/x/sys/unix"
)

// kernelView renders what `ip -j` reports for ns in the same normal form
// as snapshotView, so the two can be compared as text.
func kernelView(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	var links []struct {
		Index     int      `json:"ifindex"`
		Name      string   `json:"ifname"`
		Flags     []string `json:"flags"`
		MTU       int      `json:"mtu"`
		OperState string   `json:"operstate"`
	}
	decode(t, ns.IP(t, "-j", "link", "show"), &links)
	names := map[int]string{}
	var out []string
	for _, l := range links {
		names[l.Index] = l.Name
		out = append(out, fmt.Sprintf("link %d %s mtu=%d admin=%v oper=%s", l.Index, l.Name, l.MTU,
			slices.Contains(l.Flags, "UP"), strings.ToLower(l.OperState)))
	}
	var addrs []struct {
		Index int `json:"ifindex"`
		Info  []struct {
			Family     string `json:"family"`
			Local      string `json:"local"`
			PrefixLen  int    `json:"prefixlen"`
			Tentative  bool   `json:"tentative"`
			Optimistic bool   `json:"optimistic"`
			DADFailed  bool   `json:"dadfailed"`
		} `json:"addr_info"`
	}
	decode(t, ns.IP(t, "-j", "addr", "show"), &addrs)
	for _, a := range addrs {
		for _, i := range a.Info {
			if i.Family == "inet6" && i.Tentative && !i.Optimistic && !i.DADFailed {
				continue // not announced until DAD ends: see announced
			}
			out = append(out, fmt.Sprintf("addr %s %s/%d", names[a.Index], i.Local, i.PrefixLen))
		}
	}
	for _, fam := range []string{"-4", "-6"} {
		var routes []struct {
			Dst     string `json:"dst"`
			Gateway string `json:"gateway"`
			Dev     string `json:"dev"`
			Metric  int    `json:"metric"`
			Type    string `json:"type"`
		}
		decode(t, ns.IP(t, fam, "-j", "route", "show", "table", "main"), &routes)
		for _, r := range routes {
			dst := r.Dst
			switch {
			case dst == "default" && fam == "-4":
				dst = "0.0.0.0/0"
			case dst == "default":
				dst = "::/0"
			case !strings.Contains(dst, "/") && fam == "-4":
				dst += "/32"
			case !strings.Contains(dst, "/"):
				dst += "/128"
			}
			out = append(out, fmt.Sprintf("route %s via=%s dev=%s metric=%d", dst, r.Gateway, r.Dev, r.Metric))
		}
	}
	var neighs []struct {
		Dst   string   `json:"dst"`
		Dev   string   `json:"dev"`
		State []string `json:"state"`
	}
	decode(t, ns.IP(t, "-j", "neigh", "show", "nud", "all"), &neighs)
	for _, n := range neighs {
		if ip, err := netip.ParseAddr(n.Dst); err == nil && ip.IsMulticast() {
			continue // linkgate ignores multicast entries (see decodeNeighbor)
		}
		out = append(out, fmt.Sprintf("neigh %s %s %s", n.Dev, n.Dst, strings.ToLower(strings.Join(n.State, ","))))
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

func snapshotView(s *Snapshot) string {
	names := map[int]string{}
	var out []string
	for _, l := range s.Links {
		names[l.Index] = l.Name
		out = append(out, fmt.Sprintf("link %d %s mtu=%d admin=%v oper=%s", l.Index, l.Name, l.MTU, l.AdminUp, l.OperState))
	}
	for _, a := range s.Addresses {
		out = append(out, fmt.Sprintf("addr %s %s", names[a.LinkIndex], a.Prefix))
	}
	for _, r := range s.Routes {
		if r.Table != TableMain {
			continue
		}
		gw := ""
		if r.Gateway.IsValid() {
			gw = r.Gateway.String()
		}
		out = append(out, fmt.Sprintf("route %s via=%s dev=%s metric=%d", r.Dst, gw, names[r.LinkIndex], r.Priority))
	}
	for _, n := range s.Neighbors {
		out = append(out, fmt.Sprintf("neigh %s %s %s", names[n.LinkIndex], n.IP, n.State))
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

func decode(t *testing.T, s string, v any) {
	t.Helper()
	if strings.TrimSpace(s) == "" {
		return
	}
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode ip -j output: %v\n%s", err, s)
	}
}

// waitConverged waits until the snapshot equals the kernel's view. The
// kernel view is re-read on each snapshot change and on a short guard
// interval, since kernel changes that linkgate does not publish (none are
// expected) would otherwise leave this waiting forever.
func waitConverged(t *testing.T, c *Collector, ns *netnstest.NS) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		s := c.Snapshot()
		want := kernelView(t, ns)
		got := snapshotView(s)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot (version %d) differs from the kernel:\n%s", s.Version, lineDiff(want, got))
		}
		select {
		case <-s.Changed():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for _, l := range w {
		if !slices.Contains(g, l) {
			fmt.Fprintf(&b, "- kernel only:   %s\n", l)
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			fmt.Fprintf(&b, "+ snapshot only: %s\n", l)
		}
	}
	return b.String()
}

// burst writes n random changes to an `ip -batch` file, so they hit the
// kernel back to back from one process.
func burst(t *testing.T, rng *rand.Rand, n, links int) string {
	t.Helper()
	var b strings.Builder
	for range n {
		randomChange(&b, rng, rng.IntN(links))
	}
	p := filepath.Join(t.TempDir(), "burst")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// randomChange writes one random `ip -batch` change of link va<i>: its
// state, MTU, addresses, routes through it or neighbours on it.
func randomChange(b *strings.Builder, rng *rand.Rand, i int) {
	dev := fmt.Sprintf("va%d", i)
	switch rng.IntN(9) {
	case 0:
		fmt.Fprintf(b, "link set %s down\n", dev)
	case 1:
		fmt.Fprintf(b, "link set %s up\n", dev)
	case 2:
		fmt.Fprintf(b, "link set %s mtu %d\n", dev, 1280+rng.IntN(200))
	case 3:
		fmt.Fprintf(b, "addr add 10.80.%d.%d/24 dev %s\n", i, 1+rng.IntN(5), dev)
	case 4:
		fmt.Fprintf(b, "addr del 10.80.%d.%d/24 dev %s\n", i, 1+rng.IntN(5), dev)
	case 5:
		fmt.Fprintf(b, "route replace 10.90.%d.0/24 dev %s metric %d\n", rng.IntN(8), dev, rng.IntN(3))
	case 6:
		fmt.Fprintf(b, "route del 10.90.%d.0/24\n", rng.IntN(8))
	case 7:
		fmt.Fprintf(b, "neigh replace 10.81.%d.%d lladdr 02:00:00:00:%02x:%02x dev %s nud %s\n",
			i, rng.IntN(4), i, rng.IntN(4), dev, []string{"permanent", "stale", "noarp"}[rng.IntN(3)])
	case 8:
		fmt.Fprintf(b, "addr add 2001:db8:%x::%x/64 dev %s nodad\n", i, 1+rng.IntN(3), dev)
	}
}

func multiPair(t *testing.T, n int) *netnstest.NS {
	a, b := netnstest.New(t), netnstest.New(t)
	for i := range n {
		netnstest.Veth(t, a, fmt.Sprintf("va%d", i), b, fmt.Sprintf("vb%d", i))
	}
	return a
}

func TestDifferentialAfterRandomBurst(t *testing.T) {
	const links = 4
	a := multiPair(t, links)
	c := start(t, a, Options{})
	rng := testkit.ReplayRand(t)
	for round := range 3 {
		file := burst(t, rng, 150, links)
		// -force: keep going past changes the kernel refuses (deleting an
		// absent address); the kernel stays the reference either way.
		_, _ = a.TryIP("-force", "-batch", file)
		waitConverged(t, c, a)
		t.Logf("round %d converged at snapshot version %d", round, c.Snapshot().Version)
	}
}

func TestOverflowResyncs(t *testing.T) {
	const links = 4
	a := multiPair(t, links)
	release := make(chan struct{})
	var held atomic.Bool
	c := start(t, a, Options{ReceiveBuffer: 4096, Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}, func(c *Collector) {
		// Hold the event loop before its first read so the burst below
		// overflows the tiny receive queue.
		c.testHookReceive = func() {
			if held.CompareAndSwap(false, true) {
				<-release
			}
		}
	})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	rng := rand.New(rand.NewPCG(1, 2))
	_, _ = a.TryIP("-force", "-batch", burst(t, rng, 300, links))
	for i := range links { // make sure there is plenty to overflow with
		a.IP(t, "link", "set", fmt.Sprintf("va%d", i), "mtu", "1300")
		a.IP(t, "link", "set", fmt.Sprintf("va%d", i), "mtu", "1400")
	}
	once.Do(func() { close(release) })
	waitConverged(t, c, a)
	got := exposition(t, c, "linkgate_netlink_resyncs_total", "linkgate_netlink_events_total")
	t.Log(got)
	if strings.Contains(got, `linkgate_netlink_resyncs_total{reason="overflow"} 0`) {
		t.Errorf("want an overflow resync:\n%s", got)
	}
}

// TestUndecodableMessageIsCounted sends a malformed RTM_NEWLINK to the
// link multicast group (root may do so) and expects it counted and
// skipped, with the collector still following the kernel.
func TestUndecodableMessageIsCounted(t *testing.T) {
	a, _ := pair(t)
	c := start(t, a, Options{})
	err := a.Do(func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		// nlmsghdr + a truncated ifinfomsg (needs 16 bytes).
		msg := make([]byte, unix.NLMSG_HDRLEN+4)
		binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
		binary.NativeEndian.PutUint16(msg[4:], unix.RTM_NEWLINK)
		return unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK})
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitTimeout)
	for c.decodeErrors.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("malformed message was not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := exposition(t, c, "linkgate_netlink_decode_errors_total"); !strings.Contains(got, "linkgate_netlink_decode_errors_total 1") {
		t.Errorf("exposition:\n%s", got)
	}
	a.IP(t, "link", "set", "va", "down")
	waitFor(t, c, "collector still following after a bad message", linkUp("va", false))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
