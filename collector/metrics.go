package collector

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

const ns = "linkgate"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(ns, "", name), help, labels, nil)
}

var (
	descLinkUp          = desc("link_up", "Whether the link can carry traffic: operstate up, or unknown with admin up and carrier (operstates.rst).", "device")
	descLinkAdminUp     = desc("link_admin_up", "Whether the link is administratively up (IFF_UP).", "device")
	descLinkCarrier     = desc("link_carrier", "Whether the link has carrier (IFLA_CARRIER).", "device")
	descLinkOperState   = desc("link_oper_state", "RFC 2863 operational state of the link; 1 for the current state.", "device", "state")
	descLinkInfo        = desc("link_info", "Non-numeric link attributes; always 1.", "device", "kind", "address", "alias")
	descLinkMTU         = desc("link_mtu_bytes", "Link MTU in bytes.", "device")
	descCarrierChanges  = desc("link_carrier_changes_total", "Carrier up/down changes counted by the kernel (IFLA_CARRIER_CHANGES).", "device")
	descTransitions     = desc("link_transitions_total", "Up/down transitions of linkgate_link_up seen in rtnetlink events since start.", "device", "to")
	descLastChange      = desc("link_last_change_timestamp_seconds", "Unix time of the last change of linkgate_link_up (or when the link was first seen).", "device")
	descRxBytes         = desc("link_receive_bytes_total", "Bytes received (stats64).", "device")
	descRxPackets       = desc("link_receive_packets_total", "Packets received (stats64).", "device")
	descRxErrors        = desc("link_receive_errors_total", "Receive errors (stats64).", "device")
	descRxDropped       = desc("link_receive_dropped_total", "Received packets dropped (stats64).", "device")
	descTxBytes         = desc("link_transmit_bytes_total", "Bytes transmitted (stats64).", "device")
	descTxPackets       = desc("link_transmit_packets_total", "Packets transmitted (stats64).", "device")
	descTxErrors        = desc("link_transmit_errors_total", "Transmit errors (stats64).", "device")
	descTxDropped       = desc("link_transmit_dropped_total", "Transmitted packets dropped (stats64).", "device")
	descAddresses       = desc("link_addresses", "Number of addresses on the link by family and scope.", "device", "family", "scope")
	descRouteDefault    = desc("route_default", "Number of default routes in the main table by family.", "family")
	descRoutes          = desc("routes", "Number of routes in all tables but local, by family.", "family")
	descNeighbors       = desc("neighbors", "Neighbour cache entries by device and state.", "device", "state")
	descNetworkUp       = desc("network_up", "Whether the required network is up: all required interfaces up, or with none required any non-loopback link.")
	descOutages         = desc("network_outages_total", "Number of times the required network went down (including being down at start).")
	descOutageSeconds   = desc("network_outage_seconds_total", "Total seconds the required network has been down, including the current outage.")
	descLastOutage      = desc("network_last_outage_duration_seconds", "Duration of the most recent completed outage in seconds.")
	descRequiredUp      = desc("network_required_interface_up", "Whether each required interface exists and is up.", "device")
	descEvents          = desc("netlink_events_total", "rtnetlink event messages received, by message type.", "type")
	descResyncs         = desc("netlink_resyncs_total", "Full or partial re-dumps of kernel state, by reason.", "reason")
	descDecodeErrors    = desc("netlink_decode_errors_total", "rtnetlink messages that failed to decode and were skipped.")
	descMode            = desc("netlink_mode", "How kernel state is followed: events (multicast) or polling (fallback); 1 for the current mode.", "mode")
	descSnapshotVersion = desc("netlink_snapshot_version", "Version of the current kernel state snapshot; increases on every change.")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descLinkUp, descLinkAdminUp, descLinkCarrier, descLinkOperState, descLinkInfo, descLinkMTU,
		descCarrierChanges, descTransitions, descLastChange, descRxBytes, descRxPackets, descRxErrors,
		descRxDropped, descTxBytes, descTxPackets, descTxErrors, descTxDropped, descAddresses,
		descRouteDefault, descRoutes, descNeighbors, descNetworkUp, descOutages, descOutageSeconds,
		descLastOutage, descRequiredUp, descEvents, descResyncs, descDecodeErrors, descMode, descSnapshotVersion,
	} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

