package probe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// The inventory watch of one target (Config.Inventory).
//
// It runs beside the target's schedule and borrows its session: no
// login of its own. Over that session it creates a ContainerView of the
// HostSystem and Datastore objects under the root folder, a property
// collector of its own with one filter on that view for the properties
// in hostProps and datastoreProps, and then calls WaitForUpdatesEx in a
// loop: the first call returns everything (the full retrieve, perhaps in
// several truncated parts), each later one returns only changes, as they
// happen. No polling.
//
// The watch runs only while the target is healthy: a session, the last
// probe successful, the network up (when the probe pauses on it). The
// moment any of that changes, the call in flight is cancelled and the
// inventory is unverified, with the reason. When the wait itself fails,
// the inventory is unverified too, the schedule is asked to probe at once
// (which finds out whether the session is gone and logs in again if so),
// and the watch is made again after the probe's classified backoff
// (Config.nextAttempt), at once when a new session comes. Every new
// watch starts with a full retrieve on fresh records: nothing from
// before a doubt is trusted after it.
//
// govmomi's property.WaitForUpdatesEx loop is not used: it ends without
// the version when MaxWaitSeconds passes and cancels with an unbounded
// context, so the calls here are made with vim25/methods directly.

// inventoryMaxWait is MaxWaitSeconds of one WaitForUpdatesEx: how long
// vCenter holds a call without a change before answering empty. Each
// call is bounded by it plus Config.Timeout, so a dead connection that
// nothing else noticed is found within that.
const inventoryMaxWait = time.Minute

// doubtNotYet is the Doubt of an inventory before its first retrieve.
const doubtNotYet = "no inventory retrieved from vCenter yet"

// blocked ends a watch because the target is not healthy; reason becomes
// the inventory's Doubt.
type blocked struct{ reason string }

func (b *blocked) Error() string { return b.reason }

// watchObjects are what one watch made on the server: to be destroyed
// before the next watch on the same session, or when the prober stops.
// A session that ends takes them with it.
type watchObjects struct {
	sess *conn
	view *view.ContainerView
	pc   *property.Collector
}

