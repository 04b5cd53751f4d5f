package probe

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"golang.org/x/time/rate"
)

// VM lookup: where a VM runs now, on demand, over the target's session
// (no second login). A migration that knows its VM asks for it; the
// answer is cached briefly, lookups of one target run one at a time, and
// a VM's name is resolved from a map of every VM's name that is scanned
// at most once per vmNameScanInterval: never a scan of all VMs per
// request. An instance UUID is resolved by vCenter's search index, with
// no scan.

const (
	// vmPlacementTTL is how long a resolved placement (or a "no such
	// VM") is reused.
	vmPlacementTTL = 5 * time.Second
	// vmNameScanInterval bounds the scans of a target's VM names: a VM
	// created or renamed after a scan is found at most this long after.
	// (A VM whose known reference has gone is looked for again at once,
	// once.)
	vmNameScanInterval = 30 * time.Second
	// vmCacheMax bounds the placements cached per target; past it the
	// cache starts afresh.
	vmCacheMax = 4096
	// vmLookupRate and vmLookupBurst bound the lookups that go to one
	// target's vCenter (cache misses), whatever asks: a flood of
	// requests for distinct names or UUIDs costs vCenter at most this.
	// A lookup over the limit fails (closed) without asking.
	vmLookupRate  = 10 // per second
	vmLookupBurst = 20
	// vmNameMax bounds a name looked up, in bytes: vSphere allows 80
	// characters, which its escaping (%2f for /) may lengthen. A longer
	// one is no VM, answered without a lookup or a cache entry.
	vmNameMax = 255
)

// ErrNoSuchVM says no target's vCenter has a VM of that name or instance
// UUID (as of its last scan of names).
var ErrNoSuchVM = errors.New("no such VM")

// VMPlacement is where a VM runs, as its vCenter says now.
type VMPlacement struct {
	// Target is the vCenter, as in Status.Target.
	Target string
	// ID is the VM's managed object ID (vm-42); Name its name;
	// InstanceUUID its config.instanceUuid ("" if not returned).
	ID           string
	Name         string
	InstanceUUID string
	// HostID is the managed object ID of the host it runs on
	// (runtime.host; "" when vCenter does not say), and Host that host's
	// name in the target's inventory ("" when the inventory does not hold
	// it: filtered out, or not retrieved yet).
	HostID string
	Host   string
	// Datastores are the IDs of the datastores holding its files, sorted.
	Datastores []string
	// At is when vCenter was asked.
	At time.Time
}

// vmCache is a target's LookupVM state. mu is held for a whole lookup,
// calls to vCenter included: lookups of one target run one at a time.
type vmCache struct {
	mu      sync.Mutex
	names   map[string][]types.ManagedObjectReference // VM name → VMs, from the last scan
	scanned time.Time                                 // of names; zero: never
	placed  map[string]vmEntry
	limit   *rate.Limiter // lookups sent to vCenter
}

func newVMCache() *vmCache {
	return &vmCache{limit: rate.NewLimiter(vmLookupRate, vmLookupBurst)}
}

// errVMLookupsLimited is the error of a lookup over the rate limit.
var errVMLookupsLimited = fmt.Errorf("VM lookups over the limit of %d per second to this vCenter; try again", vmLookupRate)

