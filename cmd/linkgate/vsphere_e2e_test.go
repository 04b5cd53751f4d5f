package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/linkgate/linkgate/internal/vcsim"
	"github.com/linkgate/linkgate/probe"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// End-to-end tests of the vSphere inventory, host reachability and VM
// placement through the real sidecar (issue 11): the simulator changes,
// /ready/host, /ready/vm and /metrics follow.

// simTarget is the target label of sim's series.
func simTarget(sim *vcsim.Sim) string {
	return strings.TrimSuffix(strings.TrimPrefix(sim.URL, "https://"), "/sdk")
}

// fetch GETs url; code 0 when it fails.
func fetch(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// expect is what one endpoint must answer: the status and parts of the
// body (a path), or regexps the body must match (/metrics, code 200).
type expect struct {
	path  string
	code  int
	parts []string
	res   []*regexp.Regexp
}

func (x expect) holds(base string) (bool, string) {
	code, body := fetch(base + x.path)
	if code != x.code || !containsAll(body, x.parts) {
		return false, body
	}
	for _, re := range x.res {
		if !re.MatchString(body) {
			return false, body
		}
	}
	return true, body
}

// await polls every expectation until all hold, within limit of start;
// it returns when they held (since start).
func await(t *testing.T, base, what string, start time.Time, limit time.Duration, want ...expect) time.Duration {
	t.Helper()
	for {
		all, failing, body := true, expect{}, ""
		for _, x := range want {
			var ok bool
			if ok, body = x.holds(base); !ok {
				all, failing = false, x
				break
			}
		}
		took := time.Since(start)
		if all {
			return took
		}
		if took > limit {
			if failing.path == "/metrics" {
				body = grepLines(body, "linkgate_vsphere_")
			}
			t.Fatalf("%s: after %v, %s is not %d with %q %v:\n%s", what, took.Round(time.Millisecond), failing.path, failing.code, failing.parts, failing.res, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// series matches one sample of /metrics: name{labels} value, the labels
// in Prometheus' order (sorted by name), value a regexp.
func series(name, labels, value string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+"{"+labels+"}") + ` ` + value + `$`)
}

// TestSidecarHostEventDriven: with the vCenter probe's interval at an
// hour, a host's connection state and maintenance mode and a datastore's
// accessibility changed in the simulator reach /ready/host/NAME and the
// linkgate_vsphere_* series within a second of the change: the
// inventory follows vCenter's updates, it does not poll.
func TestSidecarHostEventDriven(t *testing.T) {
	e := startSidecar(t, "--vcenter.interval", "1h", "--vsphere.host-ports=")
	target := `target="` + simTarget(e.sim) + `"`
	const host = "DC0_H0"
	path := "/ready/host/" + host + "?verbose"
	ready := expect{path: path, code: 200, parts: []string{"[+]inventory ok\n", "[+]host ok\n", "[+]datastores ok\n"}}
	metrics := func(res ...*regexp.Regexp) expect { return expect{path: "/metrics", code: 200, res: res} }
	await(t, e.base, "first verified inventory", time.Now(), 30*time.Second, ready)

	connected := series("linkgate_vsphere_host_connection_state", `host="DC0_H0",state="connected",`+target, "1")
	dsRef, err := e.sim.Ref("Datastore", "LocalDS_0")
	if err != nil {
		t.Fatal(err)
	}
	var took []time.Duration
	for _, step := range []struct {
		name   string
		kind   string
		obj    string
		change types.PropertyChange
		want   []expect
	}{
		{"disconnected", "HostSystem", host,
			types.PropertyChange{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateDisconnected},
			[]expect{{path: path, code: 503, parts: []string{"[-]host failed: connection state disconnected\n"}},
				metrics(series("linkgate_vsphere_host_connection_state", `host="DC0_H0",state="disconnected",`+target, "1"))}},
		{"connected again", "HostSystem", host,
			types.PropertyChange{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateConnected},
			[]expect{ready, metrics(connected)}},
		{"in maintenance", "HostSystem", host,
			types.PropertyChange{Name: "runtime.inMaintenanceMode", Val: true},
			[]expect{{path: path, code: 503, parts: []string{"[-]host failed: in maintenance mode\n"}},
				metrics(series("linkgate_vsphere_host_maintenance", `host="DC0_H0",`+target, "1"))}},
		{"out of maintenance", "HostSystem", host,
			types.PropertyChange{Name: "runtime.inMaintenanceMode", Val: false},
			[]expect{ready, metrics(series("linkgate_vsphere_host_maintenance", `host="DC0_H0",`+target, "0"))}},
		{"datastore inaccessible", "Datastore", "LocalDS_0",
			types.PropertyChange{Name: "summary.accessible", Val: false},
			[]expect{{path: path, code: 503, parts: []string{"[-]datastores failed: inaccessible: LocalDS_0 (" + dsRef.Value + "): not accessible\n"}},
				metrics(series("linkgate_vsphere_datastore_accessible", `datastore="LocalDS_0",`+target, "0"))}},
		{"datastore accessible", "Datastore", "LocalDS_0",
			types.PropertyChange{Name: "summary.accessible", Val: true},
			[]expect{ready, metrics(series("linkgate_vsphere_datastore_accessible", `datastore="LocalDS_0",`+target, "1"))}},
	} {
		start := time.Now()
		if err := e.sim.Update(step.kind, step.obj, step.change); err != nil {
			t.Fatal(err)
		}
		d := await(t, e.base, step.name, start, time.Second, step.want...)
		took = append(took, d)
		t.Logf("%s: /ready/host and /metrics followed in %v", step.name, d.Round(time.Millisecond))
	}
	slices.Sort(took)
	t.Logf("change in vCenter → /ready/host and /metrics: median %v, max %v over %d changes",
		took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), len(took))
}

// TestSidecarVMFollowsMove: /ready/vm/NAME follows a VM that vCenter
// moves to another host (vMotion) once its cached placement expires
// (5 s): moved onto a host in maintenance, it is no longer ready.
func TestSidecarVMFollowsMove(t *testing.T) {
	e := startSidecar(t, "--vcenter.interval", "1h", "--vsphere.host-ports=")
	const vm, from, to = "DC0_H0_VM0", "DC0_H0", "DC0_C0_H0"
	if err := e.sim.Update("HostSystem", to, types.PropertyChange{Name: "runtime.inMaintenanceMode", Val: true}); err != nil {
		t.Fatal(err)
	}
	vmPath := "/ready/vm/" + vm + "?verbose"
	await(t, e.base, "before the move", time.Now(), 30*time.Second,
		expect{path: "/ready/host/" + to + "?verbose", code: 503, parts: []string{"[-]host failed: in maintenance mode\n"}},
		expect{path: "/ready/host/" + from + "?verbose", code: 200},
		expect{path: vmPath, code: 200, parts: []string{"[+]vm ok\n", "[+]host ok\n", "[+]vm-datastores ok\n"}})

	ref, err := e.sim.Ref("HostSystem", to)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.sim.Update("VirtualMachine", vm, types.PropertyChange{Name: "runtime.host", Op: types.PropertyChangeOpAssign, Val: &ref}); err != nil {
		t.Fatal(err)
	}
	// The cache holds a placement 5 s; allow a second on top for the
	// lookup itself under -race.
	d := await(t, e.base, "after the move", start, 6*time.Second,
		expect{path: vmPath, code: 503, parts: []string{"[+]vm ok\n", "[-]host failed: in maintenance mode\n"}})
	t.Logf("/ready/vm followed the move in %v", d.Round(time.Millisecond))

	// And back out of maintenance: the host's change is event-driven.
	start = time.Now()
	if err := e.sim.Update("HostSystem", to, types.PropertyChange{Name: "runtime.inMaintenanceMode", Val: false}); err != nil {
		t.Fatal(err)
	}
	await(t, e.base, "destination out of maintenance", start, time.Second, expect{path: vmPath, code: 200, parts: []string{"[+]host ok\n"}})
}

// nsListener accepts TCP connections at addr in ns and closes them,
// counting them, until the test ends.
func nsListener(t *testing.T, ns *netnstest.NS, addr string) *atomic.Int64 {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return testkit.AcceptAll(t, ln)
}

// nsDialer dials from inside ns, counting the dials.
func nsDialer(ns *netnstest.NS, dials *atomic.Int64) probe.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = new(net.Dialer).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// TestSidecarHostReachability gives the simulator's hosts the addresses
// of listeners in namespace b, probed from the sidecar's namespace a:
// one reachable on both ports, one refused (no listener), one behind a
// link taken down (timeout). /ready/host and the reachability series
// say so, and probing pauses while a's required link is down.
func TestSidecarHostReachability(t *testing.T) {
	e := newSidecarEnvModel(t, func(m *simulator.Model) { m.ClusterHost = 2 }) // DC0_H0, DC0_C0_H0, DC0_C0_H1
	a, b := e.a, e.b
	const (
		reachable = "10.211.1.2"
		refused   = "10.211.1.3"
		behind    = "10.211.2.2"
		port1     = "4443"
		port2     = "4902"
	)
	a.IP(t, "addr", "add", "10.211.1.1/24", "dev", "va")
	b.IP(t, "addr", "add", reachable+"/24", "dev", "vb")
	b.IP(t, "addr", "add", refused+"/24", "dev", "vb")
	// The link taken down: a second pair. a's end keeps its route when
	// b's end goes down, and a permanent neighbour entry keeps ARP out of
	// it, so that the SYNs vanish (a timeout, not "host unreachable").
	netnstest.Veth(t, a, "vc", b, "vd")
	b.IP(t, "link", "set", "vd", "address", "02:00:0a:d3:02:02")
	a.IP(t, "addr", "add", "10.211.2.1/24", "dev", "vc")
	b.IP(t, "addr", "add", behind+"/24", "dev", "vd")
	a.IP(t, "neigh", "replace", behind, "lladdr", "02:00:0a:d3:02:02", "dev", "vc", "nud", "permanent")
	accepted := map[string]*atomic.Int64{}
	for _, h := range []string{reachable, behind} {
		for _, p := range []string{port1, port2} {
			accepted[h+":"+p] = nsListener(t, b, net.JoinHostPort(h, p))
		}
	}
	// What linkgate dials is the name vCenter knows the host by.
	for old, name := range map[string]string{"DC0_H0": reachable, "DC0_C0_H0": refused, "DC0_C0_H1": behind} {
		if err := e.sim.Update("HostSystem", old, types.PropertyChange{Name: "name", Val: name}); err != nil {
			t.Fatal(err)
		}
	}
	var dials atomic.Int64
	const interval = 250 * time.Millisecond
	e.reachHook = func(o *probe.ReachOptions) {
		o.Dialer, o.Interval, o.Timeout = nsDialer(a, &dials), interval, time.Second
	}
	e.start(t, append([]string{"--network.required-interfaces", "va", "--vsphere.host-ports", port1 + "," + port2}, e.vcFlags...)...)

	target := `target="` + simTarget(e.sim) + `"`
	up := func(host, port, v string) *regexp.Regexp {
		return series("linkgate_vsphere_host_reachable", `host="`+host+`",port="`+port+`",`+target, v)
	}
	errs := func(host, port, kind string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^linkgate_vsphere_host_probe_errors_total\{class="[a-z]+",host="` + regexp.QuoteMeta(host) +
			`",kind="` + kind + `",port="` + port + `",` + regexp.QuoteMeta(target) + `\} [1-9][0-9]*$`)
	}
	hostPath := func(h string) string { return "/ready/host/" + h + "?verbose" }
	await(t, e.base, "reachable, refused", time.Now(), 30*time.Second,
		expect{path: hostPath(reachable), code: 200, parts: []string{"[+]host ok\n", "[+]host-reachable ok\n", "readyz check passed"}},
		expect{path: hostPath(behind), code: 200, parts: []string{"[+]host-reachable ok\n"}},
		expect{path: hostPath(refused), code: 503, parts: []string{"[+]host ok\n",
			"[-]host-reachable failed: port " + port1 + ": refused: ", "; port " + port2 + ": refused: "}},
		expect{path: "/metrics", code: 200, res: []*regexp.Regexp{
			up(reachable, port1, "1"), up(reachable, port2, "1"), up(behind, port1, "1"), up(behind, port2, "1"),
			up(refused, port1, "0"), up(refused, port2, "0"), errs(refused, port1, "refused"), errs(refused, port2, "refused"),
		}})
	for addr, n := range accepted {
		if n.Load() == 0 {
			t.Errorf("the listener at %s accepted nothing", addr)
		}
	}

	// The far end of the link goes down: the probes time out (1 s here).
	start := time.Now()
	b.IP(t, "link", "set", "vd", "down")
	d := await(t, e.base, "link down", start, 10*time.Second,
		expect{path: hostPath(behind), code: 503, parts: []string{"[+]host ok\n",
			"[-]host-reachable failed: port " + port1 + ": timeout: ", "; port " + port2 + ": timeout: "}},
		expect{path: "/metrics", code: 200, res: []*regexp.Regexp{
			up(behind, port1, "0"), up(behind, port2, "0"), errs(behind, port1, "timeout"), errs(behind, port2, "timeout"),
			up(reachable, port1, "1"),
		}})
	t.Logf("link down → /ready/host 503 (timeout) in %v", d.Round(time.Millisecond))
	b.IP(t, "link", "set", "vd", "up")
	await(t, e.base, "link up again", time.Now(), 10*time.Second, expect{path: hostPath(behind), code: 200})

	// The node's required link goes down: probing pauses, the last known
	// results stay, nothing is dialed; back up, every host is probed at
	// once.
	a.IP(t, "link", "set", "va", "down")
	await(t, e.base, "paused", time.Now(), 20*time.Second,
		expect{path: hostPath(reachable), code: 503, parts: []string{"[-]host-reachable failed: probing paused: the network is down\n"}},
		expect{path: hostPath(refused), code: 503, parts: []string{"[-]host-reachable failed: probing paused: the network is down; last known: port " + port1 + ": refused: "}},
		expect{path: "/metrics", code: 200, res: []*regexp.Regexp{up(reachable, port1, "1"), up(refused, port1, "0")}})
	before := dials.Load()
	time.Sleep(6 * interval)
	if n := dials.Load() - before; n != 0 {
		t.Errorf("%d dials while the network was down over %v (%v interval), want none", n, 6*interval, interval)
	}
	start = time.Now()
	a.IP(t, "link", "set", "va", "up")
	d = await(t, e.base, "network back", start, 20*time.Second,
		expect{path: hostPath(reachable), code: 200, parts: []string{"[+]host-reachable ok\n"}})
	if dials.Load() == before {
		t.Error("no dial after the network came back")
	}
	t.Logf("network back → /ready/host 200 in %v", d.Round(time.Millisecond))
}
