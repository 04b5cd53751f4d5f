package collector

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/linkgate/linkgate/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
)

// The collector's series are declared once, as a table of families whose
// samples come from a view: one reading of the snapshot, traffic counters,
// clock and event counters. Collect renders a view as prometheus.Metric
// values for a registry; WriteText renders it directly as exposition text.
// Both walk the same table over the same view, so they cannot drift apart.

// maxLabels is the most labels any family has (link_info).
const maxLabels = 4

// sample is one series: its label values, in the family's label order.
type sample struct {
	labels [maxLabels]string
	value  float64
}

// family is one metric family and how to read its samples from a view.
type family struct {
	name   string // linkgate_…; the table below leaves out the prefix
	help   string
	typ    prometheus.ValueType // GaugeValue or CounterValue
	labels []string
	// samples yields the family's series, in a deterministic order, until
	// yield returns false.
	samples func(v *view, yield func(sample) bool)

	desc *prometheus.Desc
	text familyText
}

var (
	deviceLabel = []string{"device"}
	familyLabel = []string{"family"}
	gauge       = prometheus.GaugeValue
	counter     = prometheus.CounterValue
)

// families, sorted by name at init: the order WriteText writes them in.
var families = initFamilies(append(trafficFamilies(), []*family{
	{name: "link_up", typ: gauge, labels: deviceLabel, samples: perLink(func(l *linkView) float64 { return metric.Bool(l.Up) }),
		help: "Whether the link can carry traffic: operstate up, or unknown with admin up and carrier (operstates.rst)."},
	{name: "link_admin_up", typ: gauge, labels: deviceLabel, samples: perLink(func(l *linkView) float64 { return metric.Bool(l.AdminUp) }),
		help: "Whether the link is administratively up (IFF_UP)."},
	{name: "link_carrier", typ: gauge, labels: deviceLabel, samples: perLink(func(l *linkView) float64 { return metric.Bool(l.Carrier) }),
		help: "Whether the link has carrier (IFLA_CARRIER)."},
	{name: "link_oper_state", typ: gauge, labels: []string{"device", "state"}, samples: operStates,
		help: "RFC 2863 operational state of the link; 1 for the current state."},
	{name: "link_info", typ: gauge, labels: []string{"device", "kind", "address", "alias"}, samples: linkInfo,
		help: "Non-numeric link attributes; always 1."},
	{name: "link_mtu_bytes", typ: gauge, labels: deviceLabel, samples: perLink(func(l *linkView) float64 { return float64(l.MTU) }),
		help: "Link MTU in bytes."},
	{name: "link_carrier_changes_total", typ: counter, labels: deviceLabel, samples: perLink(func(l *linkView) float64 { return float64(l.CarrierChanges) }),
		help: "Carrier up/down changes counted by the kernel (IFLA_CARRIER_CHANGES)."},
	{name: "link_transitions_total", typ: counter, labels: []string{"device", "to"}, samples: transitions,
		help: "Up/down transitions of linkgate_link_up seen in rtnetlink events since start."},
	{name: "link_last_change_timestamp_seconds", typ: gauge, labels: deviceLabel, samples: perLink(func(l *linkView) float64 { return float64(l.LastChange.UnixNano()) / 1e9 }),
		help: "Unix time of the last change of linkgate_link_up (or when the link was first seen)."},
	{name: "link_addresses", typ: gauge, labels: []string{"device", "family", "scope"}, samples: addresses,
		help: "Number of addresses on the link by family and scope."},
	{name: "route_default", typ: gauge, labels: familyLabel, samples: perFamily(func(v *view, i int) float64 { return float64(v.defaults[i]) }),
		help: "Number of default routes in the main table by family."},
	{name: "routes", typ: gauge, labels: familyLabel, samples: perFamily(func(v *view, i int) float64 { return float64(v.routes[i]) }),
		help: "Number of routes in all tables but local, by family."},
	{name: "neighbors", typ: gauge, labels: []string{"device", "state"}, samples: neighbors,
		help: "Neighbour cache entries by device and state."},
	{name: "network_up", typ: gauge, samples: single(func(v *view) float64 { return metric.Bool(v.snap.Network.Up) }),
		help: "Whether the required network is up: all required interfaces up, or with none required any non-loopback link."},
	{name: "network_outages_total", typ: counter, samples: single(func(v *view) float64 { return float64(v.snap.Network.Outages) }),
		help: "Number of times the required network went down (including being down at start)."},
	{name: "network_outage_seconds_total", typ: counter, samples: single(func(v *view) float64 { return v.outageSeconds }),
		help: "Total seconds the required network has been down, including the current outage."},
	{name: "network_last_outage_duration_seconds", typ: gauge, samples: single(func(v *view) float64 { return v.snap.Network.LastOutage.Seconds() }),
		help: "Duration of the most recent completed outage in seconds."},
	{name: "network_required_interface_up", typ: gauge, labels: deviceLabel, samples: requiredUp,
		help: "Whether each required interface exists and is up."},
	{name: "netlink_events_total", typ: counter, labels: []string{"type"}, samples: eventCounts,
		help: "rtnetlink event messages received, by message type."},
	{name: "netlink_resyncs_total", typ: counter, labels: []string{"reason"}, samples: byLabel(resyncReasons, func(v *view) []uint64 { return v.resyncs }),
		help: "Full or partial re-dumps of kernel state, by reason: overflow, drops (lost without ENOBUFS), reconnect, flush (routes and neighbours only), divergence (anti-entropy repair)."},
	{name: "netlink_dump_failures_total", typ: counter, labels: []string{"reason"}, samples: byLabel(retryReasons, func(v *view) []uint64 { return v.dumpFailures }),
		help: "Dump attempts that failed: interrupted (NLM_F_DUMP_INTR, retried) or error."},
	{name: "netlink_socket_drops_total", typ: counter, samples: single(func(v *view) float64 { return float64(v.dropped) }),
		help: "rtnetlink events the kernel dropped on the event socket (SK_MEMINFO_DROPS), each followed by a resync."},
	{name: "netlink_state_verified", typ: gauge, samples: single(func(v *view) float64 { return metric.Bool(v.snap.Verified) }),
		help: "1 while the snapshot is known to equal the kernel's state; 0 from a possible loss of events until the resync completes (network checks fail meanwhile)."},
	{name: "netlink_verifications_total", typ: counter, labels: []string{"result"}, samples: byLabel(verifyResults, func(v *view) []uint64 { return v.verifications }),
		help: "Anti-entropy checks (a full dump compared with the snapshot), by result: ok, diverged (repaired), busy (changes in flight, retried)."},
	{name: "netlink_divergences_total", typ: counter, labels: []string{"object"}, samples: byLabel(divergenceObjects, func(v *view) []uint64 { return v.divergences }),
		help: "Objects the anti-entropy check found different from the kernel (and repaired), by kind of object."},
	{name: "netlink_decode_errors_total", typ: counter, samples: single(func(v *view) float64 { return float64(v.decodeErrors) }),
		help: "rtnetlink messages that failed to decode and were skipped."},
	{name: "netlink_mode", typ: gauge, labels: []string{"mode"}, samples: mode,
		help: "How kernel state is followed: events (multicast) or polling (fallback); 1 for the current mode."},
	{name: "netlink_snapshot_version", typ: gauge, samples: single(func(v *view) float64 { return float64(v.snap.Version) }),
		help: "Version of the current kernel state snapshot; increases on every change."},
}...))

