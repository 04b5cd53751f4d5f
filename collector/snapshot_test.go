package collector

import (
	"fmt"
	"math/rand/v2"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestSnapshotReusesOnlyUnchangedTables applies random link, address,
// route and neighbour messages to a state and checks after each one that
// the snapshot, which re-sorts only the tables marked changed, equals one
// rebuilt from scratch.
func TestSnapshotReusesOnlyUnchangedTables(t *testing.T) {
	rng := testkit.ReplayRand(t)
	st := newState()
	now := time.Unix(0, 0)
	for i := range 3000 {
		m := randomMessage(t, rng)
		ch, err := st.apply(m, now)
		if err != nil && err != errIgnored {
			t.Fatalf("message %d: %v", i, err)
		}
		if rng.IntN(5) == 0 {
			// The event loop's route/neighbour re-dump after a flush.
			routes, neighs := redumped(st, rng)
			replaceTable(st, routeTable, &st.routes, routes)
			replaceTable(st, neighTable, &st.neighs, neighs)
		}
		if !ch.changed && rng.IntN(3) != 0 {
			continue // publish only sometimes, like the loop
		}
		got := st.snapshot()
		checkSnapshot(t, st, got)
		st.touch(allTables)
		want := st.snapshot()
		if !reflect.DeepEqual(got.Links, want.Links) || !reflect.DeepEqual(got.Addresses, want.Addresses) ||
			!reflect.DeepEqual(got.Routes, want.Routes) || !reflect.DeepEqual(got.Neighbors, want.Neighbors) {
			t.Fatalf("after message %d (type %d): incremental snapshot differs from a full rebuild:\n%+v\n%+v", i, m.Header.Type, got, want)
		}
	}
}

// checkSnapshot checks that snap holds exactly st's tables, each sorted.
func checkSnapshot(t *testing.T, st *state, snap *Snapshot) {
	t.Helper()
	if len(snap.Links) != len(st.links) || len(snap.Addresses) != len(st.addrs) ||
		len(snap.Routes) != len(st.routes) || len(snap.Neighbors) != len(st.neighs) {
		t.Fatalf("snapshot sizes %d/%d/%d/%d, state %d/%d/%d/%d", len(snap.Links), len(snap.Addresses), len(snap.Routes),
			len(snap.Neighbors), len(st.links), len(st.addrs), len(st.routes), len(st.neighs))
	}
	for i, l := range snap.Links {
		if st.links[l.Index] != l || (i > 0 && snap.Links[i-1].Index >= l.Index) {
			t.Fatalf("link %d (index %d) wrong or out of order", i, l.Index)
		}
	}
	for i, a := range snap.Addresses {
		if st.addrs[addrKey{a.LinkIndex, a.Prefix}] != a || (i > 0 && compareAddresses(&snap.Addresses[i-1], &a) >= 0) {
			t.Fatalf("address %d (%v) wrong or out of order", i, a)
		}
	}
	for i, r := range snap.Routes {
		if st.routes[r.key()] != r || (i > 0 && compareRoutes(&snap.Routes[i-1], &r) >= 0) {
			t.Fatalf("route %d (%v) wrong or out of order", i, r)
		}
	}
	for i, n := range snap.Neighbors {
		if st.neighs[neighKey{n.LinkIndex, n.IP}] != n || (i > 0 && compareNeighbors(&snap.Neighbors[i-1], &n) >= 0) {
			t.Fatalf("neighbour %d (%v) wrong or out of order", i, n)
		}
	}
}

// redumped returns copies of st's route and neighbour tables, with one entry
// dropped now and then, as a re-dump after a silent flush would.
func redumped(st *state, rng *rand.Rand) (map[routeKey]Route, map[neighKey]Neighbor) {
	routes := make(map[routeKey]Route, len(st.routes))
	for k, r := range st.routes {
		routes[k] = r
	}
	if rng.IntN(2) == 0 {
		for k := range routes {
			delete(routes, k)
			break
		}
	}
	neighs := make(map[neighKey]Neighbor, len(st.neighs))
	for k, n := range st.neighs {
		neighs[k] = n
	}
	return routes, neighs
}

func randomMessage(t *testing.T, rng *rand.Rand) netlink.Message {
	t.Helper()
	ix := uint32(1 + rng.IntN(6))
	ip := net.IPv4(10, 0, byte(ix), byte(1+rng.IntN(3))).To4()
	var typ netlink.HeaderType
	var body interface{ MarshalBinary() ([]byte, error) }
	switch rng.IntN(4) {
	case 0:
		typ = unix.RTM_NEWLINK
		if rng.IntN(6) == 0 {
			typ = unix.RTM_DELLINK
		}
		var flags uint32
		if rng.IntN(2) == 0 {
			flags = unix.IFF_UP | unix.IFF_LOWER_UP
		}
		body = &rtnetlink.LinkMessage{Index: ix, Flags: flags, Attributes: &rtnetlink.LinkAttributes{
			Name: fmt.Sprintf("eth%d", ix), MTU: uint32(1400 + rng.IntN(3)), Type: 1,
			OperationalState: rtnetlink.OperationalState(rng.IntN(7)),
			Stats64:          &rtnetlink.LinkStats64{RXBytes: rng.Uint64N(3)},
		}}
	case 1:
		typ = unix.RTM_NEWADDR
		if rng.IntN(3) == 0 {
			typ = unix.RTM_DELADDR
		}
		body = &rtnetlink.AddressMessage{Family: unix.AF_INET, PrefixLength: uint8(24 + rng.IntN(2)), Index: ix,
			Attributes: &rtnetlink.AddressAttributes{Address: ip, Local: ip}}
	case 2:
		typ = unix.RTM_NEWROUTE
		if rng.IntN(3) == 0 {
			typ = unix.RTM_DELROUTE
		}
		body = &rtnetlink.RouteMessage{Family: unix.AF_INET, DstLength: 24, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST,
			Attributes: rtnetlink.RouteAttributes{Dst: net.IPv4(10, 9, byte(rng.IntN(4)), 0).To4(), OutIface: ix, Priority: uint32(rng.IntN(2))}}
	default:
		typ = unix.RTM_NEWNEIGH
		if rng.IntN(3) == 0 {
			typ = unix.RTM_DELNEIGH
		}
		body = &rtnetlink.NeighMessage{Family: unix.AF_INET, Index: ix, State: []uint16{unix.NUD_STALE, unix.NUD_REACHABLE}[rng.IntN(2)],
			Attributes: &rtnetlink.NeighAttributes{Address: ip, LLAddress: net.HardwareAddr{2, 0, 0, 0, 0, byte(rng.IntN(2))}}}
	}
	data, err := body.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return netlink.Message{Header: netlink.Header{Type: typ}, Data: data}
}

func TestKernelNames(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{RouteUnicast.String(), "unicast"},
		{RouteLocal.String(), "local"},
		{RouteBroadcast.String(), "broadcast"},
		{RouteBlackhole.String(), "blackhole"},
		{RouteUnreachable.String(), "unreachable"},
		{RouteProhibit.String(), "prohibit"},
		{RouteThrow.String(), "throw"},
		{RouteType(unix.RTN_MAX + 1).String(), "type 12"},
		{ScopeGlobal.String(), "global"},
		{ScopeLink.String(), "link"},
		{ScopeHost.String(), "host"},
		{Scope(1).String(), "other"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
