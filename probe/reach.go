package probe

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
)

// Host reachability: can this node open a TCP connection to each ESXi
// host's ports? The disk data of a migration does not come from vCenter
// but from the host that runs the VM: HTTPS on 443 and NFC on 902, as
// virt-v2v/VDDK and hyper2kvm's vSphere export use them. "Connected in
// vCenter but unreachable from this node" is a path problem (a firewall,
// a route, a VLAN) that no vCenter call reveals.
//
// A Reach probes the hosts of one vCenter target. Its host set comes
// from outside (the inventory's connected hosts, through SetHosts); the
// address probed is the name vCenter knows the host by. Where vCenter
// knows a host by a management address that this node does not use for
// the data path (another VMkernel interface carries NFC), the probe
// tests the management path only.

// Reach defaults; see ReachOptions.
const (
	DefaultReachInterval    = 30 * time.Second
	DefaultReachTimeout     = 5 * time.Second
	DefaultReachConcurrency = 16
)

// DefaultReachPorts returns the ports probed by default: 443 (the host's
// HTTPS: its API and the disk transfers of the HTTP NFC lease) and 902
// (NFC, VDDK's nbd/nbdssl transport).
func DefaultReachPorts() []int { return []int{443, 902} }

// ReachOptions configures a Reach. Start from DefaultReachOptions: zero
// durations and concurrency get the defaults, but Ports is taken as
// written, and an empty list disables probing.
type ReachOptions struct {
	// Target names the vCenter the hosts belong to, as in Status.Target:
	// the target label of the metrics.
	Target string
	// Ports are the TCP ports probed on every host, in this order. Empty:
	// no probing; every host then counts as reachable (there is nothing
	// configured to reach).
	Ports []int
	// Interval is the cadence of a host's probes, jittered by ±25% per
	// host and round so that hosts spread out (0: DefaultReachInterval).
	Interval time.Duration
	// Timeout bounds one connect (0: DefaultReachTimeout).
	Timeout time.Duration
	// Concurrency bounds the connects in flight at once, over all hosts
	// and ports (0: DefaultReachConcurrency).
	Concurrency int
	// Clock schedules the rounds (nil: clock.System). Connect timeouts
	// are real time whatever the clock.
	Clock clock.Clock
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
	// Dialer opens the connections (nil: a net.Dialer). A test dials
	// from inside a network namespace with it.
	Dialer DialFunc
	// Rand is the jitter source (nil: a random one).
	Rand rand.Source
}

// DefaultReachOptions returns the defaults, for target.
func DefaultReachOptions(target string) ReachOptions {
	return ReachOptions{
		Target:      target,
		Ports:       DefaultReachPorts(),
		Interval:    DefaultReachInterval,
		Timeout:     DefaultReachTimeout,
		Concurrency: DefaultReachConcurrency,
	}
}

