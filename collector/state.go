package collector

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Kernel constants not exported by x/sys/unix under these names.
const (
	rtmFCloned  = 0x200 // RTM_F_CLONED: a route cache entry, not a route
	tableLocal  = 255   // RT_TABLE_LOCAL: addresses of this host, not routing state
	afBridge    = 7     // AF_BRIDGE: bridge port / FDB messages share RTMGRP_LINK/NEIGH
	iffLowerUp  = 0x10000
	iffLoopback = unix.IFF_LOOPBACK
	iffAdminUp  = unix.IFF_UP
)

// errIgnored marks a message that decoded fine but is not state we keep
// (bridge FDB entries, local-table routes, route cache clones).
var errIgnored = errors.New("ignored message")

type addrKey struct {
	index  int
	prefix netip.Prefix
}

type routeKey struct {
	family   Family
	table    uint32
	dst      netip.Prefix
	tos      uint8
	priority uint32
	gateway  netip.Addr
	index    int
}

type neighKey struct {
	index int
	ip    netip.Addr
}

// state is the mutable kernel state owned by the event loop. Snapshots are
// built from it and never share its maps.
type state struct {
	links  map[int]Link
	addrs  map[addrKey]Address
	routes map[routeKey]Route
	neighs map[neighKey]Neighbor
}

func newState() *state {
	return &state{
		links:  make(map[int]Link),
		addrs:  make(map[addrKey]Address),
		routes: make(map[routeKey]Route),
		neighs: make(map[neighKey]Neighbor),
	}
}

// eventType names a message type for linkgate_netlink_events_total.
func eventType(t netlink.HeaderType) string {
	switch t {
	case unix.RTM_NEWLINK:
		return "newlink"
	case unix.RTM_DELLINK:
		return "dellink"
	case unix.RTM_NEWADDR:
		return "newaddr"
	case unix.RTM_DELADDR:
		return "deladdr"
	case unix.RTM_NEWROUTE:
		return "newroute"
	case unix.RTM_DELROUTE:
		return "delroute"
	case unix.RTM_NEWNEIGH:
		return "newneigh"
	case unix.RTM_DELNEIGH:
		return "delneigh"
	}
	return "other"
}

// change says what applying a message did, so the loop knows whether to
// publish a snapshot and whether kernel side effects need a re-dump.
type change struct {
	changed bool
	// flush: the kernel may have removed routes or neighbours without
	// notifying (IPv4 flushes routes silently when a link goes admin-down
	// or loses its last address in a subnet).
	flush bool
}

// apply decodes one rtnetlink message and applies it. Decode errors are
// returned wrapped; errIgnored for messages outside the kept state.
func (s *state) apply(m netlink.Message, now time.Time) (change, error) {
	switch m.Header.Type {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		var lm rtnetlink.LinkMessage
		if err := lm.UnmarshalBinary(m.Data); err != nil {
			return change{}, fmt.Errorf("decode link message: %w", err)
		}
		if lm.Family == afBridge {
			return change{}, errIgnored
		}
		if m.Header.Type == unix.RTM_DELLINK {
			return s.deleteLink(int(lm.Index)), nil
		}
		return s.setLink(decodeLink(&lm), now), nil
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		var am rtnetlink.AddressMessage
		if err := am.UnmarshalBinary(m.Data); err != nil {
			return change{}, fmt.Errorf("decode address message: %w", err)
		}
		a, ok := decodeAddress(&am)
		if !ok {
			return change{}, errIgnored
		}
		k := addrKey{a.LinkIndex, a.Prefix}
		if m.Header.Type == unix.RTM_DELADDR {
			_, had := s.addrs[k]
			delete(s.addrs, k)
			return change{changed: had, flush: true}, nil
		}
		old, had := s.addrs[k]
		s.addrs[k] = a
		return change{changed: !had || old != a}, nil
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		var rm rtnetlink.RouteMessage
		if err := rm.UnmarshalBinary(m.Data); err != nil {
			return change{}, fmt.Errorf("decode route message: %w", err)
		}
		r, ok := decodeRoute(&rm)
		if !ok {
			return change{}, errIgnored
		}
		k := r.key()
		if m.Header.Type == unix.RTM_DELROUTE {
			_, had := s.routes[k]
			delete(s.routes, k)
			return change{changed: had}, nil
		}
		old, had := s.routes[k]
		s.routes[k] = r
		return change{changed: !had || old != r}, nil
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		var nm rtnetlink.NeighMessage
		if err := nm.UnmarshalBinary(m.Data); err != nil {
			return change{}, fmt.Errorf("decode neighbour message: %w", err)
		}
		n, ok := decodeNeighbor(&nm)
		if !ok {
			return change{}, errIgnored
		}
		k := neighKey{n.LinkIndex, n.IP}
		if m.Header.Type == unix.RTM_DELNEIGH {
			_, had := s.neighs[k]
			delete(s.neighs, k)
			return change{changed: had}, nil
		}
		old, had := s.neighs[k]
		s.neighs[k] = n
		return change{changed: !had || old != n}, nil
	}
	return change{}, errIgnored
}