// trafficFamilies are the links' traffic counters (stats64), one family
// per counter.
func trafficFamilies() []*family {
	counters := []struct {
		name, help string
		value      func(*LinkStats) uint64
	}{
		{"link_receive_bytes_total", "Bytes received (stats64).", func(s *LinkStats) uint64 { return s.RxBytes }},
		{"link_receive_packets_total", "Packets received (stats64).", func(s *LinkStats) uint64 { return s.RxPackets }},
		{"link_receive_errors_total", "Receive errors (stats64).", func(s *LinkStats) uint64 { return s.RxErrors }},
		{"link_receive_dropped_total", "Received packets dropped (stats64).", func(s *LinkStats) uint64 { return s.RxDropped }},
		{"link_transmit_bytes_total", "Bytes transmitted (stats64).", func(s *LinkStats) uint64 { return s.TxBytes }},
		{"link_transmit_packets_total", "Packets transmitted (stats64).", func(s *LinkStats) uint64 { return s.TxPackets }},
		{"link_transmit_errors_total", "Transmit errors (stats64).", func(s *LinkStats) uint64 { return s.TxErrors }},
		{"link_transmit_dropped_total", "Transmitted packets dropped (stats64).", func(s *LinkStats) uint64 { return s.TxDropped }},
	}
	fs := make([]*family, len(counters))
	for i, c := range counters {
		fs[i] = &family{name: c.name, help: c.help, typ: counter, labels: deviceLabel,
			samples: perLink(func(l *linkView) float64 { return float64(c.value(&l.traffic)) })}
	}
	return fs
}

