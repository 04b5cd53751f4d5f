package collector

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// kernelState is one full dump of the kernel's tables, decoded.
type kernelState struct {
	links  []Link
	addrs  map[addrKey]Address
	routes map[routeKey]Route
	neighs map[neighKey]Neighbor
}

// dumpAll dumps links, addresses, routes and neighbours. Each dump is
// consistent on its own (an interrupted one is retried); the caller makes
// the whole consistent with the event stream (see loop.resync). ctx's
// deadline, if sooner than the usual bound, bounds each request.
func (c *Collector) dumpAll(ctx context.Context) (*kernelState, error) {
	linkMsgs, err := c.dump(ctx, unix.RTM_GETLINK, &rtnetlink.LinkMessage{})
	if err != nil {
		return nil, fmt.Errorf("dump links: %w", err)
	}
	addrMsgs, err := c.dump(ctx, unix.RTM_GETADDR, &rtnetlink.AddressMessage{})
	if err != nil {
		return nil, fmt.Errorf("dump addresses: %w", err)
	}
	routes, neighs, err := c.dumpRoutesAndNeighbors(ctx)
	if err != nil {
		return nil, err
	}
	k := &kernelState{links: make([]Link, 0, len(linkMsgs)), addrs: make(map[addrKey]Address, len(addrMsgs)), routes: routes, neighs: neighs}
	decodeDump(c, linkMsgs, decodeLink, func(l Link) { k.links = append(k.links, l) })
	decodeDump(c, addrMsgs, decodeAddress, func(a Address) {
		if announced(a) {
			k.addrs[a.key()] = a
		}
	})
	return k, nil
}

func (c *Collector) redumpRoutesAndNeighbors(ctx context.Context, st *state) (bool, error) {
	routes, neighs, err := c.dumpRoutesAndNeighbors(ctx)
	if err != nil {
		return false, err
	}
	rc := replaceTable(st, routeTable, &st.routes, routes)
	nc := replaceTable(st, neighTable, &st.neighs, neighs)
	return rc || nc, nil
}

func (c *Collector) dumpRoutesAndNeighbors(ctx context.Context) (map[routeKey]Route, map[neighKey]Neighbor, error) {
	routeMsgs, err := c.dump(ctx, unix.RTM_GETROUTE, &rtnetlink.RouteMessage{})
	if err != nil {
		return nil, nil, fmt.Errorf("dump routes: %w", err)
	}
	neighMsgs, err := c.dump(ctx, unix.RTM_GETNEIGH, &rtnetlink.NeighMessage{})
	if err != nil {
		return nil, nil, fmt.Errorf("dump neighbours: %w", err)
	}
	routes := make(map[routeKey]Route, len(routeMsgs))
	decodeDump(c, routeMsgs, decodeRoute, func(r Route) { routes[r.key()] = r })
	neighs := make(map[neighKey]Neighbor, len(neighMsgs))
	decodeDump(c, neighMsgs, decodeNeighbor, func(n Neighbor) { neighs[n.key()] = n })
	return routes, neighs, nil
}

// decodeDump decodes the messages of a dump as state.apply does, passes
// those the state keeps to add, and counts (and skips) undecodable ones.
func decodeDump[V any](c *Collector, msgs []netlink.Message, decode func([]byte) (V, error), add func(V)) {
	for _, m := range msgs {
		v, err := decode(m.Data)
		switch {
		case err == nil:
			add(v)
		case !errors.Is(err, errIgnored):
			c.decodeErrors.Add(1)
		}
	}
}

// RouteGet asks the kernel which route it would use to reach dst (like
// `ip route get`), honouring policy routing. The returned route's Type is
// RTN_LOCAL for an address of this host.
func (c *Collector) RouteGet(ctx context.Context, dst netip.Addr) (Route, error) {
	dst = dst.Unmap()
	fam, bits := uint8(unix.AF_INET), uint8(32)
	if dst.Is6() {
		fam, bits = unix.AF_INET6, 128
	}
	req := &rtnetlink.RouteMessage{
		Family:     fam,
		DstLength:  bits,
		Attributes: rtnetlink.RouteAttributes{Dst: net.IP(dst.AsSlice())},
	}
	data, err := req.MarshalBinary()
	if err != nil {
		return Route{}, err
	}
	msgs, err := c.execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETROUTE, Flags: netlink.Request},
		Data:   data,
	}, requestDeadline(ctx, 5*time.Second))
	if err != nil {
		return Route{}, fmt.Errorf("route get %s: %w", dst, err)
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWROUTE {
			continue
		}
		var rm rtnetlink.RouteMessage
		if err := rm.UnmarshalBinary(m.Data); err != nil {
			return Route{}, fmt.Errorf("route get %s: decode: %w", dst, err)
		}
		r := Route{
			Family:    Family(rm.Family),
			Table:     uint32(rm.Table),
			Dst:       netip.PrefixFrom(dst, int(bits)),
			LinkIndex: int(rm.Attributes.OutIface),
			Priority:  rm.Attributes.Priority,
			Protocol:  rm.Protocol,
			Type:      RouteType(rm.Type),
		}
		if rm.Attributes.Table != 0 {
			r.Table = rm.Attributes.Table
		}
		if g, ok := ipAddr(rm.Attributes.Gateway); ok {
			r.Gateway = g
		}
		return r, nil
	}
	return Route{}, fmt.Errorf("route get %s: no route in reply", dst)
}

