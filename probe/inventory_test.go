package probe

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// inventoryModel is a VPX model with one cluster of three hosts, one
// standalone host and two datastores every host mounts, no VM.
func inventoryModel(m *simulator.Model) {
	m.ClusterHost, m.Host, m.Datastore, m.Machine = 3, 1, 2, 0
}

// startInventorySim runs a simulator with model (inventoryModel when
// nil).
func startInventorySim(t testing.TB, model func(*simulator.Model)) *sim {
	t.Helper()
	if model == nil {
		model = inventoryModel
	}
	return startSim(t, simOptions{model: model})
}

// inventoryConfig watches the simulator's inventory with a probe interval
// far longer than any test: whatever the inventory learns, it learns
// from vCenter's updates, not from a probe.
func (s *sim) inventoryConfig() Config {
	c := s.config()
	c.Inventory = true
	c.Interval = time.Hour
	return c
}

// testInventoryWait is MaxWaitSeconds in these tests: a wait that this
// side abandoned (a lost session) holds the simulator's server for that
// long, and its Close waits for it.
const testInventoryWait = time.Second

// runInventory runs a prober with the inventory watch until the test ends.
func runInventory(t testing.TB, cfg Config, network Network, opts ...Option) *Prober {
	t.Helper()
	p := newProber(t, cfg, network, opts...)
	p.invWait = testInventoryWait
	running(t, p)
	return p
}

// waitInventory waits until cond holds for target i's inventory.
func waitInventory(t testing.TB, p *Prober, i int, what string, cond func(*Inventory) bool) *Inventory {
	t.Helper()
	v := testkit.Follow(t, what, guard,
		func() inventoryView { invs, ch := p.Inventory(); return inventoryView{invs[i], ch} },
		func(v inventoryView) <-chan struct{} { return v.changed },
		func(v inventoryView) bool { return cond(v.inv) })
	return v.inv
}

// inventoryView is one inventory and its change channel, for testkit.Follow.
type inventoryView struct {
	inv     *Inventory
	changed <-chan struct{}
}

func (v inventoryView) String() string {
	var b strings.Builder
	b.WriteString(v.inv.String())
	for _, h := range v.inv.Hosts {
		fmt.Fprintf(&b, "\n  host %+v", h)
	}
	for _, d := range v.inv.Datastores {
		fmt.Fprintf(&b, "\n  datastore %+v", d)
	}
	return b.String()
}

func isVerified(inv *Inventory) bool { return inv.Verified }

// entity finds a simulator object of kind by name.
func (s *sim) entity(t testing.TB, kind, name string) mo.Entity {
	t.Helper()
	for _, e := range s.model.Map().All(kind) {
		if e.Entity().Name == name {
			return e
		}
	}
	t.Fatalf("no %s named %s in the simulator", kind, name)
	return nil
}

// update changes properties of a simulator object as vCenter would: the
// registry applies them and tells every property collector's waiters.
func (s *sim) update(obj mo.Reference, changes ...types.PropertyChange) {
	ctx := s.model.Service.Context
	s.model.Map().AtomicUpdate(ctx, obj, changes)
}

func (s *sim) removeEntity(obj mo.Reference) {
	ctx := s.model.Service.Context
	s.model.Map().Remove(ctx, obj.Reference())
}

