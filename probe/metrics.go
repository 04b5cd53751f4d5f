package probe

import (
	"slices"
	"time"

	"github.com/linkgate/linkgate/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmware/govmomi/vim25/types"
)

// metrics are the Prober's Prometheus series. Gauges are computed from the
// Status snapshot at scrape time; counters and the histogram count events
// as they happen. Every series has the label target = host[:port].
type metrics struct {
	up, backoff, failures, lastSuccess, paused, sessionActive, tlsInsecure, info *prometheus.Desc
	loginsRemaining, loginsBlockedUntil                                          *prometheus.Desc

	probes   *prometheus.CounterVec // target, result
	errors   *prometheus.CounterVec // target, class, kind
	retries  *prometheus.CounterVec // target
	logins   *prometheus.CounterVec // target, result
	duration *prometheus.HistogramVec

	// The inventory (linkgate_vsphere_*), with Config.Inventory.
	hostConnection, hostMaintenance, hostPower, datastoreAccessible, invVerified *prometheus.Desc
	invUpdates                                                                   *prometheus.CounterVec // target
	dsHosts, dsConnectedHosts                                                    *prometheus.Desc
	vmLookups                                                                    *prometheus.CounterVec // target, result
	vmScans                                                                      *prometheus.CounterVec // target
}

// The result label of vm_lookups_total.
const (
	lookupFound    = "found"
	lookupNotFound = "not_found"
	lookupError    = "error"
	lookupLimited  = "limited"
)

var lookupResults = []string{lookupFound, lookupNotFound, lookupError, lookupLimited}

// vmLookup counts a VM lookup that was not answered from the cache.
func (m *metrics) vmLookup(target, result string) {
	m.vmLookups.WithLabelValues(target, result).Inc()
}

// subsystem names every series linkgate_vcenter_<name>; the inventory's
// are linkgate_vsphere_<name>.
const (
	subsystem          = "vcenter"
	inventorySubsystem = "vsphere"
)

// The label values of the state series: every host has one series per
// value, 1 for its current state. A connection state outside the set
// sets none; a power state outside it, or unknown to the inventory, is
// unknown.
var (
	connectionStates = []string{
		string(types.HostSystemConnectionStateConnected),
		string(types.HostSystemConnectionStateDisconnected),
		string(types.HostSystemConnectionStateNotResponding),
	}
	powerStates = []string{
		string(types.HostSystemPowerStatePoweredOn),
		string(types.HostSystemPowerStatePoweredOff),
		string(types.HostSystemPowerStateStandBy),
		string(types.HostSystemPowerStateUnknown),
	}
)