// check fills in the defaults and checks o.
func (o ReachOptions) check() (ReachOptions, error) {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	for _, d := range []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{{"Interval", &o.Interval, DefaultReachInterval}, {"Timeout", &o.Timeout, DefaultReachTimeout}} {
		switch {
		case *d.v < 0:
			return o, bad(d.field, "must not be negative, got %v", *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	switch {
	case o.Concurrency < 0:
		return o, bad("Concurrency", "must not be negative, got %d", o.Concurrency)
	case o.Concurrency == 0:
		o.Concurrency = DefaultReachConcurrency
	}
	o.Ports = slices.Clone(o.Ports)
	for i, p := range o.Ports {
		if p < 1 || p > 65535 {
			return o, bad("Ports", "%d is not a TCP port", p)
		}
		if slices.Contains(o.Ports[:i], p) {
			return o, bad("Ports", "%d listed twice", p)
		}
	}
	o.Clock = clock.Or(o.Clock)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Dialer == nil {
		o.Dialer = new(net.Dialer).DialContext
	}
	if o.Rand == nil {
		o.Rand = rand.NewPCG(rand.Uint64(), rand.Uint64())
	}
	return o, nil
}

// Reachability is the reachability of one target's hosts: an immutable
// snapshot, replaced as a whole on every change, when Changed is closed.
// None of it may be modified, slices included: successive snapshots share
// them.
//
// It changes when a result does (reachable or not, or another error), not
// at every probe: a host that stays reachable makes no new snapshot.
type Reachability struct {
	// Target is ReachOptions.Target.
	Target string
	// Ports are the ports probed, in the order of every HostReach.Ports.
	Ports []int
	// Paused says probing is parked because the network is down: the
	// results are the last known ones, from before the outage. When the
	// network returns every host is probed at once.
	Paused bool
	// Hosts are the hosts of the last SetHosts, sorted by name.
	Hosts []HostReach
	// Version counts the snapshots, from 0 (before Run).
	Version uint64

	changed chan struct{}
}

// Changed is closed when a newer snapshot supersedes this one.
func (s *Reachability) Changed() <-chan struct{} { return s.changed }

// Host returns the host named name.
func (s *Reachability) Host(name string) (HostReach, bool) {
	i, ok := slices.BinarySearchFunc(s.Hosts, name, func(h HostReach, n string) int { return cmp.Compare(h.Name, n) })
	if !ok {
		return HostReach{}, false
	}
	return s.Hosts[i], true
}

// HostReach is one host's reachability.
type HostReach struct {
	// Name is the name vCenter knows the host by: the address probed.
	Name string
	// Ports are the results per port, in Reachability.Ports order.
	Ports []PortReach
}

// Reachable says every port has been probed and the last probe of each
// connected. A host with no port to probe is reachable.
func (h HostReach) Reachable() bool {
	for _, p := range h.Ports {
		if !p.Reachable {
			return false
		}
	}
	return true
}

// Problem says why the host is not Reachable ("" when it is): each
// failing port with its kind and error, or that it has not been probed
// yet.
func (h HostReach) Problem() string {
	var out []string
	for _, p := range h.Ports {
		switch {
		case p.Reachable:
		case !p.Checked:
			out = append(out, fmt.Sprintf("port %d: not probed yet", p.Port))
		default:
			out = append(out, fmt.Sprintf("port %d: %s: %s", p.Port, p.Kind, p.Reason))
		}
	}
	return strings.Join(out, "; ")
}

// PortReach is the last result of probing one port of a host.
type PortReach struct {
	Port int
	// Checked says a probe has answered since the host was added; until
	// then Reachable is false and Since is when the host was added.
	Checked bool
	// Reachable says the last probe connected.
	Reachable bool
	// Class and Kind classify the last probe's error (as Classify does,
	// and the probe_errors_total metric counts them), and Reason is its
	// text; all empty when it connected.
	Class  Class
	Kind   Kind
	Reason string
	// Since is when Reachable took its current value: the probe that
	// first found it so.
	Since time.Time
}

// Reach probes the TCP reachability of one vCenter target's ESXi hosts
// from this node. It implements prometheus.Collector. Several Reach (one
// per target) registered with one registry must be registered as one
// collector, since each describes the same families.
type Reach struct {
	o       ReachOptions
	network Network
	jitter  *jitter
	kick    chan struct{} // SetHosts changed want; capacity 1

	mu      sync.Mutex
	want    []string            // the hosts of the last SetHosts, sorted
	stamps  map[string]uint64   // their connection stamps (SetConnected)
	fresh   map[string]bool     // hosts added by SetHosts since the loop last looked
	snap    *Reachability       // the current snapshot
	errs    map[string]errCount // failed probes per host, for the metrics
	running bool
}

// errKey is one series of probe_errors_total of a host.
type errKey struct {
	port  int
	class Class
	kind  Kind
}

type errCount map[errKey]uint64

// NewReach checks o and builds a Reach; nothing is dialed until Run. A
// nil network means always up.
func NewReach(o ReachOptions, network Network) (*Reach, error) {
	o, err := o.check()
	if err != nil {
		return nil, err
	}
	return &Reach{
		o:       o,
		network: network,
		jitter:  &jitter{r: rand.New(o.Rand)},
		kick:    make(chan struct{}, 1),
		errs:    map[string]errCount{},
		snap:    &Reachability{Target: o.Target, Ports: o.Ports, changed: make(chan struct{})},
	}, nil
}

// SetHosts replaces the set of hosts to probe (duplicates and empty names
// are ignored). A host new to the set is probed at once, with no result
// kept from an earlier time in the set: a host that reconnects in vCenter
// leaves the set and comes back (or, with SetConnected, gets a new
// stamp). Hosts that leave drop out of the snapshot and the metrics. It
// may be called at any time, before Run too.
func (r *Reach) SetHosts(hosts []string) {
	stamps := make(map[string]uint64, len(hosts))
	for _, h := range hosts {
		stamps[h] = 0
	}
	r.SetConnected(stamps)
}

// SetConnected is SetHosts for the hosts of stamps, each with the stamp
// of its connection (Host.Connected): a host whose stamp changed since
// the last call reconnected, even if no call saw it disconnected, and is
// probed at once, afresh.
func (r *Reach) SetConnected(stamps map[string]uint64) {
	want := make([]string, 0, len(stamps))
	for h := range stamps {
		if h != "" {
			want = append(want, h)
		}
	}
	slices.Sort(want)
	r.mu.Lock()
	for _, h := range want {
		if old, ok := r.stamps[h]; !ok || old != stamps[h] {
			if r.fresh == nil {
				r.fresh = map[string]bool{}
			}
			r.fresh[h] = true
		}
	}
	r.want, r.stamps = want, maps.Clone(stamps)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default: // the loop has a kick pending: it reads want then
	}
}

// Snapshot returns the current reachability. It never blocks on probes.
func (r *Reach) Snapshot() *Reachability {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snap
}

// Run probes the hosts until ctx is done, then returns nil once every
// connect it started has returned. It may be called once.
func (r *Reach) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return errors.New("probe: Reach.Run called twice")
	}
	r.running = true
	r.mu.Unlock()

	l := &reachLoop{r: r, hosts: map[string]*reachHost{}, results: make(chan reachResult), done: make(chan struct{})}
	defer l.stop()
	l.run(ctx)
	return nil
}