func initFamilies(fs []*family) []*family {
	for _, f := range fs {
		if len(f.labels) > maxLabels {
			panic("collector: " + f.name + " has more than maxLabels labels")
		}
		f.name = metric.Name("", f.name)
		f.desc = prometheus.NewDesc(f.name, f.help, f.labels, nil)
		f.text = newFamilyText(f)
	}
	slices.SortFunc(fs, func(a, b *family) int { return strings.Compare(a.name, b.name) })
	return fs
}

func perLink(value func(l *linkView) float64) func(*view, func(sample) bool) {
	return func(v *view, yield func(sample) bool) {
		for i := range v.links {
			l := &v.links[i]
			if !yield(sample{labels: [maxLabels]string{l.device}, value: value(l)}) {
				return
			}
		}
	}
}

func single(value func(v *view) float64) func(*view, func(sample) bool) {
	return func(v *view, yield func(sample) bool) { yield(sample{value: value(v)}) }
}

// routeFamilies are the families route counts are exported for, in the
// order of view.routes and view.defaults.
var routeFamilies = [2]Family{FamilyIPv4, FamilyIPv6}

func perFamily(value func(v *view, i int) float64) func(*view, func(sample) bool) {
	return func(v *view, yield func(sample) bool) {
		for i, f := range routeFamilies {
			if !yield(sample{labels: [maxLabels]string{f.String()}, value: value(v, i)}) {
				return
			}
		}
	}
}

func operStates(v *view, yield func(sample) bool) {
	for i := range v.links {
		l := &v.links[i]
		for _, o := range OperStates {
			if !yield(sample{labels: [maxLabels]string{l.device, o.String()}, value: metric.Bool(o == l.OperState)}) {
				return
			}
		}
	}
}

func linkInfo(v *view, yield func(sample) bool) {
	for i := range v.links {
		l := &v.links[i]
		if !yield(sample{labels: [maxLabels]string{l.device, l.kind, l.address, l.alias}, value: 1}) {
			return
		}
	}
}

func transitions(v *view, yield func(sample) bool) {
	for i := range v.links {
		l := &v.links[i]
		if !yield(sample{labels: [maxLabels]string{l.device, "down"}, value: float64(l.DownTransitions)}) ||
			!yield(sample{labels: [maxLabels]string{l.device, "up"}, value: float64(l.UpTransitions)}) {
			return
		}
	}
}

func addresses(v *view, yield func(sample) bool) {
	for _, a := range v.addrs {
		if !yield(sample{labels: [maxLabels]string{a.device, a.family.String(), a.scope.String()}, value: float64(a.n)}) {
			return
		}
	}
}

func neighbors(v *view, yield func(sample) bool) {
	for _, n := range v.neighs {
		if !yield(sample{labels: [maxLabels]string{n.device, n.state}, value: float64(n.n)}) {
			return
		}
	}
}

func requiredUp(v *view, yield func(sample) bool) {
	for _, r := range v.required {
		if !yield(sample{labels: [maxLabels]string{r.device}, value: metric.Bool(r.up)}) {
			return
		}
	}
}