// watchInventory keeps t's inventory until ctx is done.
func (p *Prober) watchInventory(ctx context.Context, t *target) {
	var (
		cycle    int       // failed watches since the last full retrieve, for the backoff
		due      time.Time // no new watch before
		failedOn *conn     // the session the last watch failed on
		confirm  uint64    // t.successes when it failed
		left     *watchObjects
	)
	defer func() { p.releaseWatch(t, left, min(p.cfg.Timeout, shutdownLogout)) }()
	for {
		c, ok := p.awaitWatchable(ctx, t, due, failedOn, confirm)
		if !ok {
			return
		}
		if c != failedOn {
			// A new session: whatever failed on the old one, try at once.
			cycle, failedOn = 0, nil
		}
		left = p.releaseWatch(t, left, p.cfg.Timeout)
		objs, verified, err := p.watchOnce(ctx, t, c)
		left = objs
		if ctx.Err() != nil {
			return
		}
		if b, ok := errors.AsType[*blocked](err); ok {
			// Nothing failed: the target is not healthy. awaitWatchable
			// waits until it is, without a backoff of its own.
			p.inventoryDoubt(t, b.reason)
			continue
		}
		f := classifyFailure(err)
		if verified {
			cycle = 0
		}
		cycle++
		next := p.cfg.nextAttempt(f, cycle, p.jitter.float64())
		due = p.clock.Now().Add(next.wait)
		p.mu.Lock()
		failedOn, confirm = c, t.successes
		p.mu.Unlock()
		p.inventoryDoubt(t, "inventory watch failed: "+f.reason)
		p.log.Warn("vCenter inventory watch failed", "target", t.name, "class", f.class, "kind", f.kind,
			"reason", f.reason, "next_watch_in", next.wait)
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

// awaitWatchable waits until t is healthy, and then until due, and
// returns the session to watch over; ok is false when ctx ended. After a
// watch failed on a session, that session is used again only once a
// probe has succeeded on it since (confirm is the count of successes at
// the failure): the failure may have been the session's end.
func (p *Prober) awaitWatchable(ctx context.Context, t *target, due time.Time, failedOn *conn, confirm uint64) (c *conn, ok bool) {
	var timer interface{ Stop() bool }
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		p.mu.Lock()
		sess, st, successes, sig := t.sess, t.st, t.successes, t.sig
		p.mu.Unlock()
		up, netChanged := p.watchNetwork()
		reason := blockReason(sess, st, up)
		if reason != "" {
			p.inventoryDoubt(t, reason)
		}
		var timerC <-chan time.Time
		if reason == "" && (sess != failedOn || successes > confirm) {
			if sess != failedOn {
				due = time.Time{}
			}
			wait := due.Sub(p.clock.Now())
			if wait <= 0 {
				return sess, true
			}
			tm := p.clock.NewTimer(wait)
			timer, timerC = tm, tm.C()
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-sig:
		case <-netChanged:
		case <-timerC:
		}
		if timer != nil {
			timer.Stop()
			timer = nil
		}
	}
}

// watchNetwork is the network's state as far as the watch cares: always
// up unless the probe pauses on it.
func (p *Prober) watchNetwork() (up bool, changed <-chan struct{}) {
	if !p.pausing() {
		return true, nil
	}
	return p.network.NetworkState()
}

// blockReason says why a target is not healthy enough to watch, or ""
// when it is: a session, the last probe successful, the network up.
func blockReason(sess *conn, st Status, networkUp bool) string {
	switch {
	case !networkUp || st.Paused:
		return "network down: the vCenter probe is paused"
	case st.Class != "":
		return "vCenter probe failing: " + st.Reason
	case sess == nil:
		return "no vCenter session yet"
	case !st.Up:
		return "waiting for the vCenter probe"
	}
	return ""
}

// watchOnce runs one watch over session c until it fails, t stops being
// healthy (a *blocked error) or ctx ends. It returns what it made on the
// server and whether the inventory was verified over it.
func (p *Prober) watchOnce(ctx context.Context, t *target, c *conn) (objs *watchObjects, verified bool, err error) {
	wctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { p.monitorWatch(wctx, t, c, cancel) })
	defer func() {
		cancel(nil)
		wg.Wait()
	}()
	fail := func(op string, err error) error {
		if b, ok := errors.AsType[*blocked](context.Cause(wctx)); ok {
			return b
		}
		return opError(op, t.name, err)
	}
	start := p.clock.Now()

	cctx, cc := context.WithTimeout(wctx, p.cfg.Timeout)
	v, err := view.NewManager(c.vim).CreateContainerView(cctx, c.vim.ServiceContent.RootFolder,
		[]string{"HostSystem", "Datastore"}, true)
	cc()
	if err != nil {
		return nil, false, fail("create inventory view", err)
	}
	objs = &watchObjects{sess: c, view: v}
	cctx, cc = context.WithTimeout(wctx, p.cfg.Timeout)
	pc, err := property.DefaultCollector(c.vim).Create(cctx)
	cc()
	if err != nil {
		return objs, false, fail("create property collector", err)
	}
	objs.pc = pc
	cctx, cc = context.WithTimeout(wctx, p.cfg.Timeout)
	_, err = pc.CreateFilter(cctx, inventoryFilter(v.Reference()))
	cc()
	if err != nil {
		return objs, false, fail("create property filter", err)
	}

	recs := newRecords(p.hostFilter, p.cfg.MaxHosts, p.cfg.MaxDatastores)
	maxWait := int32(p.invWait / time.Second)
	req := types.WaitForUpdatesEx{This: pc.Reference(), Options: &types.WaitOptions{MaxWaitSeconds: &maxWait}}
	updates := p.metrics.invUpdates.WithLabelValues(t.name)
	lastOver := ""
	for {
		cctx, cc = context.WithTimeout(wctx, p.invWait+p.cfg.Timeout)
		res, err := methods.WaitForUpdatesEx(cctx, c.vim, &req)
		cc()
		if err != nil {
			return objs, verified, fail("wait for inventory updates", err)
		}
		set := res.Returnval
		if set == nil {
			continue // MaxWaitSeconds passed without a change
		}
		req.Version = set.Version
		n := 0
		for _, fs := range set.FilterSet {
			n += recs.apply(fs.ObjectSet)
		}
		updates.Add(float64(n))
		if recs.unread != "" {
			// Not verified: a new watch, with a full retrieve, is the
			// one way to know the state again.
			return objs, verified, fail("wait for inventory updates", fmt.Errorf("a change linkgate does not read: %s", recs.unread))
		}
		if set.Truncated != nil && *set.Truncated {
			continue // more of this version follows
		}
		if verified && n == 0 {
			continue
		}
		if context.Cause(wctx) != nil {
			// In doubt since the answer left vCenter: not verified.
			return objs, verified, fail("wait for inventory updates", context.Cause(wctx))
		}
		hosts, dss, over := recs.snapshot()
		inv := p.publishInventory(t, func(inv *Inventory) {
			inv.Hosts, inv.Datastores = hosts, dss
			inv.setDoubt(over, p.clock.Now())
		})
		if !verified {
			p.log.Info("vCenter inventory retrieved", "target", t.name, "hosts", len(inv.Hosts),
				"datastores", len(inv.Datastores), "took", p.clock.Now().Sub(start))
		}
		if over != lastOver {
			if over != "" {
				p.log.Warn("vCenter inventory unverified", "target", t.name, "reason", over)
			} else {
				p.log.Info("vCenter inventory back within its bounds", "target", t.name)
			}
			lastOver = over
		}
		verified = true
	}
}