// reachHost is the loop's state of one host.
type reachHost struct {
	name  string
	gen   uint64      // tells results of this stay in the set from earlier ones
	ports []PortReach // current results, in port order
	view  []PortReach // ports as last published: immutable
	dirty bool        // ports changed since view was made
	due   time.Time   // no round before; zero: now
	// pending counts the connects of the current round that have not
	// answered: a host has one round at a time.
	pending int
}

// reachJob is one connect: port index port of host, in network epoch
// epoch.
type reachJob struct {
	host  string
	gen   uint64
	port  int
	epoch uint64
}

type reachResult struct {
	reachJob
	err error
}

// reachLoop is the state of Run, owned by its goroutine.
type reachLoop struct {
	r       *Reach
	hosts   map[string]*reachHost
	names   []string // the hosts, sorted
	gen     uint64
	paused  bool
	epoch   uint64             // counts network outages: results of an earlier one are dropped
	dialCtx context.Context    // the connects of this epoch; cancelled when the network goes down
	cancel  context.CancelFunc // of dialCtx
	queue   []reachJob
	flying  int // connects in flight, cancelled ones included until they return
	changed bool
	results chan reachResult
	done    chan struct{} // closed when Run ends: in-flight connects drop their result
	wg      sync.WaitGroup
}

func (l *reachLoop) run(ctx context.Context) {
	r := l.r
	up, netChanged := true, (<-chan struct{})(nil)
	if r.network != nil {
		up, netChanged = r.network.NetworkState()
	}
	l.paused = !up
	if l.paused {
		r.o.Logger.Info("network down: ESXi host reachability probes paused", "target", r.o.Target)
	} else {
		l.dialCtx, l.cancel = context.WithCancel(ctx)
	}
	l.changed = true
	l.reconcile()

	var timer clock.Timer
	var timerC <-chan time.Time
	var timerAt time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := r.o.Clock.Now()
		if !l.paused {
			l.queueDue(now)
			l.dispatch(ctx)
		}
		if next := l.nextDue(); !next.Equal(timerAt) {
			if timer != nil {
				timer.Stop()
				timer, timerC = nil, nil
			}
			if !next.IsZero() {
				timer = r.o.Clock.NewTimer(next.Sub(now))
				timerC = timer.C()
			}
			timerAt = next
		}
		if l.changed {
			l.publish()
		}
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			l.reconcile()
		case <-netChanged:
			// A change need not be a transition (a collector signals
			// every snapshot): only one counts.
			up, netChanged = r.network.NetworkState()
			l.network(ctx, up)
		case <-timerC:
			timer, timerC, timerAt = nil, nil, time.Time{}
		case res := <-l.results:
			l.record(ctx, res)
			for more := true; more; {
				select {
				case res := <-l.results:
					l.record(ctx, res)
				default:
					more = false
				}
			}
		}
	}
}

// stop cancels the connects in flight and waits for them.
func (l *reachLoop) stop() {
	if l.cancel != nil {
		l.cancel()
	}
	close(l.done)
	l.wg.Wait()
}

