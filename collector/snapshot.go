package collector

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// OperState is a link's RFC 2863 operational state as the kernel reports it
// in IFLA_OPERSTATE (include/uapi/linux/if.h).
type OperState uint8

// Operational states (IF_OPER_*), in kernel order.
const (
	OperUnknown OperState = iota
	OperNotPresent
	OperDown
	OperLowerLayerDown
	OperTesting
	OperDormant
	OperUp
)

// OperStates lists every state, for exposing one series per state.
var OperStates = []OperState{OperUnknown, OperNotPresent, OperDown, OperLowerLayerDown, OperTesting, OperDormant, OperUp}

func (o OperState) String() string {
	switch o {
	case OperUnknown:
		return "unknown"
	case OperNotPresent:
		return "notpresent"
	case OperDown:
		return "down"
	case OperLowerLayerDown:
		return "lowerlayerdown"
	case OperTesting:
		return "testing"
	case OperDormant:
		return "dormant"
	case OperUp:
		return "up"
	}
	return "invalid"
}

// ParseOperState is the inverse of OperState.String.
func ParseOperState(s string) (OperState, bool) {
	for _, o := range OperStates {
		if o.String() == s {
			return o, true
		}
	}
	return 0, false
}

// Family is an address family: FamilyIPv4 or FamilyIPv6.
type Family uint8

// Address families as in <sys/socket.h>.
const (
	FamilyIPv4 Family = unix.AF_INET
	FamilyIPv6 Family = unix.AF_INET6
)

func (f Family) String() string {
	switch f {
	case FamilyIPv4:
		return "inet"
	case FamilyIPv6:
		return "inet6"
	}
	return "unspec"
}

// Scope is an address or route scope (RT_SCOPE_*).
type Scope uint8

// Scopes as in include/uapi/linux/rtnetlink.h.
const (
	ScopeGlobal  Scope = unix.RT_SCOPE_UNIVERSE // "global" in iproute2 and in metrics
	ScopeSite    Scope = unix.RT_SCOPE_SITE
	ScopeLink    Scope = unix.RT_SCOPE_LINK
	ScopeHost    Scope = unix.RT_SCOPE_HOST
	ScopeNowhere Scope = unix.RT_SCOPE_NOWHERE
)

func (s Scope) String() string {
	switch s {
	case ScopeGlobal:
		return "global"
	case ScopeSite:
		return "site"
	case ScopeLink:
		return "link"
	case ScopeHost:
		return "host"
	case ScopeNowhere:
		return "nowhere"
	}
	return "other"
}

// RouteType is a route's type (RTN_*): what the kernel does with a packet
// that matches it.
type RouteType uint8

// Route types as in include/uapi/linux/rtnetlink.h.
const (
	RouteUnspec      RouteType = unix.RTN_UNSPEC
	RouteUnicast     RouteType = unix.RTN_UNICAST     // a gateway or direct route
	RouteLocal       RouteType = unix.RTN_LOCAL       // an address of this host
	RouteBroadcast   RouteType = unix.RTN_BROADCAST   // accept locally as broadcast, send as broadcast
	RouteAnycast     RouteType = unix.RTN_ANYCAST     // accept locally as broadcast, send as unicast
	RouteMulticast   RouteType = unix.RTN_MULTICAST   // a multicast route
	RouteBlackhole   RouteType = unix.RTN_BLACKHOLE   // drop
	RouteUnreachable RouteType = unix.RTN_UNREACHABLE // the destination is unreachable
	RouteProhibit    RouteType = unix.RTN_PROHIBIT    // administratively prohibited
	RouteThrow       RouteType = unix.RTN_THROW       // not in this table: go on with the next rule
	RouteNAT         RouteType = unix.RTN_NAT         // translate this address
	RouteXResolve    RouteType = unix.RTN_XRESOLVE    // use an external resolver
)

