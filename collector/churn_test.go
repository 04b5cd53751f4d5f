package collector_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/linkgate/linkgate/sidecar"
	"golang.org/x/sys/unix"
)

// TestChurnGateNeverLies is the hostile scenario of issue 7, bounded for
// CI: a namespace with many veth pairs, bursts of `ip -batch` churn on
// every link but the required one (addresses, down/up, MTU, routes,
// neighbours, links created and deleted), two linkgate instances on the
// same namespace (one with a small receive buffer, so that it overflows
// and resyncs), a busy process on the other core, and in the middle of
// each burst the required link loses carrier. After each burst:
//
//   - both snapshots equal the kernel's state within convergeBound;
//   - both gates are closed, with the links check naming the required link;
//   - the exposition has no series of a link that no longer exists;
//   - no /ready sampled during the burst answered 200 once the required
//     link was down and the instance had seen it, or later than
//     convergeBound after it went down.
//
// LINKGATE_CHURN_ROUNDS and LINKGATE_CHURN_PAIRS make it longer.
func TestChurnGateNeverLies(t *testing.T) {
	rounds, pairs := envInt(t, "LINKGATE_CHURN_ROUNDS", 3), envInt(t, "LINKGATE_CHURN_PAIRS", 40)
	a, b := netnstest.New(t), netnstest.New(t)
	// No IPv6 duplicate address detection: it would keep changing the
	// kernel's state (addresses announced a second or two after each
	// link-up) after the burst, and the bound is about linkgate's lag,
	// not the kernel's timers.
	noDAD(t, a)
	noDAD(t, b)
	var setup strings.Builder
	for i := range pairs {
		fmt.Fprintf(&setup, "link add va%d type veth peer name vb%d netns %s\nlink set va%d up\n", i, i, b.Name, i)
	}
	a.IP(t, "-batch", writeFile(t, setup.String()))
	for i := range pairs {
		b.IP(t, "link", "set", fmt.Sprintf("vb%d", i), "up")
	}
	a.IP(t, "addr", "add", "10.99.0.1/24", "dev", "va0")
	busy(t)
	kernel := watchCarrier(t, a, "va0")

	instances := []*instance{
		startInstance(t, a, collector.Options{}),
		startInstance(t, a, collector.Options{ReceiveBuffer: 32 << 10}),
	}
	for _, in := range instances {
		in.waitReady(t)
	}

	rng := testkit.ReplayRand(t)
	t.Logf("%d pairs, %d rounds, converge bound %s", pairs, rounds, convergeBound)
	for round := range rounds {
		file := writeFile(t, churn(rng, 3000, pairs))
		for _, in := range instances {
			in.startSampling()
		}
		kernel.reset()
		cmd := exec.Command("ip", "-n", a.Name, "-force", "-batch", file)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		b.IP(t, "link", "set", "vb0", "down") // va0 loses carrier
		down := time.Now()
		_ = cmd.Wait() // -force: some changes are refused (absent addresses...); the kernel is the reference
		end := time.Now()

		took := waitConverged(t, a, instances, end)
		// When the kernel announced the carrier loss (linkwatch sends it
		// asynchronously, later under load): the instances cannot know
		// before that.
		announced := kernel.downAt()
		for i, in := range instances {
			name := fmt.Sprintf("round %d instance %d", round, i)
			samples, seen := in.stopSampling()
			t.Logf("%s: converged %s after the burst; %d /ready samples; carrier loss announced by the kernel at +%s, seen at +%s",
				name, took[i].Round(time.Millisecond), len(samples), announced.Sub(down).Round(time.Millisecond), seen.Sub(down).Round(time.Millisecond))
			if took[i] > convergeBound {
				t.Errorf("%s: converged only %s after the burst, bound %s", name, took[i], convergeBound)
			}
			// Never "go" once the instance has seen the link down, nor
			// later than the bound after the kernel said so.
			for _, s := range samples {
				if s.code == http.StatusOK && (s.start.After(seen) || s.start.After(announced.Add(convergeBound))) {
					t.Errorf("%s: /ready answered 200 at +%s with va0 down (announced at +%s, seen at +%s)", name,
						s.start.Sub(down).Round(time.Millisecond), announced.Sub(down).Round(time.Millisecond), seen.Sub(down).Round(time.Millisecond))
					break
				}
			}
			code, body := in.get(t, "/ready?verbose")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]links failed: va0: no carrier") {
				t.Errorf("%s: /ready with va0 down: %d\n%s", name, code, body)
			}
			in.assertNoStaleSeries(t, a, name)
		}
		b.IP(t, "link", "set", "vb0", "up")
		for _, in := range instances {
			in.waitReady(t)
		}
	}
	for i, in := range instances {
		t.Logf("instance %d: %s", i, in.counters(t))
	}
}

