package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/vcsim"
	"github.com/linkgate/linkgate/probe"
	"github.com/vmware/govmomi/vim25/types"
)

// benchClient has its own connection pool, kept alive between requests.
var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 2 * time.Minute}

func benchGet(url string) (int, string) {
	resp, err := benchClient.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// launch runs a sidecar on env's namespace and simulator at a new address
// (env.start, with --vcenter.interval 1h and no host probing); stop ends
// it before the benchmark does.
func launch(b *testing.B, env *sidecarEnv) (e *sidecarEnv, stop func()) {
	e = &sidecarEnv{a: env.a, b: env.b, sim: env.sim, pwFile: env.pwFile, vcFlags: env.vcFlags, base: "http://" + freePort(b)}
	args := append([]string{"--network.required-interfaces", "va"}, e.vcFlags...)
	e.start(b, append(args, "--vcenter.interval", "1h", "--vsphere.host-ports=")...)
	return e, func() {
		e.cancel()
		err := <-e.done
		e.done <- err // for start's cleanup, which checks it
	}
}

// benchPoll (LINKGATE_BENCH_POLL=1) polls for 200 too, as for 503,
// instead of long-polling.
var benchPoll = os.Getenv("LINKGATE_BENCH_POLL") == "1"

// awaitHost waits until /ready/host/NAME?verbose answers code with every
// one of parts: by long-poll (?wait=) for 200, which the sidecar answers
// as soon as the host is ready; by polling every millisecond for 503,
// which it has no long-poll for (nor for 200 with benchPoll). Connection
// errors and 404 (no inventory yet) are retried every 2 ms. It fails
// after limit.
func awaitHost(b *testing.B, base, host string, code int, parts []string, start time.Time, limit time.Duration) time.Duration {
	b.Helper()
	url := base + "/ready/host/" + host + "?verbose"
	longPoll := code == http.StatusOK && !benchPoll
	if longPoll {
		url += "&wait=" + limit.String()
	}
	for {
		got, body := benchGet(url)
		took := time.Since(start)
		if got == code && containsAll(body, parts) {
			return took
		}
		if took > limit {
			b.Fatalf("/ready/host/%s after %v: %d, want %d with %q:\n%s", host, took.Round(time.Millisecond), got, code, parts, body)
		}
		if got == 0 || got == http.StatusNotFound {
			time.Sleep(2 * time.Millisecond)
		} else if !longPoll {
			time.Sleep(time.Millisecond)
		}
	}
}

// reportTimes reports the median of d in milliseconds as
// ms/<what>-median and, with spread, the 95th percentile and the maximum
// as ms/<what>-p95 and ms/<what>-max.
func reportTimes(b *testing.B, what string, d []time.Duration, spread bool) {
	if len(d) == 0 {
		return
	}
	d = slices.Clone(d)
	slices.Sort(d)
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	b.ReportMetric(ms(d[len(d)/2]), "ms/"+what+"-median")
	if spread {
		b.ReportMetric(ms(d[int(math.Ceil(0.95*float64(len(d))))-1]), "ms/"+what+"-p95")
		b.ReportMetric(ms(d[len(d)-1]), "ms/"+what+"-max")
	}
}

// toggle is the loop of the change benchmarks: op i takes host i/2 out
// of service (even i) or back (odd i) with change, and times it until
// await (from start, the update) says so. It reports the times of all
// changes (ms/change-*) and the medians of each direction (ms/out-,
// ms/back-median), and leaves the last host back in service.
func toggle(b *testing.B, sim *vcsim.Sim, hosts []string, change func(out bool) types.PropertyChange, await func(host string, out bool, start time.Time) time.Duration) {
	var all, out, back []time.Duration
	i := 0
	for b.Loop() {
		host := hosts[(i/2)%len(hosts)]
		isOut := i%2 == 0
		i++
		start := time.Now()
		if err := sim.Update("HostSystem", host, change(isOut)); err != nil {
			b.Fatal(err)
		}
		d := await(host, isOut, start)
		all = append(all, d)
		if isOut {
			out = append(out, d)
		} else {
			back = append(back, d)
		}
	}
	reportTimes(b, "change", all, true)
	reportTimes(b, "out", out, false)
	reportTimes(b, "back", back, false)
	if i%2 == 1 {
		if err := sim.Update("HostSystem", hosts[(i/2)%len(hosts)], change(false)); err != nil {
			b.Fatal(err)
		}
	}
}

// runProber runs the vCenter probe the sidecar of launch would build
// (from the same flags), without a network to watch, until b ends.
func runProber(b *testing.B, env *sidecarEnv) *probe.Prober {
	b.Helper()
	args := append([]string{"sidecar", "--netns", env.a.Path, "--network.required-interfaces", "va"}, env.vcFlags...)
	args = append(args, "--vcenter.interval", "1h", "--vsphere.host-ports=")
	var stderr bytes.Buffer
	parsed, code := parse(args, &bytes.Buffer{}, &stderr)
	if code >= 0 {
		b.Fatalf("parse: %d %s", code, stderr.String())
	}
	s := &parsed.cli.Sidecar
	renv := &runEnv{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, kctx: parsed.kctx, res: parsed.res,
		args: args, level: new(slog.LevelVar), logger: slog.New(slog.DiscardHandler)}
	if err := s.validate(renv); err != nil {
		b.Fatal(err)
	}
	p, err := s.newProber(renv, &s.networkFlags, &s.vsphereFlags, nil)
	if err != nil || p == nil {
		b.Fatalf("prober %v, %v", p, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("prober run: %v", err)
		}
	})
	return p
}

