package probe

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vmware/govmomi/vim25/types"
)

func moRef(kind, id string) types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: kind, Value: id}
}

func assign(name string, val types.AnyType) types.PropertyChange {
	return types.PropertyChange{Name: name, Op: types.PropertyChangeOpAssign, Val: val}
}

func hostEnter(id, name string, dss ...string) types.ObjectUpdate {
	var refs []types.ManagedObjectReference
	for _, d := range dss {
		refs = append(refs, moRef("Datastore", d))
	}
	return types.ObjectUpdate{Obj: moRef("HostSystem", id), Kind: types.ObjectUpdateKindEnter, ChangeSet: []types.PropertyChange{
		assign(propName, name),
		assign(propConnection, types.HostSystemConnectionStateConnected),
		assign(propMaintenance, false),
		assign(propPower, types.HostSystemPowerStatePoweredOn),
		assign(propDatastores, types.ArrayOfManagedObjectReference{ManagedObjectReference: refs}),
	}}
}

func dsEnter(id, name string, accessible bool) types.ObjectUpdate {
	return types.ObjectUpdate{Obj: moRef("Datastore", id), Kind: types.ObjectUpdateKindEnter, ChangeSet: []types.PropertyChange{
		assign(propName, name), assign(propAccessible, accessible), assign(propType, "VMFS"),
	}}
}

func modifyUpdate(kind, id string, changes ...types.PropertyChange) types.ObjectUpdate {
	return types.ObjectUpdate{Obj: moRef(kind, id), Kind: types.ObjectUpdateKindModify, ChangeSet: changes}
}

func TestRecordsDecodeAndMissing(t *testing.T) {
	r := newRecords(hostFilter{}, 10, 10)
	r.apply([]types.ObjectUpdate{
		hostEnter("host-1", "esx1", "ds-2", "ds-1", "ds-2"),
		dsEnter("ds-1", "nfs", true),
		{Obj: moRef("VirtualMachine", "vm-1"), Kind: types.ObjectUpdateKindEnter}, // not ours: ignored
	})
	hosts, dss, over := r.snapshot()
	if over != "" || len(hosts) != 1 || len(dss) != 2 {
		t.Fatalf("snapshot %+v %+v %q", hosts, dss, over)
	}
	want := Host{ID: "host-1", Name: "esx1", ConnectionState: "connected", Connected: hosts[0].Connected, PowerState: "poweredOn", Datastores: []string{"ds-1", "ds-2"}}
	if hosts[0].Connected == 0 {
		t.Errorf("a connected host without a connection stamp: %+v", hosts[0])
	}
	if !reflect.DeepEqual(hosts[0], want) {
		t.Errorf("host %+v, want %+v (datastores sorted, without duplicates)", hosts[0], want)
	}
	// ds-2 was never described: a placeholder that fails.
	if d := dss[1]; d.ID != "ds-2" || d.Accessible || d.Name != "" || len(d.Missing) != 3 {
		t.Errorf("undescribed datastore %+v", d)
	}

	// A property vCenter does not return (no permission), then returns.
	r.apply([]types.ObjectUpdate{{
		Obj: moRef("HostSystem", "host-1"), Kind: types.ObjectUpdateKindModify,
		ChangeSet:  []types.PropertyChange{{Name: propMaintenance, Op: types.PropertyChangeOpRemove}},
		MissingSet: []types.MissingProperty{{Path: propConnection}},
	}})
	hosts, _, _ = r.snapshot()
	if h := hosts[0]; h.InMaintenance || !slices.Equal(h.Missing, []string{propConnection}) {
		t.Errorf("host with a missing property: %+v", h)
	}
	r.apply([]types.ObjectUpdate{modifyUpdate("HostSystem", "host-1", assign(propConnection, types.HostSystemConnectionStateNotResponding))})
	hosts, _, _ = r.snapshot()
	if h := hosts[0]; h.ConnectionState != "notResponding" || h.Missing != nil {
		t.Errorf("host after the property came back: %+v", h)
	}
	// Plain strings decode too (an enum with no type on the wire).
	r.apply([]types.ObjectUpdate{modifyUpdate("HostSystem", "host-1", assign(propPower, "standBy"))})
	if hosts, _, _ = r.snapshot(); hosts[0].PowerState != "standBy" {
		t.Errorf("power state from a plain string: %+v", hosts[0])
	}
	if r.unread != "" {
		t.Fatalf("unread %q after changes of the watched paths", r.unread)
	}
	// An element-level change of a watched array: the records cannot
	// apply it, and say so (the watch starts over).
	r.apply([]types.ObjectUpdate{modifyUpdate("HostSystem", "host-1", types.PropertyChange{Name: `datastore["ds-3"]`, Op: types.PropertyChangeOpAdd, Val: moRef("Datastore", "ds-3")})})
	if r.unread != `HostSystem datastore["ds-3"]` {
		t.Errorf("unread %q after an element-level change", r.unread)
	}
}

