// Package collector owns linkgate's view of the kernel's network state.
//
// It subscribes to rtnetlink multicast groups (links, IPv4/IPv6 addresses,
// IPv4/IPv6 routes, neighbours) on one socket, then dumps the current
// state on a second, request socket, so that no change between the dump
// and the subscription is lost. Every change is folded into an immutable
// Snapshot that is swapped in atomically; the old snapshot's Changed
// channel is closed, which is the broadcast signal consumers wait on.
//
// Overflow of the socket's receive queue (ENOBUFS) means events were lost:
// the collector re-dumps and rebuilds. If the kernel (or a sandbox) refuses
// the multicast subscription, it falls back to periodic dumps and says so
// in linkgate_netlink_mode. Scrapes read the snapshot; only traffic
// counters are refreshed from the kernel, at most once per StatsMinInterval.
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Options configure a Collector. The zero value watches the process's own
// network namespace with "any non-loopback link up" as the network rule.
type Options struct {
	// NetNS is the path of a network namespace to watch (/run/netns/x,
	// /proc/PID/ns/net). Empty: the process's own.
	NetNS string
	// Required interfaces: all must be up for the network to be up. Empty:
	// at least one non-loopback link must be up.
	Required []string
	// DeviceFilter, when set, limits which links are exported as metrics.
	// It does not change the snapshot or the network rule.
	DeviceFilter func(name string) bool
	// ReceiveBuffer is the event socket's receive buffer in bytes
	// (default 8 MiB). Raised with SO_RCVBUFFORCE where permitted.
	ReceiveBuffer int
	// PollInterval is the dump period when multicast is refused (default 5s).
	PollInterval time.Duration
	// StatsMinInterval bounds how often a scrape may refresh traffic
	// counters from the kernel (default 1s).
	StatsMinInterval time.Duration
	Logger           *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Multicast groups the collector subscribes to.
const groups = unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR |
	unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE | unix.RTMGRP_NEIGH

// Resync reasons for linkgate_netlink_resyncs_total.
const (
	ResyncOverflow  = "overflow"  // ENOBUFS: events were dropped
	ResyncReconnect = "reconnect" // the event socket failed and was re-dialed
	ResyncFlush     = "flush"     // the kernel may have flushed routes silently
)

var eventTypes = []string{"newlink", "dellink", "newaddr", "deladdr", "newroute", "delroute", "newneigh", "delneigh"}
var resyncReasons = []string{ResyncOverflow, ResyncReconnect, ResyncFlush}

// errSubscribeRefused means multicast is unavailable: use polling.
var errSubscribeRefused = errors.New("rtnetlink multicast subscription refused")

// Collector watches one network namespace. Create it with New, start Run.
type Collector struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	snap atomic.Pointer[Snapshot]
	// mu serialises publishing (the event loop and SetRequired).
	mu       sync.Mutex
	required []string
	synced   chan struct{}
	syncOnce sync.Once

	events       map[string]*atomic.Uint64
	resyncs      map[string]*atomic.Uint64
	decodeErrors atomic.Uint64
	polling      atomic.Bool
	running      atomic.Bool
	// failingSince is set (unix nanos) while the event socket cannot be dialed.
	failingSince atomic.Int64

	nsMu   sync.Mutex
	nsFile *os.File

	reqMu sync.Mutex
	req   *netlink.Conn

	statsMu   sync.Mutex
	statsAt   time.Time
	statsByIx atomic.Pointer[map[int]LinkStats]

	// Test seams.
	dialEvents      func(cfg *netlink.Config) (*netlink.Conn, error)
	testHookReceive func()
}

// New returns a Collector. It opens nothing until Run.
func New(opts Options) (*Collector, error) {
	if opts.ReceiveBuffer == 0 {
		opts.ReceiveBuffer = 8 << 20
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 5 * time.Second
	}
	if opts.StatsMinInterval <= 0 {
		opts.StatsMinInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.NetNS != "" {
		if _, err := os.Stat(opts.NetNS); err != nil {
			return nil, fmt.Errorf("network namespace: %w", err)
		}
	}
	c := &Collector{
		opts:       opts,
		log:        opts.Logger,
		now:        opts.Now,
		required:   slices.Clone(opts.Required),
		synced:     make(chan struct{}),
		events:     make(map[string]*atomic.Uint64),
		resyncs:    make(map[string]*atomic.Uint64),
		dialEvents: func(cfg *netlink.Config) (*netlink.Conn, error) { return netlink.Dial(unix.NETLINK_ROUTE, cfg) },
	}
	for _, t := range append(eventTypes, "other") {
		c.events[t] = new(atomic.Uint64)
	}
	for _, r := range resyncReasons {
		c.resyncs[r] = new(atomic.Uint64)
	}
	c.snap.Store(&Snapshot{changed: make(chan struct{}), Network: NetworkStatus{Required: c.required}})
	return c, nil
}

// Snapshot returns the current state. It never blocks and never dials.
func (c *Collector) Snapshot() *Snapshot { return c.snap.Load() }

// Synced is closed once the first full dump has been published.
func (c *Collector) Synced() <-chan struct{} { return c.synced }

// NetworkState reports whether the required network is up and a channel
// closed at the next change. It is the probe's view of the collector.
func (c *Collector) NetworkState() (up bool, changed <-chan struct{}) {
	s := c.snap.Load()
	return s.Network.Up, s.changed
}

// Alive reports whether the event loop is running and has a working kernel
// connection (or is polling), i.e. whether /healthz should say ok.
func (c *Collector) Alive() bool {
	if !c.running.Load() {
		return false
	}
	since := c.failingSince.Load()
	return since == 0 || c.now().Sub(time.Unix(0, since)) < 30*time.Second
}

// Polling reports whether the collector runs in the polling fallback.
func (c *Collector) Polling() bool { return c.polling.Load() }

// SetRequired replaces the required interfaces and republishes the network
// status (used by required_interfaces: auto and by config reload).
func (c *Collector) SetRequired(names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(names, c.required) {
		return
	}
	c.required = slices.Clone(names)
	prev := c.snap.Load()
	next := *prev
	next.changed = make(chan struct{})
	c.publishLocked(&next, prev)
}

// publish builds and swaps in a snapshot of st.
func (c *Collector) publish(st *state) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.publishLocked(st.snapshot(), c.snap.Load())
	c.syncOnce.Do(func() { close(c.synced) })
}

