package sidecar

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/linkgate/linkgate/internal/redact"
	"github.com/linkgate/linkgate/probe"
)

// Names of the host checks of /ready/host/NAME, reported after the
// gate's own checks.
const (
	CheckInventory      = "inventory"
	CheckVCenterTarget  = "vcenter-target"
	CheckHost           = "host"
	CheckHostReachable  = "host-reachable"
	CheckHostDatastores = "datastores"
)

// InventorySource publishes the vSphere inventory (ESXi hosts and
// datastores) of every vCenter target; the channel is closed at the next
// change. *probe.Prober satisfies it: the handler reads probe.Inventory
// itself, the one type for that fact.
type InventorySource interface {
	Inventory() ([]*probe.Inventory, <-chan struct{})
}

// ReachSource is the reachability of one target's hosts from this node,
// whose Changed channel signals the next one. *probe.Reach satisfies it.
type ReachSource interface {
	Snapshot() *probe.Reachability
}

// hostLookup is where a host name was found: the inventory that lists
// it (or, when no inventory lists it, every one in doubt, which might).
type hostLookup struct {
	inv   *probe.Inventory
	host  probe.Host
	found bool
	// also are the other hosts of that name ("target: host-ID"), in any
	// inventory, verified or last known: the name does not say which
	// host is meant.
	also []string
	// doubt are the unverified inventories when the host is in none.
	doubt []*probe.Inventory
}

// lookupHost finds name in invs: in a verified inventory first, else in
// the last known state of an unverified one, noting every other host of
// that name.
func lookupHost(invs []*probe.Inventory, name string) hostLookup {
	var l hostLookup
	for _, verified := range []bool{true, false} {
		for _, inv := range invs {
			if inv == nil || inv.Verified != verified {
				continue
			}
			hosts := inv.HostsNamed(name)
			if len(hosts) == 0 && !verified {
				l.doubt = append(l.doubt, inv)
			}
			for _, h := range hosts {
				if !l.found {
					l.inv, l.host, l.found = inv, h, true
					continue
				}
				l.also = append(l.also, redact.Target(inv.Target)+": "+h.ID)
			}
		}
	}
	if l.found {
		l.doubt = nil
	}
	return l
}

// judgeHost extends v, the gate's verdict, with the checks of host name
// (HostChecks), evaluated now against the current inventory, vCenter
// status and reachability: ready when the gate is and every host check
// holds.
func (h *Handler) judgeHost(v verdict, name string, now time.Time) verdict {
	invs, statuses, reach := h.sources(&v)
	hc, known := HostChecks(name, invs, statuses, reach, now)
	v.noSuch = !known
	return extend(v, hc, now)
}

// sources are the current inventory, vCenter status and reachability
// lookup, for the checks of a host or VM; it notes the channels of what
// is read in v.wake, so that a long-poll wakes on their change.
func (h *Handler) sources(v *verdict) (invs []*probe.Inventory, statuses []probe.Status, reach func(string) *probe.Reachability) {
	if h.inventory != nil {
		invs, v.wake[0] = h.inventory.Inventory()
	}
	if h.gate.vcenter != nil {
		statuses, v.wake[1] = h.gate.vcenter.Status()
	}
	reach = func(target string) *probe.Reachability {
		r := h.reachOf(target)
		if r == nil {
			return nil
		}
		snap := r.Snapshot()
		v.wake[2] = snap.Changed()
		return snap
	}
	return invs, statuses, reach
}

// extend appends checks to v's, after the gate's: ready only if the gate
// is and all of them hold. Before the gate's first evaluation it says so.
func extend(v verdict, checks []CheckStatus, now time.Time) verdict {
	if v.state != nil && v.state.Version == 0 {
		v.checks = append(slices.Clip(v.checks), CheckStatus{CheckResult: CheckResult{Name: "gate", Reason: "checks not evaluated yet"}, Since: now})
	}
	v.checks = append(slices.Clip(v.checks), checks...)
	for _, c := range checks {
		if !c.OK {
			v.ready = false
		}
	}
	return v
}