// setLink stores l, carrying over what the kernel does not send (the up
// transition history) and reporting whether anything but counters changed.
func (s *state) setLink(l Link, now time.Time) change {
	old, had := s.links[l.Index]
	if had {
		l.UpTransitions, l.DownTransitions = old.UpTransitions, old.DownTransitions
		l.LastChange = old.LastChange
		if old.Up != l.Up {
			l.LastChange = now
			if l.Up {
				l.UpTransitions++
			} else {
				l.DownTransitions++
			}
		}
	} else {
		l.LastChange = now
	}
	s.links[l.Index] = l
	if !had {
		return change{changed: true}
	}
	a, b := old, l
	a.Stats, b.Stats = LinkStats{}, LinkStats{}
	return change{changed: a != b, flush: old.AdminUp && !l.AdminUp}
}

// deleteLink removes a link and everything the kernel removes with it.
func (s *state) deleteLink(index int) change {
	if _, ok := s.links[index]; !ok {
		return change{}
	}
	delete(s.links, index)
	for k := range s.addrs {
		if k.index == index {
			delete(s.addrs, k)
		}
	}
	for k := range s.neighs {
		if k.index == index {
			delete(s.neighs, k)
		}
	}
	for k := range s.routes {
		if k.index == index {
			delete(s.routes, k)
		}
	}
	return change{changed: true, flush: true}
}

// replaceRoutes swaps in a freshly dumped route table.
func (s *state) replaceRoutes(routes map[routeKey]Route) bool {
	changed := len(routes) != len(s.routes)
	if !changed {
		for k, r := range routes {
			if o, ok := s.routes[k]; !ok || o != r {
				changed = true
				break
			}
		}
	}
	s.routes = routes
	return changed
}

// replaceNeighbors swaps in a freshly dumped neighbour table.
func (s *state) replaceNeighbors(neighs map[neighKey]Neighbor) bool {
	changed := len(neighs) != len(s.neighs)
	if !changed {
		for k, n := range neighs {
			if o, ok := s.neighs[k]; !ok || o != n {
				changed = true
				break
			}
		}
	}
	s.neighs = neighs
	return changed
}

func (r Route) key() routeKey {
	return routeKey{r.Family, r.Table, r.Dst, r.Tos, r.Priority, r.Gateway, r.LinkIndex}
}

func decodeLink(m *rtnetlink.LinkMessage) Link {
	l := Link{
		Index:    int(m.Index),
		AdminUp:  m.Flags&iffAdminUp != 0,
		Loopback: m.Flags&iffLoopback != 0,
		Carrier:  m.Flags&iffLowerUp != 0,
	}
	if a := m.Attributes; a != nil {
		l.Name = a.Name
		l.MTU = a.MTU
		l.OperState = OperState(a.OperationalState)
		if len(a.Address) > 0 {
			l.Address = a.Address.String()
		}
		if a.Alias != nil {
			l.Alias = *a.Alias
		}
		if a.Carrier != nil {
			l.Carrier = *a.Carrier != 0
		}
		if a.CarrierChanges != nil {
			l.CarrierChanges = *a.CarrierChanges
		}
		if a.Info != nil {
			l.Kind = a.Info.Kind
		}
		if st := a.Stats64; st != nil {
			l.Stats = LinkStats{
				RxBytes: st.RXBytes, RxPackets: st.RXPackets, RxErrors: st.RXErrors, RxDropped: st.RXDropped,
				TxBytes: st.TXBytes, TxPackets: st.TXPackets, TxErrors: st.TXErrors, TxDropped: st.TXDropped,
			}
		} else if st := a.Stats; st != nil {
			l.Stats = LinkStats{
				RxBytes: uint64(st.RXBytes), RxPackets: uint64(st.RXPackets), RxErrors: uint64(st.RXErrors), RxDropped: uint64(st.RXDropped),
				TxBytes: uint64(st.TXBytes), TxPackets: uint64(st.TXPackets), TxErrors: uint64(st.TXErrors), TxDropped: uint64(st.TXDropped),
			}
		}
	}
	l.Up = IsUp(l.OperState, l.AdminUp, l.Carrier)
	return l
}