func TestInventoryFollowsChanges(t *testing.T) {
	s := startInventorySim(t, nil)
	p := runInventory(t, s.inventoryConfig(), nil)
	inv := waitInventory(t, p, 0, "first verified inventory", isVerified)
	t.Logf("first: %s", inv)

	var names []string
	for _, h := range inv.Hosts {
		names = append(names, h.Name)
		if h.ConnectionState != "connected" || h.PowerState != "poweredOn" || h.InMaintenance || h.Missing != nil {
			t.Errorf("host %+v, want connected, powered on, not in maintenance", h)
		}
		if len(h.Datastores) != 2 {
			t.Errorf("host %s mounts %v, want the 2 datastores", h.Name, h.Datastores)
		}
		for _, id := range h.Datastores {
			if _, ok := inv.Datastore(id); !ok {
				t.Errorf("host %s mounts %s, which the inventory does not hold", h.Name, id)
			}
		}
	}
	if want := []string{"DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2", "DC0_H0"}; !slices.Equal(names, want) {
		t.Fatalf("hosts %v, want %v", names, want)
	}
	if len(inv.Datastores) != 2 {
		t.Fatalf("datastores %+v, want 2", inv.Datastores)
	}
	for _, d := range inv.Datastores {
		if !d.Accessible || d.Type == "" || !strings.HasPrefix(d.Name, "LocalDS_") || d.Missing != nil {
			t.Errorf("datastore %+v", d)
		}
	}
	if got := metricValue(t, p, "linkgate_vsphere_inventory_verified"); got != 1 {
		t.Errorf("inventory_verified = %v, want 1", got)
	}
	probes := s.countCalls("CurrentTime")

	host := s.entity(t, "HostSystem", "DC0_C0_H1")
	ds := s.entity(t, "Datastore", "LocalDS_1")
	for _, step := range []struct {
		name   string
		obj    mo.Reference
		change types.PropertyChange
		cond   func(*Inventory) bool
	}{
		{"disconnected", host, types.PropertyChange{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateDisconnected},
			func(inv *Inventory) bool {
				h, _ := hostNamed(inv, "DC0_C0_H1")
				return h.ConnectionState == "disconnected"
			}},
		{"not responding", host, types.PropertyChange{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateNotResponding},
			func(inv *Inventory) bool {
				h, _ := hostNamed(inv, "DC0_C0_H1")
				return h.ConnectionState == "notResponding"
			}},
		{"in maintenance", host, types.PropertyChange{Name: "runtime.inMaintenanceMode", Val: true},
			func(inv *Inventory) bool { h, _ := hostNamed(inv, "DC0_C0_H1"); return h.InMaintenance }},
		{"standby", host, types.PropertyChange{Name: "runtime.powerState", Val: types.HostSystemPowerStateStandBy},
			func(inv *Inventory) bool { h, _ := hostNamed(inv, "DC0_C0_H1"); return h.PowerState == "standBy" }},
		{"datastore inaccessible", ds, types.PropertyChange{Name: "summary.accessible", Val: false},
			func(inv *Inventory) bool { d, _ := inv.Datastore(ds.Reference().Value); return !d.Accessible }},
	} {
		start := time.Now()
		s.update(step.obj, step.change)
		inv = waitInventory(t, p, 0, step.name, func(inv *Inventory) bool { return inv.Verified && step.cond(inv) })
		t.Logf("%s: in the inventory after %v", step.name, time.Since(start).Round(time.Millisecond))
	}
	if n := s.countCalls("CurrentTime"); n != probes {
		t.Errorf("the probe ran %d times during the changes: the inventory must follow vCenter's updates, not probes", n-probes)
	}

	// The others did not change.
	for _, h := range inv.Hosts {
		if h.Name != "DC0_C0_H1" && (h.ConnectionState != "connected" || h.InMaintenance || h.PowerState != "poweredOn") {
			t.Errorf("host %+v changed too", h)
		}
	}

	// The metrics follow.
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"linkgate_vsphere_host_connection_state", []string{"host", "DC0_C0_H1", "state", "notResponding"}, 1},
		{"linkgate_vsphere_host_connection_state", []string{"host", "DC0_C0_H1", "state", "connected"}, 0},
		{"linkgate_vsphere_host_connection_state", []string{"host", "DC0_C0_H1", "state", "disconnected"}, 0},
		{"linkgate_vsphere_host_connection_state", []string{"host", "DC0_C0_H0", "state", "connected"}, 1},
		{"linkgate_vsphere_host_maintenance", []string{"host", "DC0_C0_H1"}, 1},
		{"linkgate_vsphere_host_maintenance", []string{"host", "DC0_H0"}, 0},
		{"linkgate_vsphere_host_power_state", []string{"host", "DC0_C0_H1", "state", "standBy"}, 1},
		{"linkgate_vsphere_host_power_state", []string{"host", "DC0_C0_H1", "state", "poweredOn"}, 0},
		{"linkgate_vsphere_host_power_state", []string{"host", "DC0_C0_H2", "state", "poweredOn"}, 1},
		{"linkgate_vsphere_datastore_accessible", []string{"datastore", "LocalDS_1"}, 0},
		{"linkgate_vsphere_datastore_accessible", []string{"datastore", "LocalDS_0"}, 1},
	} {
		if got := metricValue(t, p, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := metricValue(t, p, "linkgate_vsphere_inventory_updates_total"); got < 6+5 {
		t.Errorf("inventory_updates_total = %v, want the 6 objects of the retrieve and the 5 changes at least", got)
	}
	problems, err := testutil.CollectAndLint(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}

	// A host and a datastore leave vCenter, and the inventory and the
	// exposition. The hosts still list the datastore (the simulator does
	// not unmount it): it stays as a placeholder that fails every check.
	s.removeEntity(host)
	s.removeEntity(ds)
	inv = waitInventory(t, p, 0, "host and datastore gone", func(inv *Inventory) bool {
		_, h := hostNamed(inv, "DC0_C0_H1")
		d, _ := inv.Datastore(ds.Reference().Value)
		return inv.Verified && !h && d.Name == ""
	})
	if d, _ := inv.Datastore(ds.Reference().Value); d.Accessible || len(d.Missing) != 3 {
		t.Errorf("a datastore vCenter no longer describes: %+v, want inaccessible with its properties missing", d)
	}
	for _, c := range []struct{ name, label, value string }{
		{"linkgate_vsphere_host_maintenance", "host", "DC0_C0_H1"},
		{"linkgate_vsphere_host_connection_state", "host", "DC0_C0_H1"},
		{"linkgate_vsphere_host_power_state", "host", "DC0_C0_H1"},
		{"linkgate_vsphere_datastore_accessible", "datastore", "LocalDS_1"},
	} {
		if got := metricValue(t, p, c.name, c.label, c.value); got != -1 {
			t.Errorf("%s{%s=%q} remains (%v) after it left vCenter", c.name, c.label, c.value, got)
		}
	}
}

func TestInventoryDisabled(t *testing.T) {
	s := startInventorySim(t, nil)
	cfg := s.config() // Inventory false
	p := newProber(t, cfg, nil)
	running(t, p)
	waitStatus(t, p, 0, "up", func(st Status) bool { return st.Up })
	if invs, ch := p.Inventory(); invs != nil || ch != nil {
		t.Errorf("Inventory() = %v, %v without Config.Inventory", invs, ch)
	}
	if got := metricValue(t, p, "linkgate_vsphere_inventory_verified"); got != -1 {
		t.Errorf("inventory_verified exported without Config.Inventory")
	}
	if n := s.countCalls("CreateContainerView"); n != 0 {
		t.Errorf("%d container views created without Config.Inventory", n)
	}
}

// TestInventorySessionExpiry: vCenter ends the session the inventory is
// watched over. The inventory goes unverified, the schedule logs in again
// at once (its interval is an hour away) and the watch starts over with
// a full retrieve.
func TestInventorySessionExpiry(t *testing.T) {
	s := startInventorySim(t, nil)
	p := runInventory(t, s.inventoryConfig(), nil)
	first := waitInventory(t, p, 0, "first verified inventory", isVerified)
	keys := s.probeSessions()
	if len(keys) != 1 {
		t.Fatalf("prober used %d sessions, want 1", len(keys))
	}
	terminateSessions(t, s, keys)

	lost := waitInventory(t, p, 0, "unverified after the session ended", func(inv *Inventory) bool { return !inv.Verified })
	t.Logf("doubt: %s", lost.Doubt)
	if lost.DoubtSince.IsZero() || len(lost.Hosts) != len(first.Hosts) {
		t.Errorf("unverified inventory %s (since %v): want the last known hosts kept, and when the doubt began", lost, lost.DoubtSince)
	}
	back := waitInventory(t, p, 0, "verified again", isVerified)
	if len(back.Hosts) != len(first.Hosts) || back.Version <= lost.Version {
		t.Errorf("after the new session: %s", back)
	}
	if got := metricValue(t, p, "linkgate_vcenter_logins_total", "result", "success"); got != 2 {
		t.Errorf("logins = %v, want 2: one at start, one after the expiry, none for the watch", got)
	}
	// And it is a watch again: a change arrives.
	s.update(s.entity(t, "HostSystem", "DC0_H0"), types.PropertyChange{Name: "runtime.inMaintenanceMode", Val: true})
	waitInventory(t, p, 0, "a change over the new session", func(inv *Inventory) bool {
		h, _ := hostNamed(inv, "DC0_H0")
		return inv.Verified && h.InMaintenance
	})
}

// TestInventorySimulatorRestart: vCenter restarts, every session and
// every watch gone. The inventory is unverified until a new session and
// a new full retrieve, which shows the new vCenter's state, not the old
// one's.
func TestInventorySimulatorRestart(t *testing.T) {
	s := startInventorySim(t, nil)
	cfg := s.inventoryConfig()
	cfg.BaseBackoff, cfg.MaxBackoff = 100*time.Millisecond, time.Second
	p := runInventory(t, cfg, nil)
	waitInventory(t, p, 0, "first verified inventory", isVerified)
	s.update(s.entity(t, "HostSystem", "DC0_C0_H2"), types.PropertyChange{Name: "runtime.inMaintenanceMode", Val: true})
	before := waitInventory(t, p, 0, "host in maintenance", func(inv *Inventory) bool {
		h, _ := hostNamed(inv, "DC0_C0_H2")
		return inv.Verified && h.InMaintenance
	})

	s.restart()
	lost := waitInventory(t, p, 0, "unverified after the restart", func(inv *Inventory) bool { return !inv.Verified })
	t.Logf("doubt: %s", lost.Doubt)
	after := waitInventory(t, p, 0, "verified from the restarted vCenter", func(inv *Inventory) bool {
		h, _ := hostNamed(inv, "DC0_C0_H2")
		return inv.Verified && !h.InMaintenance
	})
	if len(after.Hosts) != len(before.Hosts) || len(after.Datastores) != len(before.Datastores) {
		t.Errorf("after the restart: %s, before: %s", after, before)
	}
	if got := metricValue(t, p, "linkgate_vcenter_logins_total", "result", "success"); got != 2 {
		t.Errorf("logins = %v, want 2", got)
	}
}

// TestInventoryNetworkPause: the network goes down. The inventory is
// unverified at once, without waiting for a failure; when the network is
// back, the watch starts over on the same session and sees what changed
// meanwhile.
func TestInventoryNetworkPause(t *testing.T) {
	s := startInventorySim(t, nil)
	network := newFakeNetwork(true)
	p := runInventory(t, s.inventoryConfig(), network)
	waitInventory(t, p, 0, "first verified inventory", isVerified)

	network.set(false)
	lost := waitInventory(t, p, 0, "unverified when the network went down", func(inv *Inventory) bool { return !inv.Verified })
	if !strings.Contains(lost.Doubt, "network down") {
		t.Errorf("doubt %q, want the network named", lost.Doubt)
	}
	s.update(s.entity(t, "HostSystem", "DC0_C0_H0"), types.PropertyChange{Name: "runtime.connectionState", Val: types.HostSystemConnectionStateDisconnected})
	network.set(true)
	waitInventory(t, p, 0, "verified with the change made during the outage", func(inv *Inventory) bool {
		h, _ := hostNamed(inv, "DC0_C0_H0")
		return inv.Verified && h.ConnectionState == "disconnected"
	})
	if got := metricValue(t, p, "linkgate_vcenter_logins_total", "result", "success"); got != 1 {
		t.Errorf("logins = %v, want 1: the session outlives a network outage", got)
	}
	if n := s.countCalls("CreatePropertyCollector"); n != 2 {
		t.Errorf("%d property collectors created, want 2 (one per watch)", n)
	}
	if n := s.countCalls("DestroyPropertyCollector"); n != 1 {
		t.Errorf("%d property collectors destroyed, want 1: the first watch's, before the second", n)
	}
}

func TestInventoryHostFilters(t *testing.T) {
	s := startInventorySim(t, func(m *simulator.Model) {
		inventoryModel(m)
		m.Datacenter = 2
	})
	for _, tc := range []struct {
		name             string
		include, exclude string
		want             []string
	}{
		{"all", "", "", []string{"DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2", "DC0_H0", "DC1_C0_H0", "DC1_C0_H1", "DC1_C0_H2", "DC1_H0"}},
		{"include", `DC1_.*`, "", []string{"DC1_C0_H0", "DC1_C0_H1", "DC1_C0_H2", "DC1_H0"}},
		{"include and exclude", `DC0_.*`, `.*_H[12]`, []string{"DC0_C0_H0", "DC0_H0"}},
		{"exclude", "", `DC0_C0_.*|DC1_.*`, []string{"DC0_H0"}},
		{"anchored", `C0`, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s.inventoryConfig()
			cfg.HostInclude, cfg.HostExclude = tc.include, tc.exclude
			p := runInventory(t, cfg, nil)
			inv := waitInventory(t, p, 0, "verified", isVerified)
			var names []string
			mounted := map[string]bool{}
			for _, h := range inv.Hosts {
				names = append(names, h.Name)
				for _, id := range h.Datastores {
					mounted[id] = true
				}
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("hosts %v, want %v", names, tc.want)
			}
			// The datastores are those of the hosts kept: each DC has its own.
			if len(inv.Datastores) != len(mounted) {
				t.Errorf("datastores %+v, want the %d the hosts kept mount", inv.Datastores, len(mounted))
			}
			for _, d := range inv.Datastores {
				if !mounted[d.ID] {
					t.Errorf("datastore %+v mounted by no host kept", d)
				}
			}
		})
	}
	for _, field := range []string{"HostInclude", "HostExclude"} {
		cfg := s.inventoryConfig()
		if field == "HostInclude" {
			cfg.HostInclude = "esx[0-9"
		} else {
			cfg.HostExclude = "(esx"
		}
		err := cfg.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != field {
			t.Errorf("bad %s: %v, want a ConfigError naming it", field, err)
		}
	}
}

