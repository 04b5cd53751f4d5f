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
	"testing"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/sidecar"
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

	instances := []*instance{
		startInstance(t, a, collector.Options{}),
		startInstance(t, a, collector.Options{ReceiveBuffer: 32 << 10}),
	}
	for _, in := range instances {
		in.waitReady(t)
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d pairs, %d rounds, converge bound %s", seed, pairs, rounds, convergeBound)
	rng := rand.New(rand.NewPCG(seed, 0))
	for round := range rounds {
		file := writeFile(t, churn(rng, 3000, pairs))
		for _, in := range instances {
			in.startSampling()
		}
		cmd := exec.Command("ip", "-n", a.Name, "-force", "-batch", file)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		b.IP(t, "link", "set", "vb0", "down") // va0 loses carrier
		down := time.Now()
		_ = cmd.Wait() // -force: some changes are refused (absent addresses...); the kernel is the reference
		end := time.Now()

		for i, in := range instances {
			name := fmt.Sprintf("round %d instance %d", round, i)
			took := in.waitConverged(t, a, end, name)
			samples, seen := in.stopSampling()
			t.Logf("%s: converged %s after the burst; %d /ready samples; required link seen down %s after the change",
				name, took.Round(time.Millisecond), len(samples), seen.Sub(down).Round(time.Millisecond))
			for _, s := range samples {
				if s.code == http.StatusOK && (s.start.After(seen) || s.start.After(down.Add(convergeBound))) {
					t.Errorf("%s: /ready answered 200 at +%s with va0 down (seen down at +%s)", name,
						s.start.Sub(down).Round(time.Millisecond), seen.Sub(down).Round(time.Millisecond))
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
	wg.Go(func() { _ = c.Run(ctx) })
	wg.Go(func() { _ = g.Run(ctx) })
	t.Cleanup(func() {
		h.Close()
		srv.CloseClientConnections()
		srv.Close()
		http.DefaultClient.CloseIdleConnections()
		cancel()
		wg.Wait()
	})
	select {
	case <-c.Synced():
	case <-time.After(hang):
		t.Fatal("collector did not sync")
	}
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

// waitConverged waits until the snapshot equals the kernel's state and
// fails if that took longer than convergeBound after end. It returns how
// long after end that was.
func (in *instance) waitConverged(t *testing.T, ns *netnstest.NS, end time.Time, name string) time.Duration {
	t.Helper()
	for {
		s := in.c.Snapshot()
		// Read the kernel after the snapshot: a match then means the
		// snapshot was right at that moment or later.
		want := collector.KernelView(t, ns)
		if got := collector.SnapshotView(s); got == want {
			took := time.Since(end)
			if took > convergeBound {
				t.Errorf("%s: converged only %s after the burst, bound %s", name, took, convergeBound)
			}
			return took
		} else if time.Since(end) > convergeBound+hang {
			t.Fatalf("%s: snapshot (version %d) differs from the kernel:\n%s", name, s.Version, collector.LineDiff(want, got))
		}
		select {
		case <-s.Changed():
		case <-time.After(20 * time.Millisecond):
		}
	}
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
		i := 1 + rng.IntN(pairs-1)
		dev := fmt.Sprintf("va%d", i)
		switch rng.IntN(12) {
		case 0, 1:
			fmt.Fprintf(&b, "link set %s down\n", dev)
		case 2, 3:
			fmt.Fprintf(&b, "link set %s up\n", dev)
		case 4:
			fmt.Fprintf(&b, "link set %s mtu %d\n", dev, 1280+rng.IntN(200))
		case 5:
			fmt.Fprintf(&b, "addr add 10.80.%d.%d/24 dev %s\n", i, 1+rng.IntN(5), dev)
		case 6:
			fmt.Fprintf(&b, "addr del 10.80.%d.%d/24 dev %s\n", i, 1+rng.IntN(5), dev)
		case 7:
			fmt.Fprintf(&b, "route replace 10.90.%d.0/24 dev %s metric %d\n", rng.IntN(8), dev, rng.IntN(3))
		case 8:
			fmt.Fprintf(&b, "route del 10.90.%d.0/24\n", rng.IntN(8))
		case 9:
			fmt.Fprintf(&b, "neigh replace 10.81.%d.%d lladdr 02:00:00:00:%02x:%02x dev %s nud %s\n",
				i, rng.IntN(4), i, rng.IntN(4), dev, []string{"permanent", "stale", "noarp"}[rng.IntN(3)])
		case 10:
			x := rng.IntN(10)
			fmt.Fprintf(&b, "link add vx%d type veth peer name vy%d\nlink set vx%d up\n", x, x, x)
		case 11:
			fmt.Fprintf(&b, "link del vx%d\n", rng.IntN(10))
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