func ipAddr(ip net.IP) (netip.Addr, bool) {
	if ip == nil {
		return netip.Addr{}, false
	}
	if v4 := ip.To4(); v4 != nil && len(ip) == net.IPv4len {
		return netip.AddrFrom4([4]byte(v4)), true
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

func decodeAddress(m *rtnetlink.AddressMessage) (Address, bool) {
	fam := Family(m.Family)
	if (fam != FamilyIPv4 && fam != FamilyIPv6) || m.Attributes == nil {
		return Address{}, false
	}
	// IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
	// point-to-point links. Prefer the local one when present.
	ip := m.Attributes.Local
	if ip == nil {
		ip = m.Attributes.Address
	}
	a, ok := ipAddr(ip)
	if !ok {
		return Address{}, false
	}
	if fam == FamilyIPv6 {
		a = netip.AddrFrom16(a.As16())
	}
	p, err := a.Prefix(int(m.PrefixLength))
	if err != nil {
		return Address{}, false
	}
	return Address{LinkIndex: int(m.Index), Family: fam, Prefix: netip.PrefixFrom(a, p.Bits()), Scope: Scope(m.Scope)}, true
}

func decodeRoute(m *rtnetlink.RouteMessage) (Route, bool) {
	fam := Family(m.Family)
	if fam != FamilyIPv4 && fam != FamilyIPv6 {
		return Route{}, false
	}
	table := uint32(m.Table)
	if m.Attributes.Table != 0 {
		table = m.Attributes.Table
	}
	if table == tableLocal || m.Flags&rtmFCloned != 0 || m.Type == unix.RTN_MULTICAST {
		return Route{}, false
	}
	var dst netip.Addr
	if d, ok := ipAddr(m.Attributes.Dst); ok {
		dst = d
	} else if fam == FamilyIPv4 {
		dst = netip.IPv4Unspecified()
	} else {
		dst = netip.IPv6Unspecified()
	}
	if fam == FamilyIPv6 {
		dst = netip.AddrFrom16(dst.As16())
	}
	r := Route{
		Family:    fam,
		Table:     table,
		Dst:       netip.PrefixFrom(dst, int(m.DstLength)).Masked(),
		LinkIndex: int(m.Attributes.OutIface),
		Priority:  m.Attributes.Priority,
		Tos:       m.Tos,
		Protocol:  m.Protocol,
		Type:      m.Type,
	}
	if g, ok := ipAddr(m.Attributes.Gateway); ok {
		r.Gateway = g
	} else if len(m.Attributes.Multipath) > 0 {
		// Multipath: keep the first hop as the representative gateway.
		nh := m.Attributes.Multipath[0]
		if g, ok := ipAddr(nh.Gateway); ok {
			r.Gateway = g
		}
		if r.LinkIndex == 0 {
			r.LinkIndex = int(nh.Hop.IfIndex)
		}
	}
	return r, true
}

func decodeNeighbor(m *rtnetlink.NeighMessage) (Neighbor, bool) {
	fam := Family(m.Family)
	if (fam != FamilyIPv4 && fam != FamilyIPv6) || m.Attributes == nil {
		return Neighbor{}, false
	}
	ip, ok := ipAddr(m.Attributes.Address)
	if !ok {
		return Neighbor{}, false
	}
	if ip.IsMulticast() {
		// The kernel creates multicast entries (NOARP) silently, without
		// a notification; they say nothing about reachability.
		return Neighbor{}, false
	}
	n := Neighbor{LinkIndex: int(m.Index), Family: fam, IP: ip, State: NeighState(m.State)}
	if len(m.Attributes.LLAddress) > 0 {
		n.MAC = m.Attributes.LLAddress.String()
	}
	return n, true
}

// snapshot builds an immutable, sorted view of s.
func (s *state) snapshot() *Snapshot {
	snap := &Snapshot{
		Links:     make([]Link, 0, len(s.links)),
		Addresses: make([]Address, 0, len(s.addrs)),
		Routes:    make([]Route, 0, len(s.routes)),
		Neighbors: make([]Neighbor, 0, len(s.neighs)),
		changed:   make(chan struct{}),
	}
	for _, l := range s.links {
		snap.Links = append(snap.Links, l)
	}
	sort.Slice(snap.Links, func(i, j int) bool { return snap.Links[i].Index < snap.Links[j].Index })
	for _, a := range s.addrs {
		snap.Addresses = append(snap.Addresses, a)
	}
	sort.Slice(snap.Addresses, func(i, j int) bool {
		x, y := snap.Addresses[i], snap.Addresses[j]
		if x.LinkIndex != y.LinkIndex {
			return x.LinkIndex < y.LinkIndex
		}
		return x.Prefix.Addr().Less(y.Prefix.Addr())
	})
	for _, r := range s.routes {
		snap.Routes = append(snap.Routes, r)
	}
	sort.Slice(snap.Routes, func(i, j int) bool { return routeLess(snap.Routes[i], snap.Routes[j]) })
	for _, n := range s.neighs {
		snap.Neighbors = append(snap.Neighbors, n)
	}
	sort.Slice(snap.Neighbors, func(i, j int) bool {
		x, y := snap.Neighbors[i], snap.Neighbors[j]
		if x.LinkIndex != y.LinkIndex {
			return x.LinkIndex < y.LinkIndex
		}
		return x.IP.Less(y.IP)
	})
	return snap
}

func routeLess(x, y Route) bool {
	if x.Family != y.Family {
		return x.Family < y.Family
	}
	if x.Table != y.Table {
		return x.Table < y.Table
	}
	if c := x.Dst.Addr().Compare(y.Dst.Addr()); c != 0 {
		return c < 0
	}
	if x.Dst.Bits() != y.Dst.Bits() {
		return x.Dst.Bits() < y.Dst.Bits()
	}
	if x.Priority != y.Priority {
		return x.Priority < y.Priority
	}
	if c := x.Gateway.Compare(y.Gateway); c != 0 {
		return c < 0
	}
	return x.LinkIndex < y.LinkIndex
}