// String returns the type as iproute2 names it, or "type N".
func (t RouteType) String() string {
	switch t {
	case RouteUnspec:
		return "unspec"
	case RouteUnicast:
		return "unicast"
	case RouteLocal:
		return "local"
	case RouteBroadcast:
		return "broadcast"
	case RouteAnycast:
		return "anycast"
	case RouteMulticast:
		return "multicast"
	case RouteBlackhole:
		return "blackhole"
	case RouteUnreachable:
		return "unreachable"
	case RouteProhibit:
		return "prohibit"
	case RouteThrow:
		return "throw"
	case RouteNAT:
		return "nat"
	case RouteXResolve:
		return "xresolve"
	}
	return "type " + strconv.Itoa(int(t))
}

// NeighState is a neighbour cache entry state (NUD_* bits).
type NeighState uint16

// Neighbour states as in include/uapi/linux/neighbour.h.
const (
	NeighIncomplete NeighState = unix.NUD_INCOMPLETE
	NeighReachable  NeighState = unix.NUD_REACHABLE
	NeighStale      NeighState = unix.NUD_STALE
	NeighDelay      NeighState = unix.NUD_DELAY
	NeighProbe      NeighState = unix.NUD_PROBE
	NeighFailed     NeighState = unix.NUD_FAILED
	NeighNoARP      NeighState = unix.NUD_NOARP
	NeighPermanent  NeighState = unix.NUD_PERMANENT
	NeighNone       NeighState = unix.NUD_NONE
)

func (n NeighState) String() string {
	switch n {
	case NeighIncomplete:
		return "incomplete"
	case NeighReachable:
		return "reachable"
	case NeighStale:
		return "stale"
	case NeighDelay:
		return "delay"
	case NeighProbe:
		return "probe"
	case NeighFailed:
		return "failed"
	case NeighNoARP:
		return "noarp"
	case NeighPermanent:
		return "permanent"
	case NeighNone:
		return "none"
	}
	return "other"
}

