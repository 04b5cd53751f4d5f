package probe

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/vim25/types"
)

// Inventory is what one target's vCenter says about its ESXi hosts and
// datastores, as the inventory watch (Config.Inventory) follows it: an
// immutable snapshot, replaced as a whole on every change, and announced
// by the channel of (*Prober).Inventory. None may be modified, slices
// included: successive snapshots share them.
//
// It holds names and states only, nothing of the session it came over,
// so that it can be handed on as it is (to a gate, or one day from a
// node agent to the sidecars of its node).
type Inventory struct {
	// Target is the vCenter, as in Status.Target.
	Target string
	// Verified says Hosts and Datastores are vCenter's current state: a
	// full retrieve completed over a watch that is still running, and
	// every update since has been applied. It is false before the first
	// retrieve, as soon as the watch is in doubt (the session lost, the
	// network down, the vCenter probe failing, a failed wait) and while
	// the inventory is over its bounds. Doubt then says why, since
	// DoubtSince. A decision must not be taken from an unverified
	// inventory: Hosts and Datastores are then the last known state,
	// for diagnosis only (empty when over the bounds).
	Verified   bool
	Doubt      string
	DoubtSince time.Time
	// Hosts are the hosts the filters keep (Config.HostInclude,
	// HostExclude), sorted by Name, then ID.
	Hosts []Host
	// Datastores are the datastores of those hosts, sorted by ID. A
	// datastore a host lists that vCenter has not described (yet) is
	// there with only its ID, not accessible, its properties Missing.
	Datastores []Datastore
	// Version counts the snapshots of this target, from 0.
	Version uint64
}

// Host is one ESXi host as vCenter sees it.
type Host struct {
	// ID is vCenter's managed object ID (host-42): unique and stable
	// within one vCenter, where names need not be.
	ID string
	// Name is the name vCenter knows the host by (name), usually its
	// FQDN or management address.
	Name string
	// ConnectionState is runtime.connectionState: connected,
	// disconnected or notResponding ("" if unknown).
	ConnectionState string
	// Connected is a stamp of the host's current connection, 0 while
	// it is not connected: it changes each time this linkgate sees the
	// host connect (or first sees it connected, in each new watch), so
	// that a disconnection and reconnection between two looks is still
	// told from an unbroken connection. Stamps are unique in the process.
	Connected uint64
	// InMaintenance is runtime.inMaintenanceMode.
	InMaintenance bool
	// PowerState is runtime.powerState: poweredOn, poweredOff, standBy
	// or unknown ("" if unknown).
	PowerState string
	// Datastores are the IDs of the datastores the host mounts (its
	// datastore property), sorted: keys of Inventory.Datastore.
	Datastores []string
	// Missing lists the properties vCenter did not return for the host
	// (a permission, say); their fields hold zero values, which must not
	// be read as facts.
	Missing []string
}

// Datastore is one datastore as vCenter sees it.
type Datastore struct {
	// ID is vCenter's managed object ID (datastore-42). Names are unique
	// per datacenter only.
	ID   string
	Name string
	// Accessible is summary.accessible: the datastore is usable by at
	// least one of its hosts.
	Accessible bool
	// Type is summary.type: VMFS, NFS, NFS41, vsan, vvol, ...
	Type string
	// Missing is as Host.Missing.
	Missing []string
}

// IsConnected says vCenter has the host connected: the one state in
// which a migration may read from it.
func (h Host) IsConnected() bool {
	return h.ConnectionState == string(types.HostSystemConnectionStateConnected)
}

// HostsNamed returns the hosts named name: vCenter may hold more than
// one (in different datacenters), told apart by ID.
func (inv *Inventory) HostsNamed(name string) []Host {
	i, _ := slices.BinarySearchFunc(inv.Hosts, name, func(h Host, n string) int { return cmp.Compare(h.Name, n) })
	j := i
	for j < len(inv.Hosts) && inv.Hosts[j].Name == name {
		j++
	}
	return inv.Hosts[i:j:j]
}

