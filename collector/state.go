package collector

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
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

	// The sorted tables of the last snapshot. Snapshots share them, so
	// they are never modified, only replaced: a snapshot rebuilds only
	// the tables marked stale since. Links that changed in place (same
	// index, no link added or removed) are listed in relinked instead:
	// the next snapshot copies the links and replaces those, no sort.
	sortedLinks  []Link
	sortedAddrs  []Address
	sortedRoutes []Route
	sortedNeighs []Neighbor
	stale        tables
	relinked     []int

	// Scratch space for sorting, reused from snapshot to snapshot.
	keys  []int
	order []int32
}

// tables is a set of state's tables.
type tables uint8

const (
	linkTable tables = 1 << iota
	addrTable
	routeTable
	neighTable
	allTables = linkTable | addrTable | routeTable | neighTable
)

func newState() *state {
	return &state{
		links:  make(map[int]Link),
		addrs:  make(map[addrKey]Address),
		routes: make(map[routeKey]Route),
		neighs: make(map[neighKey]Neighbor),
		stale:  allTables,
	}
}

// touch marks tables as changed since the last snapshot. Every change to
// the maps must be followed by it (or be one that leaves them equal).
func (s *state) touch(t tables) { s.stale |= t }

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
	var del bool
	switch m.Header.Type {
	case unix.RTM_DELLINK, unix.RTM_DELADDR, unix.RTM_DELROUTE, unix.RTM_DELNEIGH:
		del = true
	}
	switch m.Header.Type {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		l, err := decodeLink(m.Data)
		if err != nil {
			return change{}, err
		}
		if del {
			return s.deleteLink(l.Index), nil
		}
		return s.setLink(l, now), nil
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		a, err := decodeAddress(m.Data)
		if err != nil {
			return change{}, err
		}
		// An address that stops being announced is gone from the kept
		// state (see announced). Losing an address may flush routes.
		del = del || !announced(a)
		return change{changed: setEntry(s, addrTable, s.addrs, a.key(), a, del), flush: del}, nil
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		r, err := decodeRoute(m.Data)
		if err != nil {
			return change{}, err
		}
		// A replacement notification (NLM_F_REPLACE) supersedes the route
		// with the same identity whatever its next hop: no RTM_DELROUTE
		// comes for the old one.
		replaced := !del && m.Header.Flags&netlink.Replace != 0 && s.deleteRoutesLike(r)
		changed := setEntry(s, routeTable, s.routes, r.key(), r, del)
		s.touchIf(replaced, routeTable)
		return change{changed: changed || replaced}, nil
	case unix.RTM_NEWNEIGH, unix.RTM_DELNEIGH:
		n, err := decodeNeighbor(m.Data)
		if err != nil {
			return change{}, err
		}
		return change{changed: setEntry(s, neighTable, s.neighs, n.key(), n, del)}, nil
	}
	return change{}, errIgnored
}

