package main

import (
	"regexp"
	"testing"
	"time"

	"github.com/vmware/govmomi/vim25/types"
)

// End-to-end tests of the inventory watch losing its vCenter session
// (issue 11) through the real sidecar: vCenter ends the session, or
// restarts, and the watch is made again over a new session without the
// probe's schedule (an hour) coming due: the failed watch asks for a
// probe, the probe logs in again, the watch starts over.

// restartHost is the host these tests follow.
const restartHost = "DC0_H0"

// inMaintenance puts restartHost in or out of maintenance mode in e's
// simulator.
func (e *sidecarEnv) inMaintenance(t *testing.T, on bool) {
	t.Helper()
	if err := e.sim.Update("HostSystem", restartHost, types.PropertyChange{Name: "runtime.inMaintenanceMode", Val: on}); err != nil {
		t.Fatal(err)
	}
}

// watchSeries are the expectations on /ready/host/restartHost and
// /metrics of these tests, for e's target.
type watchSeries struct {
	name   string // the target
	target string // its label, target="..."
	path   string
}

func newWatchSeries(e *sidecarEnv) watchSeries {
	name := simTarget(e.sim)
	return watchSeries{name: name, target: `target="` + name + `"`, path: "/ready/host/" + restartHost + "?verbose"}
}

// verified: the inventory is verified over session number logins (the
// count of successful logins), and the host is ready, or in maintenance.
func (w watchSeries) verified(logins string, maintenance bool) []expect {
	host := expect{path: w.path, code: 200, parts: []string{"[+]inventory ok\n", "[+]vcenter-target ok\n", "[+]host ok\n", "[+]datastores ok\n"}}
	if maintenance {
		host = expect{path: w.path, code: 503, parts: []string{"[+]inventory ok\n", "[+]vcenter-target ok\n", "[-]host failed: in maintenance mode\n"}}
	}
	return []expect{host, {path: "/metrics", code: 200, res: []*regexp.Regexp{
		series("linkgate_vsphere_inventory_verified", w.target, "1"),
		series("linkgate_vcenter_logins_total", `result="success",`+w.target, logins),
	}}}
}

// unverified: /ready/host fails closed on the inventory, which the
// gauge says is unverified.
func (w watchSeries) unverified(more ...string) []expect {
	return []expect{
		{path: w.path, code: 503, parts: append([]string{"[-]inventory failed: " + w.name + ": inventory unverified: "}, more...)},
		{path: "/metrics", code: 200, res: []*regexp.Regexp{series("linkgate_vsphere_inventory_verified", w.target, "0")}},
	}
}

// noFailedLogins: no login was rejected or lost on the way.
func (w watchSeries) noFailedLogins(t *testing.T, e *sidecarEnv) {
	t.Helper()
	failed := regexp.MustCompile(`(?m)^linkgate_vcenter_logins_total\{result="failure",` + regexp.QuoteMeta(w.target) + `\} [1-9][0-9]*$`)
	if _, body := fetch(e.base + "/metrics"); failed.MatchString(body) {
		t.Errorf("failed logins:\n%s", grepLines(body, "linkgate_vcenter_logins_total"))
	}
}