// HostByID returns the host with vCenter ID id.
func (inv *Inventory) HostByID(id string) (Host, bool) {
	for _, h := range inv.Hosts {
		if h.ID == id {
			return h, true
		}
	}
	return Host{}, false
}

// Datastore returns the datastore with vCenter ID id.
func (inv *Inventory) Datastore(id string) (Datastore, bool) {
	i, ok := slices.BinarySearchFunc(inv.Datastores, id, func(d Datastore, id string) int { return cmp.Compare(d.ID, id) })
	if !ok {
		return Datastore{}, false
	}
	return inv.Datastores[i], true
}

// String summarises the inventory for logs and test failures.
func (inv *Inventory) String() string {
	if inv.Verified {
		return fmt.Sprintf("%s: %d hosts, %d datastores (v%d)", inv.Target, len(inv.Hosts), len(inv.Datastores), inv.Version)
	}
	return fmt.Sprintf("%s: unverified: %s; last known %d hosts, %d datastores (v%d)",
		inv.Target, inv.Doubt, len(inv.Hosts), len(inv.Datastores), inv.Version)
}

// Inventory returns the inventory of every target, in Config.URLs order,
// and a channel closed at the next change of any of them. Without
// Config.Inventory it returns nil and a nil channel, which never fires.
func (p *Prober) Inventory() ([]*Inventory, <-chan struct{}) {
	if !p.cfg.Inventory {
		return nil, nil
	}
	p.invMu.Lock()
	defer p.invMu.Unlock()
	out := make([]*Inventory, len(p.targets))
	for i, t := range p.targets {
		out[i] = t.inv
	}
	return out, p.invChanged
}

// publish replaces t's inventory with the result of next applied to a
// copy of the current one, with the version counted on, and announces
// it. It returns the new one.
func (p *Prober) publishInventory(t *target, next func(*Inventory)) *Inventory {
	p.invMu.Lock()
	defer p.invMu.Unlock()
	inv := *t.inv
	next(&inv)
	inv.Version++
	t.inv = &inv
	close(p.invChanged)
	p.invChanged = make(chan struct{})
	return &inv
}

// currentInventory returns t's inventory.
func (p *Prober) currentInventory(t *target) *Inventory {
	p.invMu.Lock()
	defer p.invMu.Unlock()
	return t.inv
}

// The properties watched, as vCenter names them.
const (
	propName        = "name"
	propConnection  = "runtime.connectionState"
	propMaintenance = "runtime.inMaintenanceMode"
	propPower       = "runtime.powerState"
	propDatastores  = "datastore"
	propAccessible  = "summary.accessible"
	propType        = "summary.type"
)

var (
	hostProps      = []string{propName, propConnection, propMaintenance, propPower, propDatastores}
	datastoreProps = []string{propName, propAccessible, propType}
)

// connectionStamps issues Host.Connected.
var connectionStamps atomic.Uint64

// records is the inventory of one watch as its updates build it: every
// host and datastore in the view, kept or not, by ID. It belongs to one
// goroutine; snapshot turns it into the immutable lists of an Inventory,
// rebuilding only what changed.
type records struct {
	filter        hostFilter
	maxHosts      int
	maxDatastores int

	hosts map[string]*hostRecord
	dss   map[string]*Datastore

	// What the last snapshot was built from, and what changed since.
	hostList   []Host      // the kept hosts, sorted
	dsList     []Datastore // their datastores, sorted by ID
	structural bool        // membership, names or mounts changed: rebuild all
	dirtyHosts map[string]bool
	dirtyDSs   map[string]bool

	// unread is the first change of a property path this side does not
	// read (an element-level change such as datastore["datastore-12"],
	// which the filter's whole-property paths should not bring): the
	// records cannot say what it did, so the watch starts over.
	unread string
}

type hostRecord struct {
	Host
	keep bool // the filters keep it (by Name)
}

func newRecords(filter hostFilter, maxHosts, maxDatastores int) *records {
	return &records{
		filter: filter, maxHosts: maxHosts, maxDatastores: maxDatastores,
		hosts: map[string]*hostRecord{}, dss: map[string]*Datastore{},
		structural: true, dirtyHosts: map[string]bool{}, dirtyDSs: map[string]bool{},
	}
}