// reconcile applies the last SetHosts: hosts that left are forgotten,
// with their error counts; hosts that arrived, or left and came back
// since the loop last looked, start afresh and are due at once.
func (l *reachLoop) reconcile() {
	r := l.r
	now := r.o.Clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	want, fresh := r.want, r.fresh
	r.fresh = nil
	for name := range l.hosts {
		if _, ok := slices.BinarySearch(want, name); !ok || fresh[name] {
			delete(l.hosts, name)
			delete(r.errs, name)
			l.changed = true
			if !ok {
				r.o.Logger.Debug("ESXi host left the reachability probes", "target", r.o.Target, "host", name)
			}
		}
	}
	for _, name := range want {
		if l.hosts[name] != nil {
			continue
		}
		l.gen++
		h := &reachHost{name: name, gen: l.gen, ports: make([]PortReach, len(r.o.Ports)), dirty: true}
		for i, p := range r.o.Ports {
			h.ports[i] = PortReach{Port: p, Since: now}
		}
		l.hosts[name] = h
		l.changed = true
		r.o.Logger.Debug("ESXi host joined the reachability probes", "target", r.o.Target, "host", name)
	}
	l.names = want
}

// network acts on the network's state: going down cancels the connects
// in flight (their results are dropped: the outage is the collector's to
// report) and parks; coming back makes every host due at once.
func (l *reachLoop) network(ctx context.Context, up bool) {
	r := l.r
	switch {
	case !up && !l.paused:
		l.paused, l.changed = true, true
		l.epoch++
		l.cancel()
		l.queue = nil
		for _, h := range l.hosts {
			h.pending = 0
		}
		r.o.Logger.Info("network down: ESXi host reachability probes paused", "target", r.o.Target)
	case up && l.paused:
		l.paused, l.changed = false, true
		l.dialCtx, l.cancel = context.WithCancel(ctx)
		for _, h := range l.hosts {
			h.due = time.Time{}
		}
		r.o.Logger.Info("network back: probing ESXi host reachability now", "target", r.o.Target, "hosts", len(l.hosts))
	}
}

// queueDue queues a round for every host that is due and has none
// under way, and sets when its next one is due.
func (l *reachLoop) queueDue(now time.Time) {
	ports := len(l.r.o.Ports)
	if ports == 0 {
		return
	}
	for _, name := range l.names {
		h := l.hosts[name]
		if h.pending > 0 || h.due.After(now) {
			continue
		}
		for i := range ports {
			l.queue = append(l.queue, reachJob{host: name, gen: h.gen, port: i, epoch: l.epoch})
		}
		h.pending = ports
		h.due = now.Add(l.wait())
	}
}

// wait is the jittered interval: ±25% around it.
func (l *reachLoop) wait() time.Duration {
	i := l.r.o.Interval
	return backoff(i, i+i/4, 1, l.r.jitter.float64())
}

// nextDue is when the earliest host without a round under way is due;
// zero when none is (or while paused).
func (l *reachLoop) nextDue() time.Time {
	var next time.Time
	if l.paused || len(l.r.o.Ports) == 0 {
		return next
	}
	for _, h := range l.hosts {
		if h.pending == 0 && (next.IsZero() || h.due.Before(next)) {
			next = h.due
		}
	}
	return next
}

// dispatch starts queued connects while fewer than Concurrency are in
// flight.
func (l *reachLoop) dispatch(ctx context.Context) {
	r := l.r
	for l.flying < r.o.Concurrency && len(l.queue) > 0 {
		j := l.queue[0]
		l.queue = l.queue[1:]
		if h := l.hosts[j.host]; h == nil || h.gen != j.gen {
			continue // the host left
		}
		l.flying++
		dialCtx := l.dialCtx
		addr := net.JoinHostPort(j.host, strconv.Itoa(r.o.Ports[j.port]))
		l.wg.Go(func() {
			err := r.connect(dialCtx, addr)
			select {
			case l.results <- reachResult{j, err}:
			case <-l.done:
			}
		})
	}
	if len(l.queue) == 0 {
		l.queue = nil // let the backing array go
	}
}