type addrCount struct {
	index  int
	family Family
	scope  Scope
}

type neighCount struct {
	index int
	state NeighState
}

// Collect implements prometheus.Collector from the snapshot; only traffic
// counters may come from a (rate-limited) kernel dump.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snap.Load()
	stats := c.stats()
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	include := c.opts.DeviceFilter
	names := make(map[int]string, len(s.Links))
	for _, l := range s.Links {
		if include != nil && !include(l.Name) {
			continue
		}
		names[l.Index] = l.Name
		dev := l.Name
		gauge(descLinkUp, b2f(l.Up), dev)
		gauge(descLinkAdminUp, b2f(l.AdminUp), dev)
		gauge(descLinkCarrier, b2f(l.Carrier), dev)
		for _, o := range OperStates {
			gauge(descLinkOperState, b2f(o == l.OperState), dev, o.String())
		}
		gauge(descLinkInfo, 1, dev, l.Kind, l.Address, l.Alias)
		gauge(descLinkMTU, float64(l.MTU), dev)
		counter(descCarrierChanges, float64(l.CarrierChanges), dev)
		counter(descTransitions, float64(l.UpTransitions), dev, "up")
		counter(descTransitions, float64(l.DownTransitions), dev, "down")
		gauge(descLastChange, float64(l.LastChange.UnixNano())/1e9, dev)
		st := l.Stats
		if fresh, ok := stats[l.Index]; ok {
			st = fresh
		}
		counter(descRxBytes, float64(st.RxBytes), dev)
		counter(descRxPackets, float64(st.RxPackets), dev)
		counter(descRxErrors, float64(st.RxErrors), dev)
		counter(descRxDropped, float64(st.RxDropped), dev)
		counter(descTxBytes, float64(st.TxBytes), dev)
		counter(descTxPackets, float64(st.TxPackets), dev)
		counter(descTxErrors, float64(st.TxErrors), dev)
		counter(descTxDropped, float64(st.TxDropped), dev)
	}

	addrs := make(map[addrCount]int)
	for _, a := range s.Addresses {
		if _, ok := names[a.LinkIndex]; ok {
			addrs[addrCount{a.LinkIndex, a.Family, a.Scope}]++
		}
	}
	for k, n := range addrs {
		gauge(descAddresses, float64(n), names[k.index], k.family.String(), k.scope.String())
	}

	defaults := map[Family]int{FamilyIPv4: 0, FamilyIPv6: 0}
	routes := map[Family]int{FamilyIPv4: 0, FamilyIPv6: 0}
	for _, r := range s.Routes {
		routes[r.Family]++
		if r.Table == TableMain && r.Default() {
			defaults[r.Family]++
		}
	}
	for _, f := range []Family{FamilyIPv4, FamilyIPv6} {
		gauge(descRouteDefault, float64(defaults[f]), f.String())
		gauge(descRoutes, float64(routes[f]), f.String())
	}

	neighs := make(map[neighCount]int)
	for _, n := range s.Neighbors {
		if _, ok := names[n.LinkIndex]; ok {
			neighs[neighCount{n.LinkIndex, n.State}]++
		}
	}
	for k, n := range neighs {
		state := k.state.String()
		if state == "other" {
			state = "0x" + strconv.FormatUint(uint64(k.state), 16)
		}
		gauge(descNeighbors, float64(n), names[k.index], state)
	}

	net := s.Network
	gauge(descNetworkUp, b2f(net.Up))
	counter(descOutages, float64(net.Outages))
	counter(descOutageSeconds, net.OutageSecondsAt(c.now()))
	gauge(descLastOutage, net.LastOutage.Seconds())
	down := make(map[string]bool, len(net.Down))
	for _, d := range net.Down {
		down[d] = true
	}
	for _, r := range net.Required {
		gauge(descRequiredUp, b2f(!down[r]), r)
	}

	for _, t := range eventTypes {
		counter(descEvents, float64(c.events[t].Load()), t)
	}
	for _, r := range resyncReasons {
		counter(descResyncs, float64(c.resyncs[r].Load()), r)
	}
	counter(descDecodeErrors, float64(c.decodeErrors.Load()))
	polling := c.polling.Load()
	gauge(descMode, b2f(!polling), "events")
	gauge(descMode, b2f(polling), "polling")
	gauge(descSnapshotVersion, float64(s.Version))
}