// apply applies the object updates of one filter update and returns how
// many were of hosts or datastores.
func (r *records) apply(updates []types.ObjectUpdate) int {
	n := 0
	for i := range updates {
		u := &updates[i]
		id := u.Obj.Value
		switch u.Obj.Type {
		case "HostSystem":
			r.applyHost(id, u)
		case "Datastore":
			r.applyDatastore(id, u)
		default:
			continue
		}
		n++
	}
	return n
}

func (r *records) applyHost(id string, u *types.ObjectUpdate) {
	if u.Kind == types.ObjectUpdateKindLeave {
		if h, ok := r.hosts[id]; ok {
			delete(r.hosts, id)
			r.structural = r.structural || h.keep
		}
		return
	}
	h, ok := r.hosts[id]
	if !ok || u.Kind == types.ObjectUpdateKindEnter {
		h = &hostRecord{Host: Host{ID: id}}
		r.hosts[id] = h
		r.structural = true
	}
	wasKept := h.keep
	// The record's slices may be shared with a published snapshot:
	// replace them, never write into them.
	for _, c := range u.ChangeSet {
		removed := c.Op == types.PropertyChangeOpRemove || c.Op == types.PropertyChangeOpIndirectRemove
		h.Missing = without(h.Missing, c.Name)
		switch c.Name {
		case propName:
			h.Name = stringValue(c.Val, removed)
			h.keep = h.Name != "" && r.filter.keep(h.Name)
			r.structural = true
		case propConnection:
			was := h.ConnectionState
			h.ConnectionState = stringValue(c.Val, removed)
			switch connected := string(types.HostSystemConnectionStateConnected); {
			case h.ConnectionState != connected:
				h.Connected = 0
			case was != connected || h.Connected == 0:
				h.Connected = connectionStamps.Add(1)
			}
		case propMaintenance:
			h.InMaintenance = boolValue(c.Val, removed)
		case propPower:
			h.PowerState = stringValue(c.Val, removed)
		case propDatastores:
			h.Datastores = refValues(c.Val, removed)
			r.structural = r.structural || h.keep
		default:
			r.noteUnread("HostSystem " + c.Name)
		}
	}
	for _, m := range u.MissingSet {
		h.Missing = with(h.Missing, m.Path)
	}
	if h.keep || wasKept {
		r.dirtyHosts[id] = true
	}
}

func (r *records) applyDatastore(id string, u *types.ObjectUpdate) {
	if u.Kind == types.ObjectUpdateKindLeave {
		delete(r.dss, id)
		r.dirtyDSs[id] = true
		return
	}
	d, ok := r.dss[id]
	if !ok || u.Kind == types.ObjectUpdateKindEnter {
		d = &Datastore{ID: id}
		r.dss[id] = d
	}
	for _, c := range u.ChangeSet {
		removed := c.Op == types.PropertyChangeOpRemove || c.Op == types.PropertyChangeOpIndirectRemove
		d.Missing = without(d.Missing, c.Name)
		switch c.Name {
		case propName:
			d.Name = stringValue(c.Val, removed)
		case propAccessible:
			d.Accessible = boolValue(c.Val, removed)
		case propType:
			d.Type = stringValue(c.Val, removed)
		default:
			r.noteUnread("Datastore " + c.Name)
		}
	}
	for _, m := range u.MissingSet {
		d.Missing = with(d.Missing, m.Path)
	}
	r.dirtyDSs[id] = true
}

func (r *records) noteUnread(what string) {
	if r.unread == "" {
		r.unread = what
	}
}