// setEntry stores v under k in m, one of s's tables (t), or with del
// removes k, and reports whether that changed m (touching t if so).
func setEntry[K, V comparable](s *state, t tables, m map[K]V, k K, v V, del bool) bool {
	var changed bool
	if del {
		_, changed = m[k]
		delete(m, k)
	} else {
		old, had := m[k]
		m[k] = v
		changed = !had || old != v
	}
	s.touchIf(changed, t)
	return changed
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
	// Any difference counts, counters included: a snapshot's links carry
	// the counters as of its publication.
	switch {
	case !had:
		s.touch(linkTable)
	case old != l && s.stale&linkTable == 0:
		s.relinked = append(s.relinked, l.Index)
		if len(s.relinked) > len(s.links)/4 {
			// Patching that many is no cheaper than a rebuild, and the
			// list must not grow while nothing publishes.
			s.touch(linkTable)
			s.relinked = s.relinked[:0]
		}
	}
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
	s.touch(allTables)
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

// deleteRoutesLike removes the routes a replacement of r supersedes: the
// kernel's route identity is family, table, destination, TOS and metric.
func (s *state) deleteRoutesLike(r Route) bool {
	deleted := false
	for k := range s.routes {
		if k.family == r.Family && k.table == r.Table && k.dst == r.Dst && k.tos == r.Tos && k.priority == r.Priority {
			delete(s.routes, k)
			deleted = true
		}
	}
	return deleted
}

// replaceTable swaps in fresh, a freshly dumped table, for *m, one of
// s's tables (t), and reports whether it differs (touching t if so).
func replaceTable[K, V comparable](s *state, t tables, m *map[K]V, fresh map[K]V) bool {
	changed := !maps.Equal(*m, fresh)
	*m = fresh
	s.touchIf(changed, t)
	return changed
}

func (s *state) touchIf(changed bool, t tables) {
	if changed {
		s.touch(t)
	}
}

func (a Address) key() addrKey { return addrKey{a.LinkIndex, a.Prefix} }

func (r Route) key() routeKey {
	return routeKey{r.Family, r.Table, r.Dst, r.Tos, r.Priority, r.Gateway, r.LinkIndex}
}

func (n Neighbor) key() neighKey { return neighKey{n.LinkIndex, n.IP} }

// The decoders turn one message body into the object the state keeps,
// for events (state.apply) and dumps (decodeDump) alike. They return
// errIgnored for a message outside the kept state. Each unmarshals into a
// message of its own type, which stays on the stack.

func decodeLink(b []byte) (Link, error) {
	var m rtnetlink.LinkMessage
	if err := m.UnmarshalBinary(b); err != nil {
		return Link{}, fmt.Errorf("decode link message: %w", err)
	}
	if m.Family == unix.AF_BRIDGE {
		// Bridge port messages share RTMGRP_LINK but describe no link of
		// their own.
		return Link{}, errIgnored
	}
	l := Link{
		Index:    int(m.Index),
		AdminUp:  m.Flags&unix.IFF_UP != 0,
		Loopback: m.Flags&unix.IFF_LOOPBACK != 0,
		Carrier:  m.Flags&unix.IFF_LOWER_UP != 0,
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
	return l, nil
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

// inetFamily returns a message's family field (8 or 16 bits wide) as a
// Family, and whether it is one linkgate keeps (IPv4 or IPv6).
func inetFamily[F uint8 | uint16](f F) (Family, bool) {
	fam := Family(f)
	return fam, fam == FamilyIPv4 || fam == FamilyIPv6
}

func decodeAddress(b []byte) (Address, error) {
	var m rtnetlink.AddressMessage
	if err := m.UnmarshalBinary(b); err != nil {
		return Address{}, fmt.Errorf("decode address message: %w", err)
	}
	fam, ok := inetFamily(m.Family)
	if !ok || m.Attributes == nil {
		return Address{}, errIgnored
	}
	// IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
	// point-to-point links. Prefer the local one when present.
	ip := m.Attributes.Local
	if ip == nil {
		ip = m.Attributes.Address
	}
	a, ok := ipAddr(ip)
	if !ok {
		return Address{}, errIgnored
	}
	if fam == FamilyIPv6 {
		a = netip.AddrFrom16(a.As16())
	}
	p, err := a.Prefix(int(m.PrefixLength))
	if err != nil {
		return Address{}, errIgnored
	}
	flags := uint32(m.Flags)
	if m.Attributes.Flags != 0 {
		flags = m.Attributes.Flags // IFA_FLAGS: the 32-bit superset
	}
	return Address{LinkIndex: int(m.Index), Family: fam, Prefix: netip.PrefixFrom(a, p.Bits()), Scope: Scope(m.Scope), Flags: flags}, nil
}

// announced reports whether the kernel notifies an address's existence:
// an IPv6 address in duplicate address detection (tentative, neither
// optimistic nor failed) appears in dumps but gets no RTM_NEWADDR until
// detection ends. The collector keeps only announced addresses, so that
// a state built from events and one built from a dump agree. A tentative
// address is unusable anyway (Address.Usable).
func announced(a Address) bool {
	return a.Family != FamilyIPv6 || a.Flags&AddrFlagTentative == 0 || a.Flags&(AddrFlagOptimistic|AddrFlagDADFailed) != 0
}

func decodeRoute(b []byte) (Route, error) {
	var m rtnetlink.RouteMessage
	if err := m.UnmarshalBinary(b); err != nil {
		return Route{}, fmt.Errorf("decode route message: %w", err)
	}
	fam, ok := inetFamily(m.Family)
	if !ok {
		return Route{}, errIgnored
	}
	table := uint32(m.Table)
	if m.Attributes.Table != 0 {
		table = m.Attributes.Table
	}
	// The local table holds addresses of this host, not routing state; a
	// cloned route (RTM_F_CLONED) is a route cache entry, not a route.
	if table == unix.RT_TABLE_LOCAL || m.Flags&unix.RTM_F_CLONED != 0 || RouteType(m.Type) == RouteMulticast {
		return Route{}, errIgnored
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
		Type:      RouteType(m.Type),
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
	return r, nil
}

func decodeNeighbor(b []byte) (Neighbor, error) {
	var m rtnetlink.NeighMessage
	if err := m.UnmarshalBinary(b); err != nil {
		return Neighbor{}, fmt.Errorf("decode neighbour message: %w", err)
	}
	fam, ok := inetFamily(m.Family)
	if !ok || m.Attributes == nil {
		return Neighbor{}, errIgnored
	}
	ip, ok := ipAddr(m.Attributes.Address)
	if !ok {
		return Neighbor{}, errIgnored
	}
	if ip.IsMulticast() {
		// The kernel creates multicast entries (NOARP) silently, without
		// a notification; they say nothing about reachability.
		return Neighbor{}, errIgnored
	}
	n := Neighbor{LinkIndex: int(m.Index), Family: fam, IP: ip, State: NeighState(m.State)}
	if len(m.Attributes.LLAddress) > 0 {
		n.MAC = m.Attributes.LLAddress.String()
	}
	return n, nil
}

// snapshot builds an immutable, sorted view of s, re-sorting only the
// tables that changed since the last one.
func (s *state) snapshot() *Snapshot {
	if s.stale&linkTable != 0 || !s.relink() {
		// Sort the keys, not the links: a Link is ~200 bytes with
		// pointers, and swapping those costs more than the lookups.
		s.keys = s.keys[:0]
		for k := range s.links {
			s.keys = append(s.keys, k)
		}
		slices.Sort(s.keys)
		s.sortedLinks = make([]Link, len(s.keys))
		for i, k := range s.keys {
			s.sortedLinks[i] = s.links[k]
		}
	}
	if s.stale&addrTable != 0 {
		s.sortedAddrs = sortedValues(s.addrs, compareAddresses, &s.order)
	}
	if s.stale&routeTable != 0 {
		s.sortedRoutes = sortedValues(s.routes, compareRoutes, &s.order)
	}
	if s.stale&neighTable != 0 {
		s.sortedNeighs = sortedValues(s.neighs, compareNeighbors, &s.order)
	}
	s.stale, s.relinked = 0, s.relinked[:0]
	return &Snapshot{
		Links:     s.sortedLinks,
		Addresses: s.sortedAddrs,
		Routes:    s.sortedRoutes,
		Neighbors: s.sortedNeighs,
		changed:   make(chan struct{}),
	}
}

// relink replaces the relinked links in a copy of the last snapshot's. It
// returns false, to have the links rebuilt, if one of them is not there
// (which touch and setLink are meant to rule out).
func (s *state) relink() bool {
	if len(s.relinked) == 0 {
		return true
	}
	next := slices.Clone(s.sortedLinks)
	for _, ix := range s.relinked {
		i, ok := slices.BinarySearchFunc(next, ix, compareLinkIndex)
		l, exists := s.links[ix]
		if !ok || !exists {
			return false
		}
		next[i] = l
	}
	s.sortedLinks = next
	return true
}

// sortedValues returns m's values sorted by compare. It sorts positions
// (in order, reused) and copies each value once, rather than swapping
// the values themselves around while sorting.
func sortedValues[K comparable, V any](m map[K]V, compare func(x, y *V) int, order *[]int32) []V {
	vals := make([]V, 0, len(m))
	for _, v := range m {
		vals = append(vals, v)
	}
	o := (*order)[:0]
	for i := range vals {
		o = append(o, int32(i))
	}
	*order = o
	slices.SortFunc(o, func(i, j int32) int { return compare(&vals[i], &vals[j]) })
	// Sort vals by o in place, cycle by cycle, so that vals itself is
	// the result and no second slice is needed.
	for i := range o {
		if o[i] < 0 {
			continue
		}
		tmp, j := vals[i], i
		for {
			k := int(o[j])
			o[j] = -1
			if k == i {
				vals[j] = tmp
				break
			}
			vals[j] = vals[k]
			j = k
		}
	}
	return vals
}

// The comparators are total orders over each table's key, so that a
// snapshot's order never depends on map iteration.

func compareAddresses(x, y *Address) int {
	if c := cmp.Compare(x.LinkIndex, y.LinkIndex); c != 0 {
		return c
	}
	if c := x.Prefix.Addr().Compare(y.Prefix.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(x.Prefix.Bits(), y.Prefix.Bits())
}

func compareRoutes(x, y *Route) int {
	if c := cmp.Compare(x.Family, y.Family); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Table, y.Table); c != 0 {
		return c
	}
	if c := x.Dst.Addr().Compare(y.Dst.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Dst.Bits(), y.Dst.Bits()); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Priority, y.Priority); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Tos, y.Tos); c != 0 {
		return c
	}
	if c := x.Gateway.Compare(y.Gateway); c != 0 {
		return c
	}
	return cmp.Compare(x.LinkIndex, y.LinkIndex)
}

func compareNeighbors(x, y *Neighbor) int {
	if c := cmp.Compare(x.LinkIndex, y.LinkIndex); c != 0 {
		return c
	}
	return x.IP.Compare(y.IP)
}