// monitorWatch cancels the watch over c, with the reason as the cause,
// as soon as t stops being healthy or c stops being its session.
func (p *Prober) monitorWatch(ctx context.Context, t *target, c *conn, cancel context.CancelCauseFunc) {
	for {
		p.mu.Lock()
		sess, st, sig := t.sess, t.st, t.sig
		p.mu.Unlock()
		up, netChanged := p.watchNetwork()
		reason := blockReason(sess, st, up)
		if reason == "" && sess != c {
			reason = "vCenter session replaced"
		}
		if reason != "" {
			cancel(&blocked{reason})
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-netChanged:
		}
	}
}

// inventoryFilter selects the watched properties of every host and
// datastore in the view.
func inventoryFilter(v types.ManagedObjectReference) types.CreateFilter {
	return types.CreateFilter{Spec: types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{
			Obj:       v,
			Skip:      types.NewBool(true),
			SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{Type: "ContainerView", Path: "view"}},
		}},
		PropSet: []types.PropertySpec{
			{Type: "HostSystem", PathSet: hostProps},
			{Type: "Datastore", PathSet: datastoreProps},
		},
	}}
}

// releaseWatch destroys what a watch made on the server, within timeout,
// if its session is still t's and the network is up: otherwise the
// session's end takes it, or the next watch on the session tries again.
// It returns what remains to release.
func (p *Prober) releaseWatch(t *target, objs *watchObjects, timeout time.Duration) *watchObjects {
	if objs == nil {
		return nil
	}
	p.mu.Lock()
	same := t.sess == objs.sess
	p.mu.Unlock()
	if !same {
		return nil
	}
	if !p.networkUp() {
		return objs
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Destroying the collector also ends a wait still held on the server
	// for a call this side gave up.
	if objs.pc != nil {
		if err := objs.pc.Destroy(ctx); err != nil {
			p.log.Debug("vCenter inventory: destroying the property collector failed", "target", t.name, "err", err)
		}
	}
	if err := objs.view.Destroy(ctx); err != nil {
		p.log.Debug("vCenter inventory: destroying the view failed", "target", t.name, "err", err)
	}
	return nil
}

// inventoryDoubt marks t's inventory unverified for reason, keeping the
// last known hosts and datastores; a doubt already held is not
// published again.
func (p *Prober) inventoryDoubt(t *target, reason string) {
	cur := p.currentInventory(t)
	if !cur.Verified && cur.Doubt == reason {
		return
	}
	p.publishInventory(t, func(inv *Inventory) { inv.setDoubt(reason, p.clock.Now()) })
	if cur.Verified {
		// A failed watch has logged its warning; the other causes
		// (network, session, probe) are logged where they happen.
		p.log.Info("vCenter inventory unverified", "target", t.name, "reason", reason)
	} else {
		p.log.Debug("vCenter inventory unverified", "target", t.name, "reason", reason)
	}
}

// setDoubt sets Verified, Doubt and DoubtSince for doubt ("" for none)
// at now: DoubtSince is when the inventory stopped being verified.
func (inv *Inventory) setDoubt(doubt string, now time.Time) {
	switch {
	case doubt == "":
		inv.Verified, inv.Doubt, inv.DoubtSince = true, "", time.Time{}
	case inv.Verified || inv.DoubtSince.IsZero():
		inv.Verified, inv.Doubt, inv.DoubtSince = false, doubt, now
	default:
		inv.Doubt = doubt
	}
}