// TestInventoryBounds: past MaxHosts or MaxDatastores the inventory is
// unverified and empty, with a reason, and no host or datastore series is
// exported; within them again, it is verified.
func TestInventoryBounds(t *testing.T) {
	s := startInventorySim(t, func(m *simulator.Model) {
		inventoryModel(m)
		m.Datacenter = 2 // 8 hosts, 4 datastores
	})
	t.Run("hosts", func(t *testing.T) {
		cfg := s.inventoryConfig()
		cfg.MaxHosts = 7
		p := runInventory(t, cfg, nil)
		over := waitInventory(t, p, 0, "over the host bound", func(inv *Inventory) bool { return strings.Contains(inv.Doubt, "too large") })
		if over.Verified || over.Hosts != nil || over.Datastores != nil || !strings.Contains(over.Doubt, "8 hosts") {
			t.Errorf("over the bound: %s", over)
		}
		if got := metricValue(t, p, "linkgate_vsphere_host_maintenance"); got != -1 {
			t.Errorf("host series exported over the bound")
		}
		if got := metricValue(t, p, "linkgate_vsphere_datastore_accessible"); got != -1 {
			t.Errorf("datastore series exported over the bound")
		}
		if got := metricValue(t, p, "linkgate_vsphere_inventory_verified"); got != 0 {
			t.Errorf("inventory_verified = %v over the bound", got)
		}
		// A host leaves: within the bound again.
		s.removeEntity(s.entity(t, "HostSystem", "DC1_H0"))
		within := waitInventory(t, p, 0, "within the bound", isVerified)
		if len(within.Hosts) != 7 {
			t.Errorf("within the bound: %s", within)
		}
	})
	t.Run("datastores", func(t *testing.T) {
		cfg := s.inventoryConfig()
		cfg.MaxDatastores = 3
		p := runInventory(t, cfg, nil)
		over := waitInventory(t, p, 0, "over the datastore bound", func(inv *Inventory) bool { return strings.Contains(inv.Doubt, "too large") })
		if over.Verified || over.Hosts != nil || !strings.Contains(over.Doubt, "4 datastores") {
			t.Errorf("over the bound: %s", over)
		}
		cfg.HostExclude = "DC1_.*"
		p = runInventory(t, cfg, nil)
		if inv := waitInventory(t, p, 0, "within the bound with a filter", isVerified); len(inv.Datastores) != 2 {
			t.Errorf("filtered: %s", inv)
		}
	})
}

// hostNamed is the one host named name in inv (the test models name
// every host once).
func hostNamed(inv *Inventory, name string) (Host, bool) {
	hs := inv.HostsNamed(name)
	if len(hs) != 1 {
		return Host{}, false
	}
	return hs[0], true
}