// snapshot returns the kept hosts and their datastores as of now, and
// why they cannot be published ("" when they can: within the bounds).
// Unchanged parts are shared with the previous snapshot.
func (r *records) snapshot() (hosts []Host, dss []Datastore, over string) {
	if r.structural {
		r.rebuild()
	} else {
		r.patch()
	}
	r.structural = false
	clear(r.dirtyHosts)
	clear(r.dirtyDSs)
	switch {
	case len(r.hostList) > r.maxHosts:
		return nil, nil, fmt.Sprintf("inventory too large: %d hosts after the host filters, more than the limit of %d; narrow it with the host filters",
			len(r.hostList), r.maxHosts)
	case len(r.dsList) > r.maxDatastores:
		return nil, nil, fmt.Sprintf("inventory too large: the hosts kept mount %d datastores, more than the limit of %d; narrow it with the host filters",
			len(r.dsList), r.maxDatastores)
	}
	return r.hostList, r.dsList, ""
}

// rebuild makes both lists anew.
func (r *records) rebuild() {
	hosts := make([]Host, 0, len(r.hostList))
	mounted := map[string]struct{}{}
	for _, h := range r.hosts {
		if !h.keep {
			continue
		}
		hosts = append(hosts, h.Host)
		for _, id := range h.Datastores {
			mounted[id] = struct{}{}
		}
	}
	slices.SortFunc(hosts, compareHosts)
	dss := make([]Datastore, 0, len(mounted))
	for id := range mounted {
		dss = append(dss, r.datastore(id))
	}
	slices.SortFunc(dss, func(a, b Datastore) int { return cmp.Compare(a.ID, b.ID) })
	r.hostList, r.dsList = hosts, dss
}

// patch replaces the hosts and datastores whose state changed, in copies
// of the lists: names and mounts did not change, so neither did the
// order nor the membership.
func (r *records) patch() {
	if len(r.dirtyHosts) > 0 {
		hosts := slices.Clone(r.hostList)
		for id := range r.dirtyHosts {
			h := r.hosts[id]
			if i, ok := slices.BinarySearchFunc(hosts, h.Host, compareHosts); ok {
				hosts[i] = h.Host
			}
		}
		r.hostList = hosts
	}
	if len(r.dirtyDSs) > 0 {
		dss := slices.Clone(r.dsList)
		changed := false
		for id := range r.dirtyDSs {
			i := sort.Search(len(dss), func(i int) bool { return dss[i].ID >= id })
			if i < len(dss) && dss[i].ID == id {
				dss[i] = r.datastore(id)
				changed = true
			}
		}
		if changed {
			r.dsList = dss
		}
	}
}

// datastore is the datastore with ID id, or, when vCenter has not
// described it, a placeholder that fails every check.
func (r *records) datastore(id string) Datastore {
	if d, ok := r.dss[id]; ok {
		return *d
	}
	return Datastore{ID: id, Missing: datastoreProps}
}

func compareHosts(a, b Host) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
}

// with returns list with s added, as a new slice; without, with s
// removed. Neither writes into list, which a snapshot may share.
func with(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(slices.Clip(list), s)
}

func without(list []string, s string) []string {
	if !slices.Contains(list, s) {
		return list
	}
	out := make([]string, 0, len(list)-1)
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// The values of the properties watched, as govmomi decodes them: enums
// as their own string types, arrays of references as
// ArrayOfManagedObjectReference. A removed property, or a value of an
// unexpected type, is the zero value.
func stringValue(v types.AnyType, removed bool) string {
	if removed {
		return ""
	}
	switch v := v.(type) {
	case string:
		return v
	case types.HostSystemConnectionState:
		return string(v)
	case types.HostSystemPowerState:
		return string(v)
	}
	return ""
}

func boolValue(v types.AnyType, removed bool) bool {
	b, ok := v.(bool)
	return ok && b && !removed
}

func refValues(v types.AnyType, removed bool) []string {
	if removed {
		return nil
	}
	var refs []types.ManagedObjectReference
	switch v := v.(type) {
	case types.ArrayOfManagedObjectReference:
		refs = v.ManagedObjectReference
	case []types.ManagedObjectReference:
		refs = v
	}
	if len(refs) == 0 {
		return nil
	}
	ids := make([]string, len(refs))
	for i, r := range refs {
		ids[i] = r.Value
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}