func eventCounts(v *view, yield func(sample) bool) {
	for i, t := range eventTypes {
		if !yield(sample{labels: [maxLabels]string{t}, value: float64(v.events[i])}) {
			return
		}
	}
}

// byLabel yields one series per name, valued from values(v) in the same order.
func byLabel(names []string, values func(v *view) []uint64) func(*view, func(sample) bool) {
	return func(v *view, yield func(sample) bool) {
		vals := values(v)
		for i, n := range names {
			if !yield(sample{labels: [maxLabels]string{n}, value: float64(vals[i])}) {
				return
			}
		}
	}
}

func mode(v *view, yield func(sample) bool) {
	_ = yield(sample{labels: [maxLabels]string{"events"}, value: metric.Bool(!v.polling)}) &&
		yield(sample{labels: [maxLabels]string{"polling"}, value: metric.Bool(v.polling)})
}

// view is what one scrape reads, taken once so that every family of the
// scrape agrees (and so that tests can render one reading twice).
type view struct {
	snap *Snapshot
	// links are the exported links (DeviceFilter applied), in snapshot
	// order (by index).
	links            []linkView
	addrs            []addrCount  // by link, then family and scope
	neighs           []neighCount // by link, then state
	routes, defaults [len(routeFamilies)]int
	outageSeconds    float64
	required         []requiredView
	events           []uint64 // as eventTypes
	resyncs          []uint64 // as resyncReasons
	dumpFailures     []uint64 // as retryReasons
	verifications    []uint64 // as verifyResults
	divergences      []uint64 // as divergenceObjects
	dropped          uint64
	decodeErrors     uint64
	polling          bool
}

type linkView struct {
	*Link
	// Label values, valid UTF-8 (the kernel allows any bytes in names
	// and aliases; the exposition formats do not).
	device, kind, address, alias string
	// traffic is the freshest counters: the last refresh, else the
	// snapshot's.
	traffic LinkStats
}

type addrCount struct {
	device string
	family Family
	scope  Scope
	n      int
}

type neighCount struct {
	device string
	state  string
	n      int
}

type requiredView struct {
	device string
	up     bool
}

var viewPool = sync.Pool{New: func() any { return new(view) }}

// readView takes one reading of the collector for a scrape. Release it
// when done.
func (c *Collector) readView() *view {
	v := viewPool.Get().(*view)
	s := c.snap.Load()
	stats := c.stats()
	v.snap = s
	include := c.opts.DeviceFilter
	for i := range s.Links {
		l := &s.Links[i]
		if include != nil && !include(l.Name) {
			continue
		}
		lv := linkView{Link: l, device: labelValue(l.Name), kind: labelValue(l.Kind),
			address: labelValue(l.Address), alias: labelValue(l.Alias), traffic: l.Stats}
		if st, ok := stats[l.Index]; ok {
			lv.traffic = st
		}
		v.links = append(v.links, lv)
	}
	v.countAddresses(s.Addresses)
	v.countNeighbors(s.Neighbors)
	for _, r := range s.Routes {
		i := slices.Index(routeFamilies[:], r.Family)
		if i < 0 {
			continue
		}
		v.routes[i]++
		if r.Table == TableMain && r.Default() {
			v.defaults[i]++
		}
	}

	net := s.Network
	v.outageSeconds = net.OutageSecondsAt(c.now())
	// Required lists are a few egress interfaces: linear scans are fine.
	for i, r := range net.Required {
		if slices.Contains(net.Required[:i], r) {
			continue // listed twice: one series
		}
		v.required = append(v.required, requiredView{device: labelValue(r), up: !slices.Contains(net.Down, r)})
	}
	for _, t := range eventTypes {
		v.events = append(v.events, c.events[t].Load())
	}
	v.resyncs = loadCounters(v.resyncs, resyncReasons, c.resyncs)
	v.dumpFailures = loadCounters(v.dumpFailures, retryReasons, c.dumpRetries)
	v.verifications = loadCounters(v.verifications, verifyResults, c.verifications)
	v.divergences = loadCounters(v.divergences, divergenceObjects, c.divergences)
	v.dropped = c.dropped.Load()
	v.decodeErrors = c.decodeErrors.Load()
	v.polling = c.polling.Load()
	return v
}

