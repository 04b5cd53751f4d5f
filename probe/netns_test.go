package probe

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"testing"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/testkit"
)

// TestNetnsLinkDownPausesAndResumes puts vCenter in network namespace A
// and the prober in namespace B, joined by a veth pair, with the real
// collector watching B's link. The prober fails once and backs off for an
// hour; taking B's link down parks it; bringing the link up makes it probe
// at once and succeed. Only the immediate resume can succeed within the
// test's guard: waiting out the backoff would take an hour.
func TestNetnsLinkDownPausesAndResumes(t *testing.T) {
	a := netnstest.New(t)
	b := netnstest.New(t)
	netnstest.Veth(t, a, "va", b, "vb")
	a.IP(t, "addr", "add", "10.99.1.1/24", "dev", "va")
	b.IP(t, "addr", "add", "10.99.1.2/24", "dev", "vb")

	inA := func(f func()) {
		if err := a.Do(func() error { f(); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	s := startSim(t, simOptions{addr: "10.99.1.1:8989", listen: inA})
	sum := sha256.Sum256(s.server.Certificate().Raw)
	// Nothing listens in A until the restart below: the first attempt is
	// refused across the veth.
	s.stop()

	c, err := collector.New(collector.Options{NetNS: b.Path, Required: []string{"vb"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, guard, c.Run)
	select {
	case <-c.Synced():
	case <-time.After(guard):
		t.Fatal("collector never synced")
	}
	if up, _ := c.NetworkState(); !up {
		t.Fatalf("collector says B's network is down at start: %+v", c.Snapshot().Network)
	}

	cfg := configFor("https://10.99.1.1:8989/sdk")
	cfg.Thumbprint = hex.EncodeToString(sum[:]) // the certificate names 127.0.0.1, not 10.99.1.1
	cfg.Interval, cfg.BaseBackoff, cfg.MaxBackoff = time.Hour, time.Hour, time.Hour
	dialInB := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := b.Do(func() error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	p := newProber(t, cfg, c, WithDialContext(dialInB))
	running(t, p)

	st := waitStatus(t, p, 0, "first failure", func(s Status) bool { return s.ConsecutiveFailures == 1 })
	if st.Kind != KindRefused || st.Backoff < 45*time.Minute {
		t.Fatalf("first attempt: %+v, want refused and a long backoff", st)
	}

	s.restart() // vCenter is back in A, but the prober sleeps for an hour
	b.IP(t, "link", "set", "vb", "down")
	waitStatus(t, p, 0, "paused", func(s Status) bool { return s.Paused })
	if got := metricValue(t, p, "linkgate_vcenter_paused"); got != 1 {
		t.Errorf("paused gauge = %v, want 1", got)
	}
	for r, want := range map[string]float64{"failure": 1, "success": 0} {
		if got := metricValue(t, p, "linkgate_vcenter_probes_total", "result", r); got != want {
			t.Errorf("probes_total{result=%q} = %v while paused, want %v", r, got, want)
		}
	}

	b.IP(t, "link", "set", "vb", "up")
	st = waitStatus(t, p, 0, "up after the link returns", func(s Status) bool { return s.Up })
	if st.Paused || st.ConsecutiveFailures != 0 || st.About.APIType != "VirtualCenter" {
		t.Errorf("after link up: %+v", st)
	}
	if got := metricValue(t, p, "linkgate_vcenter_probes_total", "result", "failure"); got != 1 {
		t.Errorf("failed probes = %v, want 1: nothing may be attempted while the link is down", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_paused"); got != 0 {
		t.Errorf("paused gauge = %v after resume", got)
	}
}
