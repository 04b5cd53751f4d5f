package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/promtooltest"
	"github.com/linkgate/linkgate/internal/vcsim"
	"github.com/linkgate/linkgate/sidecar"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// runningCollector runs a collector on a private namespace whose link va
// (peer vb in another namespace) is required, and waits for its first
// dump. stop ends it and waits; it also runs when the test ends.
func runningCollector(t *testing.T) (col *collector.Collector, stop func()) {
	t.Helper()
	a, b := netnstest.New(t), netnstest.New(t)
	netnstest.Veth(t, a, "va", b, "vb")
	return collectorOn(t, a, "va")
}

// startSim runs the vCenter simulator until the test ends and writes its
// password to a private file.
func startSim(t *testing.T) (sim *vcsim.Sim, pwFile string) {
	t.Helper()
	sim, err := vcsim.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	if pwFile, err = sim.PasswordFile(); err != nil {
		t.Fatal(err)
	}
	return sim, pwFile
}

// collectorOn runs a collector on ns with the required links from its
// first dump on. stop ends it and waits; it also runs when the test ends.
func collectorOn(t *testing.T, ns *netnstest.NS, required ...string) (col *collector.Collector, stop func()) {
	t.Helper()
	col, err := collector.New(collector.Options{NetNS: ns.Path, Required: required})
	if err != nil {
		t.Fatal(err)
	}
	halt, err := col.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stop = sync.OnceFunc(func() { _ = halt() })
	t.Cleanup(stop)
	return col, stop
}

// TestExporterHTTP serves a real collector watching a private namespace
// and checks what Prometheus and a prober would see, including that
// promtool accepts the exposition.
func TestExporterHTTP(t *testing.T) {
	col, stop := runningCollector(t)

	srv := sidecar.NewServer(sidecar.ServerOptions{TelemetryPath: "/metrics", Gatherer: sidecar.NewRegistry(),
		Fast: []sidecar.ExpositionWriter{col}, Health: col.Health})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	code, body := get(t, ts.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`linkgate_link_up{device="va"} 1`,
		`linkgate_network_up 1`,
		`linkgate_build_info{`,
		`process_cpu_seconds_total`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	promtooltest.CheckMetrics(t, body)

	if code, body := get(t, ts.URL+"/"); code != http.StatusOK || !strings.Contains(body, "linkgate") {
		t.Errorf("landing page: %d %q", code, body)
	}
	if code, body := get(t, ts.URL+"/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz while running: %d %q", code, body)
	}
	if code, body := get(t, ts.URL+"/healthz?verbose"); code != http.StatusOK ||
		!strings.Contains(body, "[+]event-loop ok\n[+]netlink-state-verified ok\nhealthz check passed") {
		t.Errorf("/healthz?verbose while running: %d %q", code, body)
	}
	stop()
	if code, _ := get(t, ts.URL+"/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz after the event loop stopped: %d, want 503", code)
	}
}

// TestExporterWithVCenter runs the exporter's probe against the in-process
// simulator and checks the vCenter series on /metrics.
func TestExporterWithVCenter(t *testing.T) {
	sim, pwFile := startSim(t)
	env := &runEnv{logger: slog.New(slog.DiscardHandler)}
	v := &vcenterFlags{URL: []string{sim.URL}, User: sim.User, PasswordFile: pwFile, CAFile: sim.CAFile,
		Interval: time.Hour, Timeout: 5 * time.Second, MaxRetries: 3, BaseBackoff: time.Second, MaxBackoff: 2 * time.Second, Jitter: true}
	n := &networkFlags{Monitor: true, PauseOnDown: true, MaxWait: time.Minute}
	p, err := v.newProber(env, n, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = p.Run(ctx) }()
	defer wg.Wait()
	defer cancel()
	deadline := time.After(20 * time.Second)
	for {
		st, changed := p.Status()
		if len(st) == 1 && st[0].Up {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("probe never succeeded: %+v", st)
		}
	}
	srv := sidecar.NewServer(sidecar.ServerOptions{TelemetryPath: "/metrics", Gatherer: sidecar.NewRegistry(p),
		Health: func() collector.Health { return collector.Health{Alive: true, Verified: true} }})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	_, body := get(t, ts.URL+"/metrics")
	target := strings.TrimSuffix(strings.TrimPrefix(sim.URL, "https://"), "/sdk")
	for _, want := range []string{
		`linkgate_vcenter_up{target="` + target + `"} 1`,
		`linkgate_vcenter_logins_total{result="success",target="` + target + `"} 1`,
		`linkgate_vcenter_info{`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, sim.Password) {
		t.Error("password leaked into /metrics")
	}
	promtooltest.CheckMetrics(t, body)
}