// awaitInventory waits, on the prober's change signal, until its first
// target's inventory satisfies cond; it returns when (since start), and
// fails after limit.
func awaitInventory(b *testing.B, p *probe.Prober, start time.Time, limit time.Duration, cond func(*probe.Inventory) bool) time.Duration {
	b.Helper()
	deadline := time.NewTimer(limit - time.Since(start))
	defer deadline.Stop()
	for {
		invs, changed := p.Inventory()
		if len(invs) > 0 && invs[0] != nil && cond(invs[0]) {
			return time.Since(start)
		}
		select {
		case <-changed:
		case <-deadline.C:
			b.Fatalf("inventory after %v: not as expected: %v", time.Since(start).Round(time.Millisecond), invs)
		}
	}
}

// BenchmarkHostChangeToReady measures, through the real sidecar (root: it
// watches a private network namespace), the time a host's change in the
// simulator takes to reach /ready/host/NAME on the large model of
// probe's BenchmarkInventorySim. The simulator runs in the same process.
//
//   - Connection and Maintenance: one op is one change (a host
//     disconnected or connected again; into maintenance or out), timed
//     from the simulator's update until /ready/host/NAME answers 503 with
//     the reason, or 200 again. Each pair of ops takes the next host.
//   - ConnectionInventory and MaintenanceInventory: the same changes,
//     timed until the inventory of a vCenter probe built from the same
//     flags shows them, without the sidecar around it. The difference
//     to the above is the sidecar's share (and the polling's).
//   - FirstVerified: one op starts a sidecar and waits until
//     /ready/host/NAME answers 200 with the inventory verified (login,
//     the full retrieve, the first evaluation), then stops it.
//   - Request: one op is one GET of /ready/host/NAME?verbose, unchanged.
func BenchmarkHostChangeToReady(b *testing.B) {
	netnstest.RequireRoot(b) // before the model's minute of building
	// 100 VMs by default: VMs are not part of the watch.
	vms, err := vcsim.BenchVMs(100)
	if err != nil {
		b.Fatal(err)
	}
	built := time.Now()
	sim, err := vcsim.StartModel(vcsim.Large(vms))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sim.Close)
	hosts := make([]string, 0, vcsim.LargeHosts)
	for dc := range vcsim.LargeDatacenters {
		for c := range vcsim.LargeClusters {
			for h := range vcsim.LargeClusterHosts {
				hosts = append(hosts, vcsim.LargeHostName(dc, c, h))
			}
		}
	}
	for _, h := range []string{hosts[0], hosts[len(hosts)-1]} {
		if _, err := sim.Ref("HostSystem", h); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("simulator model: %d hosts, %d datastores, %d VMs, built in %v",
		len(hosts), vcsim.LargeDatacenters*vcsim.LargeDatastores, vms/(vcsim.LargeDatacenters*vcsim.LargeClusters)*vcsim.LargeDatacenters*vcsim.LargeClusters, time.Since(built).Round(time.Second))

	env := &sidecarEnv{a: netnstest.New(b), b: netnstest.New(b), sim: sim}
	netnstest.Veth(b, env.a, "va", env.b, "vb")
	if env.pwFile, err = sim.PasswordFile(); err != nil {
		b.Fatal(err)
	}
	env.vcFlags = []string{"--vcenter.url", sim.URL, "--vcenter.user", sim.User,
		"--vcenter.password-file", env.pwFile, "--vcenter.ca-file", sim.CAFile}
	verified := []string{"[+]inventory ok\n", "[+]host ok\n", "[+]datastores ok\n"}

	for _, tc := range []struct {
		name   string
		change func(out bool) types.PropertyChange // out: out of service, or back
		reason string                              // of /ready/host when out
		is     func(h probe.Host, out bool) bool   // the inventory says so
	}{
		{"Connection", func(out bool) types.PropertyChange {
			state := types.HostSystemConnectionStateConnected
			if out {
				state = types.HostSystemConnectionStateDisconnected
			}
			return types.PropertyChange{Name: "runtime.connectionState", Val: state}
		}, "[-]host failed: connection state disconnected\n", func(h probe.Host, out bool) bool {
			return (h.ConnectionState == string(types.HostSystemConnectionStateDisconnected)) == out
		}},
		{"Maintenance", func(out bool) types.PropertyChange {
			return types.PropertyChange{Name: "runtime.inMaintenanceMode", Val: out}
		}, "[-]host failed: in maintenance mode\n", func(h probe.Host, out bool) bool {
			return h.InMaintenance == out
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e, stop := launch(b, env)
			defer stop()
			awaitHost(b, e.base, hosts[0], http.StatusOK, verified, time.Now(), time.Minute)
			toggle(b, sim, hosts, tc.change, func(host string, out bool, start time.Time) time.Duration {
				if out {
					return awaitHost(b, e.base, host, http.StatusServiceUnavailable, []string{tc.reason}, start, 30*time.Second)
				}
				return awaitHost(b, e.base, host, http.StatusOK, verified, start, 30*time.Second)
			})
		})
		// The same changes seen by the sidecar's vCenter probe alone
		// (its flags, no HTTP, no gate): the inventory's share.
		b.Run(tc.name+"Inventory", func(b *testing.B) {
			p := runProber(b, env)
			awaitInventory(b, p, time.Now(), time.Minute, func(inv *probe.Inventory) bool {
				return inv.Verified && len(inv.HostsNamed(hosts[0])) == 1
			})
			toggle(b, sim, hosts, tc.change, func(host string, out bool, start time.Time) time.Duration {
				return awaitInventory(b, p, start, 30*time.Second, func(inv *probe.Inventory) bool {
					hs := inv.HostsNamed(host)
					return len(hs) == 1 && tc.is(hs[0], out)
				})
			})
		})
	}

	b.Run("FirstVerified", func(b *testing.B) {
		var took []time.Duration
		for b.Loop() {
			start := time.Now()
			e, stop := launch(b, env)
			took = append(took, awaitHost(b, e.base, hosts[len(hosts)-1], http.StatusOK, verified, start, time.Minute))
			b.StopTimer()
			stop()
			b.StartTimer()
		}
		reportTimes(b, "first-verified", took, true)
	})

	// One answer of /ready/host/NAME?verbose (200) when nothing changes:
	// the handler's cost per request, HTTP on loopback included.
	b.Run("Request", func(b *testing.B) {
		e, stop := launch(b, env)
		defer stop()
		awaitHost(b, e.base, hosts[0], http.StatusOK, verified, time.Now(), time.Minute)
		url := e.base + "/ready/host/" + hosts[len(hosts)/2] + "?verbose"
		for b.Loop() {
			if code, body := benchGet(url); code != http.StatusOK {
				b.Fatalf("%s: %d\n%s", url, code, body)
			}
		}
	})
}