type vmEntry struct {
	pl  VMPlacement
	err error
	at  time.Time
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// LookupVM resolves a VM, by name or instance UUID, to its host and
// datastores, asking each target's vCenter in Config.URLs order over its
// session. It returns ErrNoSuchVM (wrapped) when every target answered
// that it has no such VM, and another error when a target could not
// answer (no session, a failed call), so that a caller fails closed.
// Without Config.Inventory the host's name is not known (Host is "").
func (p *Prober) LookupVM(ctx context.Context, name string) (VMPlacement, error) {
	switch {
	case name == "":
		return VMPlacement{}, fmt.Errorf("%w: empty name", ErrNoSuchVM)
	case len(name) > vmNameMax:
		return VMPlacement{}, fmt.Errorf("%w: a name of %d bytes, longer than any VM's (%d)", ErrNoSuchVM, len(name), vmNameMax)
	}
	var failed []error
	for _, t := range p.targets {
		pl, err := p.lookupVM(ctx, t, name)
		switch {
		case err == nil:
			return pl, nil
		case !errors.Is(err, ErrNoSuchVM):
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		return VMPlacement{}, errors.Join(failed...)
	}
	return VMPlacement{}, fmt.Errorf("%w: %q", ErrNoSuchVM, name)
}

func (p *Prober) lookupVM(ctx context.Context, t *target, name string) (VMPlacement, error) {
	c := t.vms
	c.mu.Lock()
	defer c.mu.Unlock()
	now := p.clock.Now()
	if e, ok := c.placed[name]; ok && now.Sub(e.at) < p.vmTTL {
		return e.pl, e.err
	}
	p.mu.Lock()
	sess := t.sess
	p.mu.Unlock()
	if sess == nil {
		p.metrics.vmLookup(t.name, lookupError)
		return VMPlacement{}, fmt.Errorf("%s: no vCenter session to look the VM up over", t.name)
	}
	if !c.limit.AllowN(now, 1) {
		p.metrics.vmLookup(t.name, lookupLimited)
		return VMPlacement{}, fmt.Errorf("%s: %w", t.name, errVMLookupsLimited)
	}
	pl, err := p.resolveVM(ctx, t, sess, name, now)
	switch {
	case err == nil:
		p.metrics.vmLookup(t.name, lookupFound)
	case errors.Is(err, ErrNoSuchVM):
		p.metrics.vmLookup(t.name, lookupNotFound)
	default:
		p.metrics.vmLookup(t.name, lookupError)
	}
	if ctx.Err() != nil {
		return pl, err // the caller left: nothing learnt
	}
	if c.placed == nil || len(c.placed) >= vmCacheMax {
		c.placed = map[string]vmEntry{}
	}
	c.placed[name] = vmEntry{pl, err, now}
	return pl, err
}

// resolveVM asks vCenter; t.vms.mu is held.
func (p *Prober) resolveVM(ctx context.Context, t *target, sess *conn, name string, now time.Time) (VMPlacement, error) {
	c := t.vms
	var refs []types.ManagedObjectReference
	if uuidRE.MatchString(name) {
		cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
		ref, err := object.NewSearchIndex(sess.vim).FindByUuid(cctx, nil, strings.ToLower(name), true, types.NewBool(true))
		cancel()
		if err != nil {
			return VMPlacement{}, opError("find VM by instance UUID", t.name, err)
		}
		if ref != nil {
			refs = append(refs, ref.Reference())
		}
	}
	byName := len(refs) == 0
	if byName {
		refs = c.names[name]
		if len(refs) == 0 && (c.scanned.IsZero() || now.Sub(c.scanned) >= p.vmScanMin) {
			names, err := p.scanVMNames(ctx, t, sess)
			p.metrics.vmScans.WithLabelValues(t.name).Inc()
			if err != nil {
				return VMPlacement{}, err
			}
			c.names, c.scanned = names, now
			refs = names[name]
		}
	}
	switch len(refs) {
	case 0:
		return VMPlacement{}, fmt.Errorf("%w: %q in %s", ErrNoSuchVM, name, t.name)
	case 1:
	default:
		return VMPlacement{}, fmt.Errorf("%s: %d VMs are named %q; ask by instance UUID", t.name, len(refs), name)
	}
	var vm mo.VirtualMachine
	cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	err := property.DefaultCollector(sess.vim).RetrieveOne(cctx, refs[0],
		[]string{"name", "runtime.host", "datastore", "config.instanceUuid"}, &vm)
	cancel()
	if err != nil {
		if fault.Is(err, &types.ManagedObjectNotFound{}) {
			// Gone since the scan, or known by another reference now
			// (re-registered, vCenter restored): one scan at once, not
			// another in this lookup.
			delete(c.names, name)
			if !c.scanned.Equal(now) {
				c.scanned = time.Time{}
				return p.resolveVM(ctx, t, sess, name, now)
			}
			return VMPlacement{}, fmt.Errorf("%w: %q in %s", ErrNoSuchVM, name, t.name)
		}
		return VMPlacement{}, opError("retrieve VM", t.name, err)
	}
	if byName && vm.Name != name {
		// Renamed since the scan (and another VM may have the name
		// now): one scan at once, as above.
		delete(c.names, name)
		if !c.scanned.Equal(now) {
			c.scanned = time.Time{}
			return p.resolveVM(ctx, t, sess, name, now)
		}
		return VMPlacement{}, fmt.Errorf("%w: %q in %s", ErrNoSuchVM, name, t.name)
	}
	pl := VMPlacement{Target: t.name, ID: refs[0].Value, Name: vm.Name, At: now}
	if vm.Config != nil {
		pl.InstanceUUID = vm.Config.InstanceUuid
	}
	if vm.Runtime.Host != nil {
		pl.HostID = vm.Runtime.Host.Value
	}
	for _, ds := range vm.Datastore {
		pl.Datastores = append(pl.Datastores, ds.Value)
	}
	slices.Sort(pl.Datastores)
	if pl.HostID != "" && p.cfg.Inventory {
		for _, h := range p.currentInventory(t).Hosts {
			if h.ID == pl.HostID {
				pl.Host = h.Name
				break
			}
		}
	}
	return pl, nil
}

// scanVMNames maps the name of every VM of the target to its references,
// retrieving the names only.
func (p *Prober) scanVMNames(ctx context.Context, t *target, sess *conn) (map[string][]types.ManagedObjectReference, error) {
	cctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	v, err := view.NewManager(sess.vim).CreateContainerView(cctx, sess.vim.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		return nil, opError("create VM view", t.name, err)
	}
	defer func() {
		dctx, dc := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Timeout)
		defer dc()
		_ = v.Destroy(dctx)
	}()
	var vms []mo.VirtualMachine
	if err := v.Retrieve(cctx, []string{"VirtualMachine"}, []string{"name"}, &vms); err != nil {
		return nil, opError("retrieve VM names", t.name, err)
	}
	names := make(map[string][]types.ManagedObjectReference, len(vms))
	for _, vm := range vms {
		names[vm.Name] = append(names[vm.Name], vm.Reference())
	}
	return names, nil
}