// HostChecks are the checks of ESXi host name, after the gate's own, in
// this order: inventory (the host's vCenter inventory is verified),
// vcenter-target (its vCenter is up), host (connected, not in
// maintenance, powered on), host-reachable (every probed port connects
// from this node; only when reach, which may be nil, has a snapshot for
// the target) and datastores (all the host mounts are accessible). They
// are not damped: each is a fact of vCenter's or of a probe's, evaluated
// at now. Since is when that fact is known to hold, else now.
//
// known is false when no inventory lists the host and none is in doubt:
// the host does not exist (404). A host that no verified inventory lists
// while one is unverified fails closed, on inventory.
func HostChecks(name string, invs []*probe.Inventory, statuses []probe.Status, reach func(target string) *probe.Reachability, now time.Time) (checks []CheckStatus, known bool) {
	l := lookupHost(invs, name)
	if !l.found {
		var problems []string
		since := now
		for _, inv := range l.doubt {
			problems = append(problems, inventoryDoubt(inv))
			if !inv.DoubtSince.IsZero() && inv.DoubtSince.Before(since) {
				since = inv.DoubtSince
			}
		}
		if len(problems) == 0 {
			problems = append(problems, "no inventory lists the host")
		}
		checks = addCheck(checks, CheckInventory, strings.Join(problems, "; "), since, now)
		checks = addCheck(checks, CheckHost, fmt.Sprintf("%q is not in the inventory", name), now, now)
		return checks, len(l.doubt) > 0
	}
	if len(l.also) > 0 {
		// Fail closed: which host's state would be the answer?
		checks = inventoryCheck(checks, l.inv, now)
		checks = addCheck(checks, CheckHost, fmt.Sprintf("%d hosts are named %q (%s: %s; %s): ambiguous; the VM's gate (/ready/vm/NAME) knows which one runs it",
			len(l.also)+1, name, redact.Target(l.inv.Target), l.host.ID, strings.Join(l.also, "; ")), now, now)
		return checks, true
	}
	return hostChecksIn(l.inv, l.host, statuses, reach, now), true
}

// hostChecksIn are the checks of host, as inv lists it: inventory,
// vcenter-target, host, host-reachable (when reach has a snapshot for
// inv's target) and datastores.
func hostChecksIn(inv *probe.Inventory, host probe.Host, statuses []probe.Status, reach func(target string) *probe.Reachability, now time.Time) []CheckStatus {
	checks := inventoryCheck(nil, inv, now)
	checks = addCheck(checks, CheckVCenterTarget, targetProblem(statuses, inv.Target, now), now, now)
	checks = addCheck(checks, CheckHost, hostProblem(host), now, now)
	if reach != nil {
		if snap := reach(inv.Target); snap != nil {
			problem, since := reachProblem(snap, host)
			checks = addCheck(checks, CheckHostReachable, problem, since, now)
		}
	}
	return addCheck(checks, CheckHostDatastores, datastoresProblem(inv, host), now, now)
}

// inventoryCheck appends the inventory check of inv.
func inventoryCheck(checks []CheckStatus, inv *probe.Inventory, now time.Time) []CheckStatus {
	if inv.Verified {
		return addCheck(checks, CheckInventory, "", now, now)
	}
	return addCheck(checks, CheckInventory, inventoryDoubt(inv)+" (the host's state below is the last known)", inv.DoubtSince, now)
}

// addCheck appends the check name, failing with problem unless it is
// "", holding since since (now when zero).
func addCheck(checks []CheckStatus, name, problem string, since, now time.Time) []CheckStatus {
	if since.IsZero() {
		since = now
	}
	return append(checks, CheckStatus{CheckResult: CheckResult{Name: name, OK: problem == "", Reason: problem}, Since: since})
}

// reachOf is the reachability source of target, nil when its hosts are
// not probed.
func (h *Handler) reachOf(target string) ReachSource {
	for _, r := range h.reach {
		if r.Snapshot().Target == target {
			return r
		}
	}
	return nil
}

func inventoryDoubt(inv *probe.Inventory) string {
	doubt := inv.Doubt
	if doubt == "" {
		doubt = "not verified"
	}
	return redact.Target(inv.Target) + ": inventory unverified: " + doubt
}

// targetProblem is why the host's vCenter target is not up ("" when it
// is), as the vcenter check words it, without the freshness rule (the
// gate's vcenter check applies it).
func targetProblem(statuses []probe.Status, target string, now time.Time) string {
	for _, st := range statuses {
		if st.Target == target {
			return vcenterProblem(st, 0, &Input{Now: now})
		}
	}
	return "no vCenter probe results yet"
}