func (c *Collector) publishLocked(next, prev *Snapshot) {
	now := c.now()
	next.Version = prev.Version + 1
	next.Taken = now
	next.Network = aggregate(next.Links, c.required, prev.Network, prev.Version == 0, now)
	c.snap.Store(next)
	close(prev.changed)
}

// Run watches the kernel until ctx is done. It returns nil after ctx is
// cancelled and every goroutine it started has stopped.
func (c *Collector) Run(ctx context.Context) error {
	if err := c.openNetNS(); err != nil {
		return err
	}
	c.running.Store(true)
	defer func() {
		c.running.Store(false)
		c.closeReq()
		c.nsMu.Lock()
		if c.nsFile != nil {
			c.nsFile.Close()
			c.nsFile = nil
		}
		c.nsMu.Unlock()
	}()
	st := newState()
	backoff := 100 * time.Millisecond
	first := true
	for {
		err := c.watch(ctx, st, first)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errSubscribeRefused) {
			c.log.Warn("rtnetlink multicast refused; falling back to periodic dumps", "interval", c.opts.PollInterval, "err", err)
			c.failingSince.Store(0)
			c.poll(ctx, st)
			return nil
		}
		first = false
		if c.failingSince.Load() == 0 {
			// The last socket synced and worked: a new failure starts the
			// backoff over instead of inheriting an old 30s wait.
			backoff = 100 * time.Millisecond
			c.failingSince.Store(c.now().UnixNano())
		}
		c.log.Warn("rtnetlink event socket failed; re-dialing", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func (c *Collector) openNetNS() error {
	if c.opts.NetNS == "" {
		return nil
	}
	f, err := os.Open(c.opts.NetNS)
	if err != nil {
		return fmt.Errorf("open network namespace: %w", err)
	}
	c.nsMu.Lock()
	c.nsFile = f
	c.nsMu.Unlock()
	return nil
}

func (c *Collector) config(groups uint32) *netlink.Config {
	cfg := &netlink.Config{Groups: groups}
	c.nsMu.Lock()
	if c.nsFile != nil {
		cfg.NetNS = int(c.nsFile.Fd())
	}
	c.nsMu.Unlock()
	return cfg
}

// watch subscribes, dumps, and applies events until the socket fails or
// ctx ends.
func (c *Collector) watch(ctx context.Context, st *state, first bool) error {
	ev, err := c.dialEvents(c.config(groups))
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPROTONOSUPPORT) ||
			errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("%w: %w", errSubscribeRefused, err)
		}
		return fmt.Errorf("dial rtnetlink events: %w", err)
	}
	defer ev.Close()
	stop := context.AfterFunc(ctx, func() { ev.Close() })
	defer stop()
	c.setReceiveBuffer(ev)

	// Subscribed: now dump. Events queued meanwhile are applied after.
	if err := c.resync(st); err != nil {
		return err
	}
	if !first {
		c.resyncs[ResyncReconnect].Add(1)
	}
	c.failingSince.Store(0)
	c.polling.Store(false)
	c.publish(st)

	for {
		if h := c.testHookReceive; h != nil {
			h()
		}
		msgs, err := ev.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, unix.ENOBUFS) {
				c.log.Warn("rtnetlink receive queue overflowed; events lost, re-dumping")
				c.resyncs[ResyncOverflow].Add(1)
				// What is still queued predates the loss and would roll
				// the fresh dump back: discard it first.
				if err := c.drain(ev); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				if err := c.resync(st); err != nil {
					return err
				}
				c.publish(st)
				continue
			}
			return fmt.Errorf("receive rtnetlink events: %w", err)
		}
		changed, flush := false, false
		now := c.now()
		for _, m := range msgs {
			c.countEvent(m.Header.Type)
			ch, err := st.apply(m, now)
			if err != nil {
				if !errors.Is(err, errIgnored) {
					c.decodeErrors.Add(1)
					c.log.Debug("skipping undecodable rtnetlink message", "type", m.Header.Type, "err", err)
				}
				continue
			}
			changed = changed || ch.changed
			flush = flush || ch.flush
		}
		if flush {
			// The kernel removes IPv4 routes of a downed link, or of a
			// subnet whose last address went, without telling anyone.
			fc, err := c.redumpRoutesAndNeighbors(st)
			if err != nil {
				return err
			}
			c.resyncs[ResyncFlush].Add(1)
			changed = changed || fc
		}
		if changed {
			c.publish(st)
		}
	}
}