func noDAD(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	err := ns.Do(func() error {
		for _, conf := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/accept_dad", []byte("0"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// carrierWatch is an independent rtnetlink listener: when the kernel
// announced that a link lost its carrier.
type carrierWatch struct {
	mu   sync.Mutex
	down time.Time
}

func (w *carrierWatch) reset() {
	w.mu.Lock()
	w.down = time.Time{}
	w.mu.Unlock()
}

func (w *carrierWatch) downAt() time.Time {
	deadline := time.Now().Add(hang)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		d := w.down
		w.mu.Unlock()
		if !d.IsZero() {
			return d
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Now()
}

func watchCarrier(t *testing.T, ns *netnstest.NS, name string) *carrierWatch {
	t.Helper()
	var fd int
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
		// Wake up now and then to see whether the test is over: a netlink
		// socket has no shutdown to interrupt a blocked read.
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK})
	})
	if err != nil {
		t.Fatal(err)
	}
	w := &carrierWatch{}
	done, stop := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err == unix.ENOBUFS || err == unix.EINTR || err == unix.EAGAIN {
				continue
			}
			if err != nil {
				return
			}
			now := time.Now()
			msgs, err := syscall.ParseNetlinkMessage(buf[:n])
			if err != nil {
				continue
			}
			for _, m := range msgs {
				var lm rtnetlink.LinkMessage
				if m.Header.Type != unix.RTM_NEWLINK || lm.UnmarshalBinary(m.Data) != nil || lm.Attributes == nil || lm.Attributes.Name != name {
					continue
				}
				if lm.Flags&unix.IFF_LOWER_UP == 0 {
					w.mu.Lock()
					if w.down.IsZero() {
						w.down = now
					}
					w.mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		unix.Close(fd)
	})
	return w
}

// waitConverged waits until each instance's snapshot equals the kernel's
// state and returns how long after end that snapshot was published (0 if
// before): from then on the instance was right. The snapshots are read
// before the kernel, so a match means the snapshot was right at that
// moment; the time of the match itself would add the cost of reading the
// kernel with ip -j (hundreds of ms under load) to linkgate's lag.
func waitConverged(t *testing.T, ns *netnstest.NS, instances []*instance, end time.Time) []time.Duration {
	t.Helper()
	took := make([]time.Duration, len(instances))
	left := len(instances)
	for left > 0 {
		snaps := make([]*collector.Snapshot, len(instances))
		for i, in := range instances {
			snaps[i] = in.c.Snapshot()
		}
		want := collector.KernelView(t, ns)
		now := time.Now()
		for i, s := range snaps {
			if took[i] != 0 {
				continue
			}
			got := collector.SnapshotView(s)
			if got == want {
				took[i], left = max(s.Taken.Sub(end), time.Nanosecond), left-1
			} else if now.Sub(end) > convergeBound+hang {
				t.Fatalf("instance %d: snapshot (version %d) differs from the kernel:\n%s", i, s.Version, collector.LineDiff(want, got))
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return took
}

// instance is one linkgate: a collector, a gate over it and /ready.
type instance struct {
	c   *collector.Collector
	srv *httptest.Server

	mu       sync.Mutex
	samples  []sample
	seenDown time.Time
	stop     chan struct{}
	wg       sync.WaitGroup
}

type sample struct {
	start time.Time
	code  int
}

func startInstance(t *testing.T, ns *netnstest.NS, opts collector.Options) *instance {
	t.Helper()
	opts.NetNS, opts.Required = ns.Path, []string{"va0"}
	opts.VerifyInterval = 500 * time.Millisecond
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	c, err := collector.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := c.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() }) // last: after the gate's
	g, err := sidecar.NewGate(sidecar.GateOptions{Snapshots: c, Checks: []sidecar.Check{sidecar.LinksCheck(), sidecar.AddressesCheck(collector.FamilyIPv4)}})
	if err != nil {
		t.Fatal(err)
	}
	h := sidecar.NewHandler(g, sidecar.HandlerOptions{})
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.Run(ctx) })
	t.Cleanup(func() {
		h.Close()
		srv.CloseClientConnections()
		srv.Close()
		http.DefaultClient.CloseIdleConnections()
		cancel()
		wg.Wait()
	})
	return &instance{c: c, srv: srv}
}