// connect opens a TCP connection to addr within the timeout and closes
// it.
func (r *Reach) connect(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	c, err := r.o.Dialer(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	_ = c.Close() // connected: that was the question
	return nil
}

// record applies the result of a connect: counted, logged and, when it
// changes what the snapshot says, published.
func (l *reachLoop) record(ctx context.Context, res reachResult) {
	r := l.r
	l.flying--
	h := l.hosts[res.host]
	if res.epoch != l.epoch || ctx.Err() != nil || h == nil || h.gen != res.gen {
		return // abandoned: the network went down, Run is ending, or the host left
	}
	h.pending--
	now := r.o.Clock.Now()
	f := classifyFailure(res.err)
	p := &h.ports[res.port]
	prev := *p
	reachable := f.ok()
	if !f.ok() {
		// Count first: whoever sees the new snapshot sees the count.
		r.mu.Lock()
		c := r.errs[h.name]
		if c == nil {
			c = errCount{}
			r.errs[h.name] = c
		}
		c[errKey{port: p.Port, class: f.class, kind: f.kind}]++
		r.mu.Unlock()
	}
	p.Checked, p.Reachable = true, reachable
	p.Class, p.Kind, p.Reason = f.class, f.kind, f.reason
	if !prev.Checked || prev.Reachable != reachable {
		p.Since = now
	}
	if *p != prev {
		h.dirty, l.changed = true, true
	}

	log := r.o.Logger
	attrs := []any{"target", r.o.Target, "host", h.name, "port", p.Port}
	switch {
	case reachable && prev.Checked && !prev.Reachable:
		log.Info("ESXi host reachable again", append(attrs, "after", now.Sub(prev.Since))...)
	case reachable:
		if !prev.Checked {
			log.Debug("ESXi host reachable", attrs...)
		}
	case !prev.Checked || prev.Reachable:
		log.Warn("ESXi host unreachable from this node", append(attrs, "class", f.class, "kind", f.kind, "reason", f.reason)...)
	case prev.Kind != p.Kind:
		log.Warn("ESXi host still unreachable, for another reason", append(attrs, "class", f.class, "kind", f.kind, "reason", f.reason)...)
	default:
		log.Debug("ESXi host still unreachable", append(attrs, "kind", f.kind, "reason", f.reason)...)
	}
}

// publish swaps in a new snapshot, reusing the published port slices
// of the hosts that did not change.
func (l *reachLoop) publish() {
	r := l.r
	hosts := make([]HostReach, len(l.names))
	for i, name := range l.names {
		h := l.hosts[name]
		if h.dirty {
			h.view, h.dirty = slices.Clone(h.ports), false
		}
		hosts[i] = HostReach{Name: name, Ports: h.view}
	}
	r.mu.Lock()
	prev := r.snap
	r.snap = &Reachability{
		Target:  r.o.Target,
		Ports:   r.o.Ports,
		Paused:  l.paused,
		Hosts:   hosts,
		Version: prev.Version + 1,
		changed: make(chan struct{}),
	}
	r.mu.Unlock()
	close(prev.changed)
	l.changed = false
}

// The metrics, linkgate_vsphere_host_* beside the inventory's series of
// the same hosts; the series of a host leave with it.
var (
	reachableDesc = metric.NewDesc(inventorySubsystem, "host_reachable",
		"Whether the last TCP connect from this node to the host's port succeeded (1) or failed (0); no series before the first. The last known value while probing is paused (network down).",
		"target", "host", "port")
	reachErrorsDesc = metric.NewDesc(inventorySubsystem, "host_probe_errors_total",
		"Failed TCP connects from this node to the host's port, by class (transient or permanent) and kind.",
		"target", "host", "port", "class", "kind")
)

// Describe implements prometheus.Collector.
func (r *Reach) Describe(ch chan<- *prometheus.Desc) {
	ch <- reachableDesc
	ch <- reachErrorsDesc
}

// Collect implements prometheus.Collector.
func (r *Reach) Collect(ch chan<- prometheus.Metric) {
	type series struct {
		host string
		errKey
		n uint64
	}
	r.mu.Lock()
	snap := r.snap
	var errs []series
	for host, c := range r.errs {
		for k, n := range c {
			errs = append(errs, series{host, k, n})
		}
	}
	r.mu.Unlock()

	target := r.o.Target
	for _, h := range snap.Hosts {
		for _, p := range h.Ports {
			if p.Checked {
				ch <- prometheus.MustNewConstMetric(reachableDesc, prometheus.GaugeValue, metric.Bool(p.Reachable),
					target, h.Name, strconv.Itoa(p.Port))
			}
		}
	}
	for _, s := range errs {
		ch <- prometheus.MustNewConstMetric(reachErrorsDesc, prometheus.CounterValue, float64(s.n),
			target, s.host, strconv.Itoa(s.port), string(s.class), string(s.kind))
	}
}