// TestRecordsConnectionStamps: a host's connection stamp holds while it
// stays connected, is 0 while it is not, and is new after each
// reconnection, so that a reconnection is told apart even by whoever
// missed the disconnected state between.
func TestRecordsConnectionStamps(t *testing.T) {
	r := newRecords(hostFilter{}, 10, 10)
	stamp := func(changes ...types.PropertyChange) uint64 {
		t.Helper()
		r.apply([]types.ObjectUpdate{modifyUpdate("HostSystem", "host-1", changes...)})
		hosts, _, _ := r.snapshot()
		return hosts[0].Connected
	}
	r.apply([]types.ObjectUpdate{hostEnter("host-1", "esx1")})
	first := stamp()
	if first == 0 {
		t.Fatal("connected host without a stamp")
	}
	if s := stamp(assign(propMaintenance, true)); s != first {
		t.Errorf("stamp %d after a maintenance change, want %d kept", s, first)
	}
	if s := stamp(assign(propConnection, types.HostSystemConnectionStateConnected)); s != first {
		t.Errorf("stamp %d after connected again without a break, want %d kept", s, first)
	}
	if s := stamp(assign(propConnection, types.HostSystemConnectionStateNotResponding)); s != 0 {
		t.Errorf("stamp %d while not responding, want 0", s)
	}
	// Disconnected and connected again within one update: a new stamp.
	if s := stamp(assign(propConnection, types.HostSystemConnectionStateDisconnected), assign(propConnection, types.HostSystemConnectionStateConnected)); s == 0 || s == first {
		t.Errorf("stamp %d after a reconnection, want a new one (was %d)", s, first)
	}
}