const hang = 30 * time.Second

func (in *instance) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(in.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, readAll(resp))
	return resp.StatusCode, b.String()
}

func readAll(resp *http.Response) string {
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

func (in *instance) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for {
		code, body := in.get(t, "/ready?verbose")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gate did not open:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startSampling polls /ready back to back and follows the snapshots for
// the first one that shows va0 down.
func (in *instance) startSampling() {
	in.mu.Lock()
	in.samples, in.seenDown = nil, time.Time{}
	in.stop = make(chan struct{})
	in.mu.Unlock()
	stop := in.stop
	in.wg.Go(func() {
		client := &http.Client{Timeout: 5 * time.Second}
		defer client.CloseIdleConnections()
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			resp, err := client.Get(in.srv.URL + "/ready")
			if err != nil {
				continue
			}
			resp.Body.Close()
			in.mu.Lock()
			in.samples = append(in.samples, sample{start, resp.StatusCode})
			in.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	})
	in.wg.Go(func() {
		for {
			s := in.c.Snapshot()
			if l, ok := s.LinkByName("va0"); ok && !l.Up {
				in.mu.Lock()
				in.seenDown = time.Now()
				in.mu.Unlock()
				return
			}
			select {
			case <-stop:
				return
			case <-s.Changed():
			}
		}
	})
}

func (in *instance) stopSampling() ([]sample, time.Time) {
	close(in.stop)
	in.wg.Wait()
	in.mu.Lock()
	defer in.mu.Unlock()
	seen := in.seenDown
	if seen.IsZero() {
		seen = time.Now()
	}
	return in.samples, seen
}

var deviceLabel = regexp.MustCompile(`device="([^"]*)"`)

// assertNoStaleSeries: every device in the exposition is a link the
// kernel has.
func (in *instance) assertNoStaleSeries(t *testing.T, ns *netnstest.NS, name string) {
	t.Helper()
	var b strings.Builder
	if err := in.c.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	kernel := map[string]bool{}
	for _, line := range strings.Split(collector.KernelView(t, ns), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "link" {
			kernel[f[2]] = true
		}
	}
	var stale []string
	for _, m := range deviceLabel.FindAllStringSubmatch(b.String(), -1) {
		if !kernel[m[1]] && !slices.Contains(stale, m[1]) {
			stale = append(stale, m[1])
		}
	}
	if len(stale) > 0 {
		t.Errorf("%s: series of links the kernel does not have: %v", name, stale)
	}
}

var counterLine = regexp.MustCompile(`(?m)^linkgate_netlink_(resyncs_total|socket_drops_total|dump_failures_total|verifications_total|divergences_total)(\{[^}]*\})? (\d+)$`)

func (in *instance) counters(t *testing.T) string {
	var b strings.Builder
	if err := in.c.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range counterLine.FindAllStringSubmatch(b.String(), -1) {
		if m[3] != "0" {
			out = append(out, m[1]+m[2]+"="+m[3])
		}
	}
	return strings.Join(out, " ")
}

// churn writes n random changes on links va1.. (never va0), including
// extra veth pairs created and deleted.
func churn(rng *rand.Rand, n, pairs int) string {
	var b strings.Builder
	for range n {
		switch rng.IntN(12) {
		case 0:
			x := rng.IntN(10)
			fmt.Fprintf(&b, "link add vx%d type veth peer name vy%d\nlink set vx%d up\n", x, x, x)
		case 1:
			fmt.Fprintf(&b, "link del vx%d\n", rng.IntN(10))
		default:
			collector.RandomChange(&b, rng, 1+rng.IntN(pairs-1))
		}
	}
	return b.String()
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// busy keeps a CPU busy with a separate process until the test ends.
func busy(t *testing.T) {
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
