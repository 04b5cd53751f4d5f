package collector

import (
	"slices"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Fuzz targets for what the collector takes from the kernel (or from any
// process that can send to the rtnetlink groups). The seed corpus in
// testdata/fuzz holds real kernel messages of every type, as NEW and DEL,
// dumped from a namespace with addresses, a default route, a multipath
// route and a permanent neighbour. A long run:
//
//	go test -run '^$' -fuzz FuzzApply -fuzztime 10m ./collector/

// FuzzApply feeds a datagram to the event loop's decoding and state, twice
// (the second pass must change nothing), then checks the state's
// invariants: map keys agree with their values, a snapshot holds exactly
// the state sorted, and the state compared with itself as a dump shows no
// divergence.
func FuzzApply(f *testing.F) {
	for _, m := range []netlink.Message{
		seed(f, unix.RTM_NEWLINK, &rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Index: 2, Flags: unix.IFF_UP | unix.IFF_LOWER_UP,
			Attributes: &rtnetlink.LinkAttributes{Name: "eth0", MTU: 1500, OperationalState: rtnetlink.OperStateUp}}),
		seed(f, unix.RTM_NEWADDR, &rtnetlink.AddressMessage{Family: unix.AF_INET, PrefixLength: 24, Index: 2,
			Attributes: &rtnetlink.AddressAttributes{Address: []byte{192, 0, 2, 1}, Local: []byte{192, 0, 2, 1}}}),
		seed(f, unix.RTM_NEWROUTE, &rtnetlink.RouteMessage{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST,
			Attributes: rtnetlink.RouteAttributes{Gateway: []byte{192, 0, 2, 254}, OutIface: 2}}),
		seed(f, unix.RTM_NEWNEIGH, &rtnetlink.NeighMessage{Family: unix.AF_INET, Index: 2, State: unix.NUD_REACHABLE,
			Attributes: &rtnetlink.NeighAttributes{Address: []byte{192, 0, 2, 254}, LLAddress: []byte{2, 0, 0, 0, 0, 0xfe}}}),
	} {
		b, err := m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st := newState()
		now := time.Unix(1_900_000_000, 0)
		msgs, _ := parseMessages(b, nil)
		for _, m := range msgs {
			if len(m.Data) > len(b) {
				t.Fatalf("message data of %d bytes from a %d-byte datagram", len(m.Data), len(b))
			}
			_, _ = st.apply(m, now)
		}
		for _, m := range msgs {
			if ch, err := st.apply(m, now); err == nil && ch.changed && !replaces(m) {
				// Applying the same full-state messages again is a no-op,
				// except where one message of the datagram undoes another.
				if !undoneLater(msgs, m) {
					t.Errorf("re-applying %v changed the state", m.Header.Type)
				}
			}
		}
		checkState(t, st)
	})
}

// replaces: NLM_F_REPLACE routes delete their look-alikes, so the second
// pass may legitimately change the table when two routes share an identity.
func replaces(m netlink.Message) bool { return m.Header.Flags&netlink.Replace != 0 }

// undoneLater reports whether another message of the datagram touches the
// same kind of object, so that re-applying m may differ from the first
// pass's end state.
func undoneLater(msgs []netlink.Message, m netlink.Message) bool {
	kind := func(t netlink.HeaderType) netlink.HeaderType { return (t - unix.RTM_BASE) / 4 }
	n := 0
	for _, o := range msgs {
		if kind(o.Header.Type) == kind(m.Header.Type) {
			n++
		}
	}
	return n > 1
}

func checkState(t *testing.T, st *state) {
	t.Helper()
	for ix, l := range st.links {
		if l.Index != ix {
			t.Fatalf("link %d stored under %d", l.Index, ix)
		}
		if l.Up != IsUp(l.OperState, l.AdminUp, l.Carrier) {
			t.Fatalf("link %d: Up=%v disagrees with IsUp", ix, l.Up)
		}
	}
	for k, a := range st.addrs {
		if k != (addrKey{a.LinkIndex, a.Prefix}) || !announced(a) {
			t.Fatalf("address %+v under key %+v (announced %v)", a, k, announced(a))
		}
	}
	for k, r := range st.routes {
		if k != r.key() {
			t.Fatalf("route %+v under key %+v", r, k)
		}
	}
	for k, n := range st.neighs {
		if k != (neighKey{n.LinkIndex, n.IP}) {
			t.Fatalf("neighbour %+v under key %+v", n, k)
		}
	}
	s := st.snapshot()
	if len(s.Links) != len(st.links) || len(s.Addresses) != len(st.addrs) || len(s.Routes) != len(st.routes) || len(s.Neighbors) != len(st.neighs) {
		t.Fatalf("snapshot sizes %d/%d/%d/%d, state %d/%d/%d/%d", len(s.Links), len(s.Addresses), len(s.Routes), len(s.Neighbors),
			len(st.links), len(st.addrs), len(st.routes), len(st.neighs))
	}
	if !slices.IsSortedFunc(s.Links, func(x, y Link) int { return x.Index - y.Index }) ||
		!slices.IsSortedFunc(s.Addresses, func(x, y Address) int { return compareAddresses(&x, &y) }) ||
		!slices.IsSortedFunc(s.Routes, func(x, y Route) int { return compareRoutes(&x, &y) }) ||
		!slices.IsSortedFunc(s.Neighbors, func(x, y Neighbor) int { return compareNeighbors(&x, &y) }) {
		t.Fatal("snapshot not sorted")
	}
	for _, l := range s.Links {
		if got, ok := s.LinkByIndex(l.Index); !ok || got.Index != l.Index {
			t.Fatalf("LinkByIndex(%d) = %+v, %v", l.Index, got, ok)
		}
	}
	k := &kernelState{links: s.Links, addrs: st.addrs, routes: st.routes, neighs: st.neighs}
	if d := st.diff(k); len(d) != 0 {
		t.Fatalf("state differs from itself: %v", d.details())
	}
}

func seed(f *testing.F, t netlink.HeaderType, body marshaler) netlink.Message {
	data, err := body.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	return netlink.Message{Header: netlink.Header{Type: t, Length: uint32(unix.NLMSG_HDRLEN + len(data))}, Data: data}
}

// FuzzDecodeStats: an RTM_NEWSTATS reply of any shape decodes or fails
// cleanly; a decoded one came from at least a full if_stats_msg.
func FuzzDecodeStats(f *testing.F) {
	b := make([]byte, sizeofIfStatsMsg+4+8*8)
	b[4] = 7
	b[sizeofIfStatsMsg] = byte(len(b) - sizeofIfStatsMsg)
	b[sizeofIfStatsMsg+2] = unix.IFLA_STATS_LINK_64
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, _, ok, err := decodeStats(b)
		if (ok || err == nil) && len(b) < sizeofIfStatsMsg {
			t.Fatalf("decoded %d bytes: index %d ok %v err %v", len(b), ix, ok, err)
		}
	})
}