// drain discards the messages queued on the event socket. Events that
// arrive after it returns are newer than the dump that follows, so
// replaying them on top of it is correct.
func (c *Collector) drain(ev *netlink.Conn) error {
	defer ev.SetReadDeadline(time.Time{})
	for range 1 << 16 { // bounded: under a storm, a later overflow resyncs again
		// An already-expired deadline fails before reading at all, so
		// give the (non-blocking in practice) read a moment.
		if err := ev.SetReadDeadline(time.Now().Add(5 * time.Millisecond)); err != nil {
			return err
		}
		_, err := ev.Receive()
		switch {
		case err == nil, errors.Is(err, unix.ENOBUFS):
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil
		default:
			return fmt.Errorf("drain rtnetlink events: %w", err)
		}
	}
	return nil
}

func (c *Collector) countEvent(t netlink.HeaderType) {
	if ctr, ok := c.events[eventType(t)]; ok {
		ctr.Add(1)
	}
}

// poll is the fallback when multicast is refused: dump every PollInterval.
func (c *Collector) poll(ctx context.Context, st *state) {
	c.polling.Store(true)
	t := time.NewTicker(c.opts.PollInterval)
	defer t.Stop()
	for {
		if err := c.resync(st); err != nil {
			if c.failingSince.Load() == 0 {
				c.failingSince.Store(c.now().UnixNano())
			}
			c.log.Warn("rtnetlink dump failed", "err", err)
		} else {
			c.failingSince.Store(0)
			c.publish(st)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Collector) setReceiveBuffer(conn *netlink.Conn) {
	size := c.opts.ReceiveBuffer
	raw, err := conn.SyscallConn()
	if err == nil {
		var serr error
		err = raw.Control(func(fd uintptr) {
			// FORCE needs CAP_NET_ADMIN; without it fall back to the
			// rmem_max-capped option.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
			if serr != nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
			}
		})
		if err == nil {
			err = serr
		}
	}
	if err != nil {
		c.log.Warn("cannot set rtnetlink receive buffer", "bytes", size, "err", err)
	}
}

// request returns the shared request socket, dialing it if needed.
// Callers hold reqMu.
func (c *Collector) requestLocked() (*netlink.Conn, error) {
	if c.req != nil {
		return c.req, nil
	}
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, c.config(0))
	if err != nil {
		return nil, fmt.Errorf("dial rtnetlink: %w", err)
	}
	c.req = conn
	return conn, nil
}

func (c *Collector) closeReq() {
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	if c.req != nil {
		c.req.Close()
		c.req = nil
	}
}

// execute sends one request and returns the replies. A failed socket is
// dropped so the next request re-dials.
func (c *Collector) execute(m netlink.Message, deadline time.Time) ([]netlink.Message, error) {
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	conn, err := c.requestLocked()
	if err != nil {
		return nil, err
	}
	if !deadline.IsZero() {
		_ = conn.SetDeadline(deadline)
		defer conn.SetDeadline(time.Time{})
	}
	msgs, err := conn.Execute(m)
	if err != nil {
		var oe *netlink.OpError
		if !errors.As(err, &oe) || oe.Err == nil || !isKernelReply(oe.Err) {
			conn.Close()
			c.req = nil
		}
		return nil, err
	}
	return msgs, nil
}

// isKernelReply tells a netlink error answer (the socket is fine) from a
// socket failure.
func isKernelReply(err error) bool {
	return errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) ||
		errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENODEV)
}

type marshaler interface{ MarshalBinary() ([]byte, error) }

// dump runs one dump request, retrying when the kernel marks it
// inconsistent (NLM_F_DUMP_INTR: the table changed while dumping).
func (c *Collector) dump(t netlink.HeaderType, body marshaler) ([]netlink.Message, error) {
	data, err := body.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var last error
	for range 5 {
		msgs, err := c.execute(netlink.Message{
			Header: netlink.Header{Type: t, Flags: netlink.Request | netlink.Dump},
			Data:   data,
		}, c.now().Add(10*time.Second))
		if err != nil {
			return nil, err
		}
		interrupted := false
		for _, m := range msgs {
			if m.Header.Flags&netlink.DumpInterrupted != 0 {
				interrupted = true
				break
			}
		}
		if !interrupted {
			return msgs, nil
		}
		last = fmt.Errorf("dump %d interrupted by concurrent changes", t)
	}
	return nil, last
}