// LinkStats are a link's traffic counters (IFLA_STATS64).
type LinkStats struct {
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// Link is one network interface as the kernel last described it.
type Link struct {
	Index          int
	Name           string
	Kind           string // IFLA_INFO_KIND (veth, bridge, ...); "" for plain devices
	Address        string // hardware address, "" if none
	Alias          string
	MTU            uint32
	AdminUp        bool // IFF_UP
	Carrier        bool // IFLA_CARRIER (IFF_LOWER_UP)
	Loopback       bool // IFF_LOOPBACK
	OperState      OperState
	CarrierChanges uint32
	Stats          LinkStats
	// Up is the result of IsUp: the one rule linkgate uses everywhere.
	Up bool
	// LastChange is when Up last changed (or the link was first seen).
	LastChange time.Time
	// UpTransitions and DownTransitions count changes of Up seen in
	// events since linkgate started, so no flap between scrapes is lost.
	UpTransitions, DownTransitions uint64
}

// IsUp reports whether a link can carry traffic, following the kernel's
// Documentation/networking/operstates.rst: operstate UP; or operstate
// UNKNOWN (drivers that do not manage operstate, e.g. loopback, tun) while
// the interface is administratively up and has carrier.
func IsUp(oper OperState, adminUp, carrier bool) bool {
	switch oper {
	case OperUp:
		return true
	case OperUnknown:
		return adminUp && carrier
	}
	return false
}

// Address is one interface address.
type Address struct {
	LinkIndex int
	Family    Family
	Prefix    netip.Prefix // the address with its prefix length
	Scope     Scope
	Flags     uint32 // IFA_F_* (IFA_FLAGS when present)
}

// Address flags that make an address unusable as a source.
const (
	AddrFlagDADFailed  = unix.IFA_F_DADFAILED  // duplicate address detected
	AddrFlagOptimistic = unix.IFA_F_OPTIMISTIC // usable during duplicate address detection (RFC 4429)
	AddrFlagTentative  = unix.IFA_F_TENTATIVE  // duplicate address detection still running
)

// Usable reports whether the address can be used: not still in, and not
// failed, duplicate address detection (an IPv6 address is tentative for
// about a second after it is added or its link comes up).
func (a Address) Usable() bool { return a.Flags&(AddrFlagTentative|AddrFlagDADFailed) == 0 }

// Route is one route from any table other than local.
type Route struct {
	Family    Family
	Table     uint32
	Dst       netip.Prefix // 0.0.0.0/0 or ::/0 for a default route
	Gateway   netip.Addr   // invalid when directly connected
	LinkIndex int          // output interface, 0 if none (e.g. multipath)
	Priority  uint32
	Tos       uint8
	Protocol  uint8
	Type      RouteType
}

// Default reports whether r is a default route.
func (r Route) Default() bool { return r.Dst.IsValid() && r.Dst.Bits() == 0 }

// TableMain is the kernel's main routing table (RT_TABLE_MAIN).
const TableMain = unix.RT_TABLE_MAIN

// Neighbor is one neighbour (ARP / NDP) cache entry.
type Neighbor struct {
	LinkIndex int
	Family    Family
	IP        netip.Addr
	MAC       string
	State     NeighState
}

// NetworkStatus aggregates link state over the required interfaces.
type NetworkStatus struct {
	// Up: every required interface is up; with none required, at least one
	// non-loopback link is up.
	Up bool
	// Required is the configured list (empty: any non-loopback link).
	Required []string
	// Down lists required interfaces that are missing or not up.
	Down []string
	// Outages counts up→down transitions of Up since start.
	Outages uint64
	// OutageTime is the total duration of completed outages.
	OutageTime time.Duration
	// LastOutage is the duration of the most recent completed outage.
	LastOutage time.Duration
	// DownSince is when the current outage began; zero while up.
	DownSince time.Time
}

// OutageSecondsAt returns total outage time including the current outage up to now.
func (n NetworkStatus) OutageSecondsAt(now time.Time) float64 {
	d := n.OutageTime
	if !n.Up && !n.DownSince.IsZero() && now.After(n.DownSince) {
		d += now.Sub(n.DownSince)
	}
	return d.Seconds()
}

// Snapshot is an immutable view of kernel network state. A new Snapshot
// replaces it on every change; Changed is closed when that happens, so a
// consumer can wait for the next change without polling and without
// missing one. Successive snapshots share the slices of tables that did
// not change, so none may ever be modified.
type Snapshot struct {
	Version   uint64
	Taken     time.Time
	Links     []Link     // sorted by index
	Addresses []Address  // sorted by link index, then address
	Routes    []Route    // sorted by family, table, destination, metric
	Neighbors []Neighbor // sorted by link index, then IP
	Network   NetworkStatus
	// Verified: the tables are known to equal the kernel's, i.e. they come
	// from a consistent dump and every event since. False while events
	// may have been lost (a receive queue overflow, drops, a failed
	// socket) until a resync completes: Doubt then says why, since
	// DoubtSince. Consumers that decide (the readiness checks) must not
	// answer from an unverified snapshot.
	Verified   bool
	Doubt      string
	DoubtSince time.Time

	changed chan struct{}
}

// Changed is closed when a newer snapshot supersedes this one.
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }

// LinkByIndex finds a link by interface index.
func (s *Snapshot) LinkByIndex(index int) (Link, bool) {
	if i, ok := slices.BinarySearchFunc(s.Links, index, compareLinkIndex); ok {
		return s.Links[i], true
	}
	return Link{}, false
}

// compareLinkIndex orders a link against an interface index, for binary
// searches of tables sorted by index.
func compareLinkIndex(l Link, index int) int { return cmp.Compare(l.Index, index) }

// LinkByName finds a link by name.
func (s *Snapshot) LinkByName(name string) (Link, bool) {
	for _, l := range s.Links {
		if l.Name == name {
			return l, true
		}
	}
	return Link{}, false
}

// AddressesOf returns the addresses on the link with the given index.
func (s *Snapshot) AddressesOf(index int) []Address {
	var out []Address
	for _, a := range s.Addresses {
		if a.LinkIndex == index {
			out = append(out, a)
		}
	}
	return out
}

// DefaultRoutes returns default routes of family f in the main table.
func (s *Snapshot) DefaultRoutes(f Family) []Route {
	var out []Route
	for _, r := range s.Routes {
		if r.Family == f && r.Table == TableMain && r.Default() {
			out = append(out, r)
		}
	}
	return out
}