// hostProblem is why vCenter's view of the host forbids reading from it:
// not connected, in maintenance, not powered on, or not known.
func hostProblem(host probe.Host) string {
	var out []string
	if len(host.Missing) > 0 {
		out = append(out, "vCenter did not return "+strings.Join(host.Missing, ", "))
	}
	if !host.IsConnected() {
		out = append(out, "connection state "+orUnknown(host.ConnectionState))
	}
	if host.InMaintenance {
		out = append(out, "in maintenance mode")
	}
	if host.PowerState != "poweredOn" {
		out = append(out, "power state "+orUnknown(host.PowerState))
	}
	return strings.Join(out, "; ")
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// reachProblem is why the host is not reachable from this node on every
// port ("" when it is), and since when its ports' state holds.
func reachProblem(snap *probe.Reachability, host probe.Host) (string, time.Time) {
	hr, ok := snap.Host(host.Name)
	if !ok {
		if !host.IsConnected() {
			return "not probed: the host is not connected", time.Time{}
		}
		return "not probed yet", time.Time{}
	}
	var since time.Time // the latest change of a port's state
	for _, p := range hr.Ports {
		if p.Since.After(since) {
			since = p.Since
		}
	}
	if snap.Paused {
		why := "probing paused: the network is down"
		if !hr.Reachable() {
			why += "; last known: " + hr.Problem()
		}
		return why, since
	}
	return hr.Problem(), since
}

// datastoresProblem lists the host's datastores vCenter does not report
// accessible ("" when all are).
func datastoresProblem(inv *probe.Inventory, host probe.Host) string {
	var out []string
	for _, id := range host.Datastores {
		ds, ok := inv.Datastore(id)
		switch {
		case !ok:
			out = append(out, id+": not described by vCenter")
		case len(ds.Missing) > 0:
			out = append(out, fmt.Sprintf("%s (%s): vCenter did not return %s", cmp.Or(ds.Name, id), id, strings.Join(ds.Missing, ", ")))
		case !ds.Accessible:
			out = append(out, fmt.Sprintf("%s (%s): not accessible", cmp.Or(ds.Name, id), id))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "inaccessible: " + strings.Join(out, "; ")
}

// CheckVM is the check of /ready/vm/NAME that the VM was resolved to a
// host of the inventory; CheckVMDatastores that its datastores are
// accessible.
const (
	CheckVM           = "vm"
	CheckVMDatastores = "vm-datastores"
)

// VMSource resolves a VM by name or instance UUID to where it runs now,
// cached briefly; an error wrapping probe.ErrNoSuchVM says no vCenter has
// it. *probe.Prober satisfies it.
type VMSource interface {
	LookupVM(ctx context.Context, name string) (probe.VMPlacement, error)
}

// vmRecheck is how often a long-poll on a VM looks again for a move that
// no signal announces (the VM's placement is cached about as long).
const vmRecheck = 5 * time.Second

// judgeVM extends v, the gate's verdict, with the checks of the VM name
// (VMChecks), looked up now (the source caches it briefly). A long-poll
// looks again every vmRecheck: a VM moves without a signal.
func (h *Handler) judgeVM(ctx context.Context, v verdict, name string, now time.Time) verdict {
	v.poll = vmRecheck
	pl, err := h.vms.LookupVM(ctx, name)
	v.noSuch = errors.Is(err, probe.ErrNoSuchVM)
	invs, statuses, reach := h.sources(&v)
	return extend(v, VMChecks(pl, err, invs, statuses, reach, now), now)
}

// VMChecks are the checks of a VM that lookupErr or pl says where it
// runs, in this order: vm (resolved to a host of its vCenter's
// inventory), the checks of that host (as HostChecks, but the very host
// the VM runs on: by its vCenter and ID, not by name), and vm-datastores
// (the VM's datastores accessible). Without a host, vm alone, failing.
func VMChecks(pl probe.VMPlacement, lookupErr error, invs []*probe.Inventory, statuses []probe.Status, reach func(target string) *probe.Reachability, now time.Time) []CheckStatus {
	var inv *probe.Inventory
	for _, i := range invs {
		if i != nil && i.Target == pl.Target {
			inv = i
		}
	}
	var host probe.Host
	var problem string
	switch {
	case lookupErr != nil:
		problem = lookupErr.Error()
	case pl.HostID == "":
		problem = "vCenter does not say which host runs the VM"
	case inv == nil:
		problem = redact.Target(pl.Target) + ": no inventory"
	default:
		var ok bool
		if host, ok = inv.HostByID(pl.HostID); !ok {
			problem = fmt.Sprintf("the VM runs on %s, which the inventory does not hold (filtered out, or not retrieved yet)", pl.HostID)
			if !inv.Verified {
				problem += "; " + inventoryDoubt(inv)
			}
		}
	}
	checks := addCheck(nil, CheckVM, problem, now, now)
	if problem != "" {
		return checks
	}
	checks = append(checks, hostChecksIn(inv, host, statuses, reach, now)...)
	return addCheck(checks, CheckVMDatastores, vmDatastoresProblem(inv, pl), now, now)
}

// vmDatastoresProblem lists the VM's datastores its target's inventory
// does not report accessible ("" when all are); an unverified inventory
// knows nothing for sure.
func vmDatastoresProblem(inv *probe.Inventory, pl probe.VMPlacement) string {
	if !inv.Verified {
		return inventoryDoubt(inv)
	}
	return datastoresProblem(inv, probe.Host{Datastores: pl.Datastores})
}