// refused is linkgate_vcenter_errors_total of refused connections.
func (w watchSeries) refused(t *testing.T, e *sidecarEnv) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^linkgate_vcenter_errors_total\{class="transient",kind="refused",` + regexp.QuoteMeta(w.target) + `\} ([0-9]+)$`)
	code, body := fetch(e.base + "/metrics")
	m := re.FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("/metrics (%d) has no refused errors:\n%s", code, grepLines(body, "linkgate_vcenter_errors_total"))
	}
	return m[1]
}

// TestSidecarInventorySessionExpiry: vCenter ends the session the
// inventory is watched over. /ready/host/NAME fails closed on the
// inventory at once; the watch's failure makes the probe log in again
// (its interval is an hour away) and the new watch's full retrieve shows
// what changed while there was no session; a change after that arrives
// as an update, over the new watch.
func TestSidecarInventorySessionExpiry(t *testing.T) {
	e := startSidecar(t, "--vcenter.interval", "1h", "--vsphere.host-ports=")
	w := newWatchSeries(e)
	await(t, e.base, "first verified inventory", time.Now(), 30*time.Second, w.verified("1", false)...)

	// Logins wait until released, so that the time without a session is
	// the test's: the unverified inventory is seen for certain, and the
	// change below is made while no watch can see it.
	release := e.sim.HoldLogins()
	t.Cleanup(release)
	start := time.Now()
	n, err := e.sim.ExpireSessions()
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("ended %d sessions of %s, want linkgate's one", n, e.sim.User)
	}
	d := await(t, e.base, "session ended", start, 10*time.Second, w.unverified("(the host's state below is the last known)\n", "[+]host ok\n")...)
	t.Logf("session ended → /ready/host 503 on the inventory in %v", d.Round(time.Millisecond))
	e.log.WaitFor(t, "vCenter session expired: logging in again", 10*time.Second)

	e.inMaintenance(t, true)
	start = time.Now()
	release()
	d = await(t, e.base, "new session, new watch", start, 10*time.Second, w.verified("2", true)...)
	t.Logf("login released → verified again, with the change made without a session, in %v", d.Round(time.Millisecond))

	// The new watch is live: a change now arrives as an update.
	start = time.Now()
	e.inMaintenance(t, false)
	d = await(t, e.base, "a change over the new watch", start, 5*time.Second, w.verified("2", false)...)
	t.Logf("change after the new session → /ready/host 200 in %v", d.Round(time.Millisecond))
	w.noFailedLogins(t, e)
}

// TestSidecarInventorySimulatorRestart: vCenter stops and comes back on
// the same address, every session and property collector gone. While it
// is down /ready and /ready/host/NAME fail and the inventory is
// unverified; once it is back, a new session and a new watch show the
// new vCenter's state (not the old one's) and follow its changes.
func TestSidecarInventorySimulatorRestart(t *testing.T) {
	// A refused connection is retried after 100 ms, doubling to 1 s at
	// most (±25 %): the probe finds the restarted vCenter within about a
	// second.
	e := startSidecar(t, "--vcenter.interval", "1h", "--vsphere.host-ports=",
		"--vcenter.base-backoff", "100ms", "--vcenter.max-backoff", "1s")
	w := newWatchSeries(e)
	ready := expect{path: "/ready?verbose", code: 200, parts: []string{"[+]vcenter ok\n"}}
	await(t, e.base, "first verified inventory", time.Now(), 30*time.Second, append(w.verified("1", false), ready)...)
	e.inMaintenance(t, true)
	await(t, e.base, "in maintenance before the restart", time.Now(), 5*time.Second, w.verified("1", true)...)

	start := time.Now()
	e.sim.Stop()
	down := append(w.unverified(), expect{path: "/ready?verbose", code: 503, parts: []string{"[-]vcenter failed: transient: refused: "}},
		expect{path: "/metrics", code: 200, res: []*regexp.Regexp{
			series("linkgate_vcenter_up", w.target, "0"),
			regexp.MustCompile(`(?m)^linkgate_vcenter_errors_total\{class="transient",kind="refused",` + regexp.QuoteMeta(w.target) + `\} [1-9][0-9]*$`),
		}})
	d := await(t, e.base, "vCenter down", start, 10*time.Second, down...)
	t.Logf("vCenter stopped → /ready and /ready/host 503 in %v", d.Round(time.Millisecond))
	// Still down after a later attempt failed too: nothing stale comes
	// back while the probe keeps failing.
	refused := w.refused(t, e)
	for deadline := time.Now().Add(10 * time.Second); w.refused(t, e) == refused; {
		if time.Now().After(deadline) {
			t.Fatalf("no probe attempt after the %v refused ones in 10s", refused)
		}
		time.Sleep(10 * time.Millisecond)
	}
	await(t, e.base, "still down", time.Now(), time.Second, down...)

	start = time.Now()
	if err := e.sim.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := simTarget(e.sim); got != w.name {
		t.Fatalf("restarted at %s, want the same address, %s", got, w.name)
	}
	// The restarted vCenter's host is not in maintenance: what is shown
	// is its state, retrieved over a new session.
	d = await(t, e.base, "vCenter back", start, 10*time.Second, append(w.verified("2", false), ready)...)
	t.Logf("vCenter restarted → /ready and /ready/host 200 with its state in %v", d.Round(time.Millisecond))

	for _, on := range []bool{true, false} {
		start = time.Now()
		e.inMaintenance(t, on)
		d = await(t, e.base, "a change in the restarted vCenter", start, 5*time.Second, w.verified("2", on)...)
		t.Logf("maintenance %v in the restarted vCenter → /ready/host in %v", on, d.Round(time.Millisecond))
	}
	w.noFailedLogins(t, e)
}