func newMetrics(p *Prober) *metrics {
	labels := func(more []string) []string { return append([]string{"target"}, more...) }
	desc := func(name, help string, more ...string) *prometheus.Desc {
		return metric.NewDesc(subsystem, name, help, labels(more)...)
	}
	counter := func(name, help string, more ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: metric.Name(subsystem, name), Help: help}, labels(more))
	}
	m := &metrics{
		up:            desc("up", "Whether the last probe of the vCenter succeeded (1) or the target is down (0)."),
		backoff:       desc("backoff_seconds", "Current wait before the next attempt after a failure; 0 while healthy."),
		failures:      desc("consecutive_failures", "Failed probe attempts since the last success."),
		lastSuccess:   desc("last_success_timestamp_seconds", "Unix time of the last successful probe; 0 if none."),
		paused:        desc("paused", "Whether probing is paused because the required network is down."),
		sessionActive: desc("session_active", "Whether a logged-in vCenter session is held for the target."),
		tlsInsecure:   desc("tls_insecure", "Whether TLS certificate verification is disabled for the target."),
		info: desc("info", "vCenter product information from ServiceContent.about; always 1.",
			"version", "build", "api_type", "api_version", "instance_uuid"),
		loginsRemaining: desc("login_failures_remaining",
			"Logins that may still fail within the failed-login window before linkgate holds logins back (logins in flight count as failed); 0 while held back."),
		loginsBlockedUntil: desc("login_blocked_until_timestamp_seconds",
			"Unix time until which logins are held back by the failed-login limit; 0 when a login may be sent."),
		probes:  counter("probes_total", "Probe attempts by result (success or failure).", "result"),
		errors:  counter("errors_total", "Errors by class (transient or permanent) and kind.", "class", "kind"),
		retries: counter("retries_total", "Probe attempts made after a failed attempt."),
		logins:  counter("logins_total", "vCenter Login calls by result (success or failure).", "result"),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metric.Name(subsystem, "probe_duration_seconds"),
			Help:    "Duration of probe attempts, login included when one was needed.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, labels(nil)),
	}
	inv := func(name, help string, more ...string) *prometheus.Desc {
		return metric.NewDesc(inventorySubsystem, name, help, labels(more)...)
	}
	m.hostConnection = inv("host_connection_state",
		"1 for the host's current runtime.connectionState in vCenter (connected, disconnected, notResponding), 0 for the others.", "host", "state")
	m.hostMaintenance = inv("host_maintenance", "Whether the host is in maintenance mode.", "host")
	m.hostPower = inv("host_power_state",
		"1 for the host's current runtime.powerState in vCenter (poweredOn, poweredOff, standBy, unknown), 0 for the others.", "host", "state")
	m.datastoreAccessible = inv("datastore_accessible", "Whether vCenter reports the datastore accessible (summary.accessible).", "datastore")
	m.invVerified = inv("inventory_verified",
		"Whether the host and datastore inventory is vCenter's current state (a full retrieve over a watch still running); the host and datastore series are the last known state while 0.")
	m.invUpdates = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metric.Name(inventorySubsystem, "inventory_updates_total"),
		Help: "Host and datastore updates received from vCenter's property collector, full retrieves included.",
	}, labels(nil))
	m.dsHosts = inv("datastore_hosts", "Hosts of the inventory (after the host filters) that mount the datastore.", "datastore")
	m.dsConnectedHosts = inv("datastore_connected_hosts",
		"Hosts of the inventory that mount the datastore and are connected in vCenter. An inaccessible datastore with none is explained by its hosts (the local datastore of a disconnected host).", "datastore")
	m.vmLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metric.Name(inventorySubsystem, "vm_lookups_total"),
		Help: "VM lookups of /ready/vm and check --vm not answered from the cache, by result: found, not_found, error (no session, a failed call), limited (over the rate limit, not sent).",
	}, labels([]string{"result"}))
	m.vmScans = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metric.Name(inventorySubsystem, "vm_name_scans_total"),
		Help: "Retrievals of the names of all the target's VMs, made to resolve a VM name not seen before (at most one per 30s).",
	}, labels(nil))
	// Every series exists from the start, so rate() and absent() work
	// before the first event.
	for _, t := range p.targets {
		for _, r := range []string{"success", "failure"} {
			m.probes.WithLabelValues(t.name, r)
			m.logins.WithLabelValues(t.name, r)
		}
		m.retries.WithLabelValues(t.name)
		m.duration.WithLabelValues(t.name)
		if p.cfg.Inventory {
			m.invUpdates.WithLabelValues(t.name)
			for _, r := range lookupResults {
				m.vmLookups.WithLabelValues(t.name, r)
			}
			m.vmScans.WithLabelValues(t.name)
		}
	}
	return m
}

// probed counts a finished attempt of Run or ProbeOnce that took took:
// its duration, its result and, for a failure, its error.
func (m *metrics) probed(target string, took time.Duration, f failure) {
	m.duration.WithLabelValues(target).Observe(took.Seconds())
	m.probes.WithLabelValues(target, resultLabel(f.ok())).Inc()
	if !f.ok() {
		m.failed(target, f)
	}
}

// loggedIn counts a Login call that was sent, by its answer.
func (m *metrics) loggedIn(target string, ok bool) {
	m.logins.WithLabelValues(target, resultLabel(ok)).Inc()
}

// resultLabel is the value of the result label.
func resultLabel(ok bool) string {
	if ok {
		return "success"
	}
	return "failure"
}

// failed counts an error by its class and kind.
func (m *metrics) failed(target string, f failure) {
	m.errors.WithLabelValues(target, string(f.class), string(f.kind)).Inc()
}