func loadCounters(dst []uint64, names []string, m map[string]*atomic.Uint64) []uint64 {
	for _, n := range names {
		dst = append(dst, m[n].Load())
	}
	return dst
}

// exported returns the exported link with the given index.
func (v *view) exported(index int) (*linkView, bool) {
	i, ok := slices.BinarySearchFunc(v.links, index, func(l linkView, index int) int { return cmp.Compare(l.Index, index) })
	if !ok {
		return nil, false
	}
	return &v.links[i], true
}

// countAddresses counts addresses by link, family and scope.
func (v *view) countAddresses(addrs []Address) {
	countByLink(v, addrs,
		func(a Address) int { return a.LinkIndex },
		func(a Address) uint16 { return uint16(a.Family)<<8 | uint16(a.Scope) },
		func(l *linkView, k uint16, n int) {
			v.addrs = append(v.addrs, addrCount{device: l.device, family: Family(k >> 8), scope: Scope(k), n: n})
		})
}

// countNeighbors counts neighbour entries by link and state.
func (v *view) countNeighbors(neighs []Neighbor) {
	countByLink(v, neighs,
		func(n Neighbor) int { return n.LinkIndex },
		func(n Neighbor) NeighState { return n.State },
		func(l *linkView, k NeighState, n int) {
			v.neighs = append(v.neighs, neighCount{device: l.device, state: neighStateLabel(k), n: n})
		})
}

// countByLink calls emit once per exported link and key with the number of
// items that have it, keys in ascending order. The snapshot keeps items
// grouped by link, so each run is counted by sorting its few keys; no map.
func countByLink[T any, K cmp.Ordered](v *view, items []T, link func(T) int, key func(T) K, emit func(*linkView, K, int)) {
	var keys []K
	for i := 0; i < len(items); {
		ix := link(items[i])
		end := i + 1
		for end < len(items) && link(items[end]) == ix {
			end++
		}
		if l, ok := v.exported(ix); ok {
			keys = keys[:0]
			for _, it := range items[i:end] {
				keys = append(keys, key(it))
			}
			slices.Sort(keys)
			for j := 0; j < len(keys); {
				k := j + 1
				for k < len(keys) && keys[k] == keys[j] {
					k++
				}
				emit(l, keys[j], k-j)
				j = k
			}
		}
		i = end
	}
}

func neighStateLabel(s NeighState) string {
	if l := s.String(); l != "other" {
		return l
	}
	return "0x" + strconv.FormatUint(uint64(s), 16)
}

// labelValue returns s as valid UTF-8, which both exposition formats and
// client_golang require of label values (MustNewConstMetric panics).
func labelValue(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// release returns v to the pool, dropping its references to the snapshot.
func (v *view) release() {
	clear(v.links)
	clear(v.addrs)
	clear(v.neighs)
	clear(v.required)
	*v = view{
		links:         v.links[:0],
		addrs:         v.addrs[:0],
		neighs:        v.neighs[:0],
		required:      v.required[:0],
		events:        v.events[:0],
		resyncs:       v.resyncs[:0],
		dumpFailures:  v.dumpFailures[:0],
		verifications: v.verifications[:0],
		divergences:   v.divergences[:0],
	}
	viewPool.Put(v)
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range families {
		ch <- f.desc
	}
}

// Collect implements prometheus.Collector from the snapshot; only traffic
// counters may come from a (rate-limited) kernel dump. WriteText writes
// the same families for a fraction of the cost.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	v := c.readView()
	defer v.release()
	collectView(v, ch)
}

func collectView(v *view, ch chan<- prometheus.Metric) {
	for _, f := range families {
		f.samples(v, func(s sample) bool {
			ch <- prometheus.MustNewConstMetric(f.desc, f.typ, s.value, s.labels[:len(f.labels)]...)
			return true
		})
	}
}