// sizeofIfStatsMsg is sizeof(struct if_stats_msg), which x/sys/unix lacks.
const sizeofIfStatsMsg = 12

// ifStatsMsg is struct if_stats_msg: a stats dump request filtered to the
// 64-bit link counters, a few hundred bytes a link instead of a full
// RTM_NEWLINK.
type ifStatsMsg struct{ filterMask uint32 }

func (m ifStatsMsg) MarshalBinary() ([]byte, error) {
	b := make([]byte, sizeofIfStatsMsg)
	binary.NativeEndian.PutUint32(b[8:], m.filterMask)
	return b, nil
}

var errShortStats = errors.New("short RTM_NEWSTATS message")

// decodeStats parses one RTM_NEWSTATS reply.
func decodeStats(b []byte) (int, LinkStats, bool, error) {
	if len(b) < sizeofIfStatsMsg {
		return 0, LinkStats{}, false, errShortStats
	}
	index := int(binary.NativeEndian.Uint32(b[4:8]))
	ad, err := netlink.NewAttributeDecoder(b[sizeofIfStatsMsg:])
	if err != nil {
		return 0, LinkStats{}, false, err
	}
	for ad.Next() {
		if ad.Type() != unix.IFLA_STATS_LINK_64 {
			continue
		}
		v := ad.Bytes()
		if len(v) < 8*8 {
			return 0, LinkStats{}, false, errShortStats
		}
		u := func(i int) uint64 { return binary.NativeEndian.Uint64(v[i*8:]) }
		// struct rtnl_link_stats64 field order.
		return index, LinkStats{
			RxPackets: u(0), TxPackets: u(1), RxBytes: u(2), TxBytes: u(3),
			RxErrors: u(4), TxErrors: u(5), RxDropped: u(6), TxDropped: u(7),
		}, true, ad.Err()
	}
	return index, LinkStats{}, false, ad.Err()
}

// stats returns traffic counters at most StatsMinInterval old, refreshing
// them with one RTM_GETSTATS dump if needed. Concurrent scrapes share one
// refresh. On failure the snapshot's counters are used.
func (c *Collector) stats() map[int]LinkStats {
	c.statsMu.Lock()
	defer c.statsMu.Unlock()
	now := c.now()
	if cur := c.statsByIx.Load(); cur != nil && now.Sub(c.statsAt) < c.opts.StatsMinInterval {
		return *cur
	}
	if !c.running.Load() {
		return nil
	}
	// IFLA_STATS_FILTER_BIT(IFLA_STATS_LINK_64): the 64-bit link counters only.
	msgs, err := c.dump(context.Background(), unix.RTM_GETSTATS, ifStatsMsg{filterMask: 1 << (unix.IFLA_STATS_LINK_64 - 1)})
	if err != nil {
		c.log.Debug("traffic counter refresh failed", "err", err)
		return nil
	}
	out := make(map[int]LinkStats, len(msgs))
	if prev := c.statsByIx.Load(); prev != nil {
		// A link being deleted leaves the stats dump before the snapshot,
		// and its last RTM_NEWLINK carries older (for a veth whose peer is
		// gone, zeroed) counters: keep the last dumped values until the
		// link is gone, so that no exported counter goes back.
		snap := c.snap.Load()
		for ix, st := range *prev {
			if _, ok := snap.LinkByIndex(ix); ok {
				out[ix] = st
			}
		}
	}
	for _, m := range msgs {
		ix, s, ok, err := decodeStats(m.Data)
		if err != nil {
			c.decodeErrors.Add(1)
			continue
		}
		if ok {
			out[ix] = s
		}
	}
	c.statsByIx.Store(&out)
	c.statsAt = now
	return out
}