// Describe implements prometheus.Collector.
func (p *Prober) Describe(ch chan<- *prometheus.Desc) {
	m := p.metrics
	for _, d := range []*prometheus.Desc{m.up, m.backoff, m.failures, m.lastSuccess, m.paused, m.sessionActive, m.tlsInsecure, m.info,
		m.loginsRemaining, m.loginsBlockedUntil} {
		ch <- d
	}
	m.probes.Describe(ch)
	m.errors.Describe(ch)
	m.retries.Describe(ch)
	m.logins.Describe(ch)
	m.duration.Describe(ch)
	if p.cfg.Inventory {
		for _, d := range []*prometheus.Desc{m.hostConnection, m.hostMaintenance, m.hostPower, m.datastoreAccessible,
			m.dsHosts, m.dsConnectedHosts, m.invVerified} {
			ch <- d
		}
		m.invUpdates.Describe(ch)
		m.vmLookups.Describe(ch)
		m.vmScans.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (p *Prober) Collect(ch chan<- prometheus.Metric) {
	m := p.metrics
	type row struct {
		st           Status
		active       bool
		remaining    int
		blockedUntil time.Time
	}
	now := p.clock.Now()
	p.mu.Lock()
	rows := make([]row, len(p.targets))
	for i, t := range p.targets {
		rows[i] = row{st: t.st, active: t.sess != nil}
		rows[i].remaining, rows[i].blockedUntil = t.logins.state(now)
	}
	p.mu.Unlock()

	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, r := range rows {
		s, name := r.st, r.st.Target
		gauge(m.up, metric.Bool(s.Up), name)
		gauge(m.backoff, s.Backoff.Seconds(), name)
		gauge(m.failures, float64(s.ConsecutiveFailures), name)
		gauge(m.lastSuccess, unixSeconds(s.LastSuccess), name)
		gauge(m.loginsRemaining, float64(r.remaining), name)
		gauge(m.loginsBlockedUntil, unixSeconds(r.blockedUntil), name)
		gauge(m.paused, metric.Bool(s.Paused), name)
		gauge(m.sessionActive, metric.Bool(r.active), name)
		gauge(m.tlsInsecure, metric.Bool(p.cfg.Insecure), name)
		if a := s.About; a.APIType != "" {
			gauge(m.info, 1, name, a.Version, a.Build, a.APIType, a.APIVersion, a.InstanceUUID)
		}
	}
	m.probes.Collect(ch)
	m.errors.Collect(ch)
	m.retries.Collect(ch)
	m.logins.Collect(ch)
	m.duration.Collect(ch)
	if p.cfg.Inventory {
		invs, _ := p.Inventory()
		for _, inv := range invs {
			m.collectInventory(ch, inv)
		}
		m.invUpdates.Collect(ch)
		m.vmLookups.Collect(ch)
		m.vmScans.Collect(ch)
	}
}

// collectInventory exports one inventory: the last known state, with
// inventory_verified saying whether it is current. Hosts and datastores
// that leave it leave the exposition. Names that vCenter holds more than
// once (datastores in different datacenters may share one) get one
// series each, with the worst of their states: not connected over
// connected, in maintenance, not powered on, not accessible.
func (m *metrics) collectInventory(ch chan<- prometheus.Metric, inv *Inventory) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	target := inv.Target
	gauge(m.invVerified, metric.Bool(inv.Verified), target)
	for i := 0; i < len(inv.Hosts); {
		h := inv.Hosts[i]
		for i++; i < len(inv.Hosts) && inv.Hosts[i].Name == h.Name; i++ {
			h = worseHost(h, inv.Hosts[i])
		}
		for _, s := range connectionStates {
			gauge(m.hostConnection, metric.Bool(h.ConnectionState == s), target, h.Name, s)
		}
		gauge(m.hostMaintenance, metric.Bool(h.InMaintenance), target, h.Name)
		power := h.PowerState
		if !slices.Contains(powerStates, power) {
			power = string(types.HostSystemPowerStateUnknown)
		}
		for _, s := range powerStates {
			gauge(m.hostPower, metric.Bool(power == s), target, h.Name, s)
		}
	}
	// The hosts that mount each datastore, and how many are connected.
	type mounts struct{ all, connected int }
	mounted := make(map[string]mounts, len(inv.Datastores))
	for _, h := range inv.Hosts {
		for _, id := range h.Datastores {
			c := mounted[id]
			c.all++
			if h.IsConnected() {
				c.connected++
			}
			mounted[id] = c
		}
	}
	// Datastores are sorted by ID: gather them by name.
	type byName struct {
		accessible bool
		mounts
	}
	named := make(map[string]byName, len(inv.Datastores))
	names := make([]string, 0, len(inv.Datastores))
	for _, d := range inv.Datastores {
		if d.Name == "" {
			continue // not described by vCenter: no name to show
		}
		n, seen := named[d.Name]
		if !seen {
			names = append(names, d.Name)
			n.accessible = true
		}
		c := mounted[d.ID]
		n.accessible = n.accessible && d.Accessible
		n.all += c.all
		n.connected += c.connected
		named[d.Name] = n
	}
	for _, name := range names {
		n := named[name]
		gauge(m.datastoreAccessible, metric.Bool(n.accessible), target, name)
		gauge(m.dsHosts, float64(n.all), target, name)
		gauge(m.dsConnectedHosts, float64(n.connected), target, name)
	}
}

// worseHost merges two hosts of the same name for the metrics.
func worseHost(a, b Host) Host {
	if a.IsConnected() {
		a.ConnectionState = b.ConnectionState
	}
	a.InMaintenance = a.InMaintenance || b.InMaintenance
	if a.PowerState == string(types.HostSystemPowerStatePoweredOn) {
		a.PowerState = b.PowerState
	}
	return a
}

// unixSeconds is t as a Unix timestamp; the zero time is 0.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