// TestRecordsSnapshotsImmutable: a published snapshot never changes,
// whatever the records go through after it, and each snapshot equals one
// built from scratch from the records (the patch path and the rebuild
// path agree). Random updates over a small ID space.
func TestRecordsSnapshotsImmutable(t *testing.T) {
	rng := testkit.ReplayRand(t)
	filter := hostFilter{}
	if rng.IntN(2) == 0 {
		filter, _ = Config{HostExclude: `esx[0-2]`}.hostFilter()
	}
	r := newRecords(filter, 1000, 1000)
	type published struct {
		hosts []Host
		dss   []Datastore
		deep  string // a deep print when published
	}
	var all []published
	for step := range 400 {
		var batch []types.ObjectUpdate
		for range 1 + rng.IntN(4) {
			batch = append(batch, randomUpdate(rng))
		}
		r.apply(batch)
		hosts, dss, _ := r.snapshot()
		wantHosts, wantDSs := fromScratch(r)
		if !reflect.DeepEqual(nilIfEmpty(hosts), nilIfEmpty(wantHosts)) || !reflect.DeepEqual(nilIfEmpty(dss), nilIfEmpty(wantDSs)) {
			t.Fatalf("step %d: snapshot\n%+v\n%+v\nwant\n%+v\n%+v", step, hosts, dss, wantHosts, wantDSs)
		}
		all = append(all, published{hosts, dss, fmt.Sprintf("%#v %#v", hosts, dss)})
	}
	for i, p := range all {
		if now := fmt.Sprintf("%#v %#v", p.hosts, p.dss); now != p.deep {
			t.Fatalf("snapshot %d changed after it was published:\nthen %s\nnow  %s", i, p.deep, now)
		}
	}
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// fromScratch is the expected snapshot of r, computed plainly.
func fromScratch(r *records) ([]Host, []Datastore) {
	var hosts []Host
	mounted := map[string]bool{}
	for _, h := range r.hosts {
		if h.Name != "" && r.filter.keep(h.Name) {
			hosts = append(hosts, h.Host)
			for _, d := range h.Datastores {
				mounted[d] = true
			}
		}
	}
	slices.SortFunc(hosts, compareHosts)
	var dss []Datastore
	for id := range mounted {
		dss = append(dss, r.datastore(id))
	}
	slices.SortFunc(dss, func(a, b Datastore) int { return cmp.Compare(a.ID, b.ID) })
	return hosts, dss
}

func randomUpdate(rng *rand.Rand) types.ObjectUpdate {
	hostID := fmt.Sprintf("host-%d", rng.IntN(6))
	dsID := fmt.Sprintf("ds-%d", rng.IntN(6))
	names := []string{"esx0", "esx1", "esx2", "esx3", "esx4", "esx4"} // esx4 twice: duplicate names happen
	switch rng.IntN(10) {
	case 0:
		return types.ObjectUpdate{Obj: moRef("HostSystem", hostID), Kind: types.ObjectUpdateKindLeave}
	case 1:
		return types.ObjectUpdate{Obj: moRef("Datastore", dsID), Kind: types.ObjectUpdateKindLeave}
	case 2:
		var dss []string
		for range rng.IntN(4) {
			dss = append(dss, fmt.Sprintf("ds-%d", rng.IntN(6)))
		}
		return hostEnter(hostID, names[rng.IntN(len(names))], dss...)
	case 3:
		return dsEnter(dsID, fmt.Sprintf("store%d", rng.IntN(4)), rng.IntN(2) == 0)
	case 4:
		return modifyUpdate("HostSystem", hostID, assign(propName, names[rng.IntN(len(names))]))
	case 5:
		var refs []types.ManagedObjectReference
		for range rng.IntN(4) {
			refs = append(refs, moRef("Datastore", fmt.Sprintf("ds-%d", rng.IntN(6))))
		}
		return modifyUpdate("HostSystem", hostID, assign(propDatastores, types.ArrayOfManagedObjectReference{ManagedObjectReference: refs}))
	case 6:
		states := []types.HostSystemConnectionState{"connected", "disconnected", "notResponding"}
		return modifyUpdate("HostSystem", hostID, assign(propConnection, states[rng.IntN(3)]), assign(propMaintenance, rng.IntN(2) == 0))
	case 7:
		return types.ObjectUpdate{Obj: moRef("HostSystem", hostID), Kind: types.ObjectUpdateKindModify,
			MissingSet: []types.MissingProperty{{Path: propPower}}}
	case 8:
		return modifyUpdate("Datastore", dsID, assign(propName, fmt.Sprintf("store%d", rng.IntN(4))))
	default:
		return modifyUpdate("Datastore", dsID, assign(propAccessible, rng.IntN(2) == 0))
	}
}

// TestInventoryMetricsDuplicateNames: names vCenter holds twice (local
// datastores of different datacenters) give one series each, with the
// worst state, so that the exposition stays valid.
func TestInventoryMetricsDuplicateNames(t *testing.T) {
	cfg := configFor("vc.example:443")
	cfg.Inventory = true
	p := newProber(t, cfg, nil)
	p.publishInventory(p.targets[0], func(inv *Inventory) {
		inv.Verified, inv.Doubt = true, ""
		inv.Hosts = []Host{
			{ID: "host-1", Name: "esx1", ConnectionState: "connected", PowerState: "poweredOn", Datastores: []string{"ds-1", "ds-3"}},
			{ID: "host-2", Name: "esx1", ConnectionState: "notResponding", PowerState: "poweredOn", InMaintenance: true, Datastores: []string{"ds-2", "ds-3"}},
			{ID: "host-3", Name: "esx2", ConnectionState: "connected", PowerState: "poweredOff", Datastores: []string{"ds-3", "ds-4"}},
			{ID: "host-4", Name: "esx3", ConnectionState: "", PowerState: ""}, // nothing known
		}
		inv.Datastores = []Datastore{
			{ID: "ds-1", Name: "datastore1", Accessible: true},
			{ID: "ds-2", Name: "datastore1", Accessible: false},
			{ID: "ds-3", Name: "nfs", Accessible: true},
			{ID: "ds-4", Missing: datastoreProps}, // not described: no name, no series
		}
	})
	const want = `
# HELP linkgate_vsphere_datastore_accessible Whether vCenter reports the datastore accessible (summary.accessible).
# TYPE linkgate_vsphere_datastore_accessible gauge
linkgate_vsphere_datastore_accessible{datastore="datastore1",target="vc.example:443"} 0
linkgate_vsphere_datastore_accessible{datastore="nfs",target="vc.example:443"} 1
# HELP linkgate_vsphere_datastore_connected_hosts Hosts of the inventory that mount the datastore and are connected in vCenter. An inaccessible datastore with none is explained by its hosts (the local datastore of a disconnected host).
# TYPE linkgate_vsphere_datastore_connected_hosts gauge
linkgate_vsphere_datastore_connected_hosts{datastore="datastore1",target="vc.example:443"} 1
linkgate_vsphere_datastore_connected_hosts{datastore="nfs",target="vc.example:443"} 2
# HELP linkgate_vsphere_datastore_hosts Hosts of the inventory (after the host filters) that mount the datastore.
# TYPE linkgate_vsphere_datastore_hosts gauge
linkgate_vsphere_datastore_hosts{datastore="datastore1",target="vc.example:443"} 2
linkgate_vsphere_datastore_hosts{datastore="nfs",target="vc.example:443"} 3
# HELP linkgate_vsphere_host_connection_state 1 for the host's current runtime.connectionState in vCenter (connected, disconnected, notResponding), 0 for the others.
# TYPE linkgate_vsphere_host_connection_state gauge
linkgate_vsphere_host_connection_state{host="esx1",state="connected",target="vc.example:443"} 0
linkgate_vsphere_host_connection_state{host="esx1",state="disconnected",target="vc.example:443"} 0
linkgate_vsphere_host_connection_state{host="esx1",state="notResponding",target="vc.example:443"} 1
linkgate_vsphere_host_connection_state{host="esx2",state="connected",target="vc.example:443"} 1
linkgate_vsphere_host_connection_state{host="esx2",state="disconnected",target="vc.example:443"} 0
linkgate_vsphere_host_connection_state{host="esx2",state="notResponding",target="vc.example:443"} 0
linkgate_vsphere_host_connection_state{host="esx3",state="connected",target="vc.example:443"} 0
linkgate_vsphere_host_connection_state{host="esx3",state="disconnected",target="vc.example:443"} 0
linkgate_vsphere_host_connection_state{host="esx3",state="notResponding",target="vc.example:443"} 0
# HELP linkgate_vsphere_host_maintenance Whether the host is in maintenance mode.
# TYPE linkgate_vsphere_host_maintenance gauge
linkgate_vsphere_host_maintenance{host="esx1",target="vc.example:443"} 1
linkgate_vsphere_host_maintenance{host="esx2",target="vc.example:443"} 0
linkgate_vsphere_host_maintenance{host="esx3",target="vc.example:443"} 0
# HELP linkgate_vsphere_host_power_state 1 for the host's current runtime.powerState in vCenter (poweredOn, poweredOff, standBy, unknown), 0 for the others.
# TYPE linkgate_vsphere_host_power_state gauge
linkgate_vsphere_host_power_state{host="esx1",state="poweredOff",target="vc.example:443"} 0
linkgate_vsphere_host_power_state{host="esx1",state="poweredOn",target="vc.example:443"} 1
linkgate_vsphere_host_power_state{host="esx1",state="standBy",target="vc.example:443"} 0
linkgate_vsphere_host_power_state{host="esx1",state="unknown",target="vc.example:443"} 0
linkgate_vsphere_host_power_state{host="esx2",state="poweredOff",target="vc.example:443"} 1
linkgate_vsphere_host_power_state{host="esx2",state="poweredOn",target="vc.example:443"} 0
linkgate_vsphere_host_power_state{host="esx2",state="standBy",target="vc.example:443"} 0
linkgate_vsphere_host_power_state{host="esx2",state="unknown",target="vc.example:443"} 0
linkgate_vsphere_host_power_state{host="esx3",state="poweredOff",target="vc.example:443"} 0
linkgate_vsphere_host_power_state{host="esx3",state="poweredOn",target="vc.example:443"} 0
linkgate_vsphere_host_power_state{host="esx3",state="standBy",target="vc.example:443"} 0
linkgate_vsphere_host_power_state{host="esx3",state="unknown",target="vc.example:443"} 1
# HELP linkgate_vsphere_inventory_updates_total Host and datastore updates received from vCenter's property collector, full retrieves included.
# TYPE linkgate_vsphere_inventory_updates_total counter
linkgate_vsphere_inventory_updates_total{target="vc.example:443"} 0
# HELP linkgate_vsphere_inventory_verified Whether the host and datastore inventory is vCenter's current state (a full retrieve over a watch still running); the host and datastore series are the last known state while 0.
# TYPE linkgate_vsphere_inventory_verified gauge
linkgate_vsphere_inventory_verified{target="vc.example:443"} 1
`
	if err := testutil.CollectAndCompare(p, strings.NewReader(want),
		"linkgate_vsphere_datastore_accessible", "linkgate_vsphere_datastore_hosts", "linkgate_vsphere_datastore_connected_hosts", "linkgate_vsphere_host_connection_state", "linkgate_vsphere_host_maintenance",
		"linkgate_vsphere_host_power_state", "linkgate_vsphere_inventory_updates_total", "linkgate_vsphere_inventory_verified"); err != nil {
		t.Error(err)
	}
	if inv, _ := p.Inventory(); inv[0].Version != 1 {
		t.Errorf("version %d after one publication", inv[0].Version)
	}
	inv := &Inventory{Hosts: []Host{{Name: "a"}, {ID: "x", Name: "b"}, {ID: "y", Name: "b"}, {ID: "z", Name: "c"}}}
	if hs := inv.HostsNamed("b"); len(hs) != 2 || hs[0].ID != "x" || hs[1].ID != "y" {
		t.Errorf("HostsNamed(b) = %+v, want both of that name", hs)
	}
	if hs := inv.HostsNamed("bb"); len(hs) != 0 {
		t.Errorf("HostsNamed(bb) = %+v, want none", hs)
	}
	if h, ok := inv.HostByID("z"); !ok || h.Name != "c" {
		t.Errorf("HostByID(z) = %+v, %v", h, ok)
	}
}

func TestHostFilterAnchored(t *testing.T) {
	f, err := Config{HostInclude: `esx\d+\.lab`, HostExclude: `esx9.*`}.hostFilter()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{
		"esx1.lab": true, "esx12.lab": true, "esx1.lab.example": false, "my-esx1.lab": false, "esx9.lab": false, "": false,
	} {
		if got := f.keep(name); got != want && name != "" {
			t.Errorf("keep(%q) = %v, want %v", name, got, want)
		}
	}
	if !(hostFilter{}).keep("anything") {
		t.Error("no filter must keep every host")
	}
}
