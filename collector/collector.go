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
//
// For one-shot use, NewStatic takes one dump without subscribing; Start
// runs a Collector until its first dump is in.
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

	"github.com/linkgate/linkgate/internal/clock"
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
	// VerifyInterval is the period of the anti-entropy check: a full dump
	// compared with the state, any divergence counted, logged and
	// repaired (default 60s; negative disables).
	VerifyInterval time.Duration
	Logger         *slog.Logger
	// Clock stamps snapshots, link changes and outages, and times Start's
	// wait (default clock.System). Socket deadlines and the pauses between
	// retries of kernel requests are real time whatever the clock.
	Clock clock.Clock
}

// Multicast groups the collector subscribes to.
const groups = unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR |
	unix.RTMGRP_IPV4_ROUTE | unix.RTMGRP_IPV6_ROUTE | unix.RTMGRP_NEIGH

// Resync reasons for linkgate_netlink_resyncs_total.
const (
	ResyncOverflow   = "overflow"   // ENOBUFS: events were dropped
	ResyncDrops      = "drops"      // the socket's drop counter rose (or an event was truncated) without ENOBUFS
	ResyncReconnect  = "reconnect"  // the event socket failed and was re-dialed
	ResyncFlush      = "flush"      // routes and neighbours re-dumped: the kernel may have flushed them silently
	ResyncDivergence = "divergence" // the anti-entropy check found the state wrong and repaired it
)

// Reasons for linkgate_netlink_dump_failures_total: failed dump attempts.
const (
	retryInterrupted = "interrupted" // NLM_F_DUMP_INTR: the table changed while dumping
	retryError       = "error"       // the dump request failed
)

// Anti-entropy outcomes for linkgate_netlink_verifications_total.
const (
	verifyOK       = "ok"       // the state matched a full dump
	verifyDiverged = "diverged" // it did not, and was repaired
	verifyBusy     = "busy"     // changes arrived during the dump: tried again later
)

var eventTypes = []string{"newlink", "dellink", "newaddr", "deladdr", "newroute", "delroute", "newneigh", "delneigh"}
var resyncReasons = []string{ResyncOverflow, ResyncDrops, ResyncReconnect, ResyncFlush, ResyncDivergence}
var retryReasons = []string{retryInterrupted, retryError}
var verifyResults = []string{verifyOK, verifyDiverged, verifyBusy}

// errSubscribeRefused means multicast is unavailable: use polling.
var errSubscribeRefused = errors.New("rtnetlink multicast subscription refused")

// Collector watches one network namespace. Create it with New, then
// start Run (or Start).
type Collector struct {
	opts  Options
	log   *slog.Logger
	clock clock.Clock

	snap atomic.Pointer[Snapshot]
	// mu serialises publishing (the event loop and SetRequired).
	mu       sync.Mutex
	required []string
	synced   chan struct{}
	syncOnce sync.Once

	// doubt, under mu, says why the state is unverified ("" when it is
	// verified); doubtSince is when that began.
	doubtReason string
	doubtSince  time.Time
	// verifiedUp is Network.Up of the last verified snapshot: the probe's
	// view while the state is in doubt.
	verifiedUp atomic.Bool

	events        map[string]*atomic.Uint64
	resyncs       map[string]*atomic.Uint64
	dumpRetries   map[string]*atomic.Uint64
	verifications map[string]*atomic.Uint64
	divergences   map[string]*atomic.Uint64
	dropped       atomic.Uint64
	decodeErrors  atomic.Uint64
	polling       atomic.Bool
	running       atomic.Bool
	// failingSince is set (unix nanos) while the event socket cannot be dialed.
	failingSince atomic.Int64
	// beatAt is when the event loop last turned (unix nanos).
	beatAt atomic.Int64
	// evSock is the current event socket, nil between sockets.
	evSock atomic.Pointer[eventSocket]

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
	testHookResync  func(reason string)
	// testHookDump: return true to have a dump attempt treated as
	// interrupted (NLM_F_DUMP_INTR).
	testHookDump func(t netlink.HeaderType) bool
	// testHooks are run by the event loop (see inLoop).
	testHooks chan func(*loop)
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
	if opts.VerifyInterval == 0 {
		opts.VerifyInterval = time.Minute
	}
	if opts.NetNS != "" {
		if _, err := os.Stat(opts.NetNS); err != nil {
			return nil, fmt.Errorf("network namespace: %w", err)
		}
	}
	c := &Collector{
		opts:          opts,
		log:           opts.Logger,
		clock:         clock.Or(opts.Clock),
		required:      slices.Clone(opts.Required),
		synced:        make(chan struct{}),
		events:        counters(append(eventTypes, "other")),
		resyncs:       counters(resyncReasons),
		dumpRetries:   counters(retryReasons),
		verifications: counters(verifyResults),
		divergences:   counters(divergenceObjects),
		testHooks:     make(chan func(*loop), 8),
		dialEvents:    func(cfg *netlink.Config) (*netlink.Conn, error) { return netlink.Dial(unix.NETLINK_ROUTE, cfg) },
	}
	c.snap.Store(&Snapshot{changed: make(chan struct{}), Network: NetworkStatus{Required: c.required}})
	return c, nil
}

func counters(names []string) map[string]*atomic.Uint64 {
	m := make(map[string]*atomic.Uint64, len(names))
	for _, n := range names {
		m[n] = new(atomic.Uint64)
	}
	return m
}

// Snapshot returns the current state. It never blocks and never dials.
func (c *Collector) Snapshot() *Snapshot { return c.snap.Load() }

// Synced is closed once the first full dump has been published.
func (c *Collector) Synced() <-chan struct{} { return c.synced }

// NetworkState reports whether the required network is up and a channel
// closed at the next change. It is the probe's view of the collector.
//
// While the state is unverified (events were lost and a resync is under
// way) it answers from the last verified state: the probe pauses only for
// an outage linkgate knows of, not for its own doubt. The readiness
// checks, which must not say "go" from stale state, fail meanwhile.
func (c *Collector) NetworkState() (up bool, changed <-chan struct{}) {
	s := c.snap.Load()
	if s.Verified || s.Version == 0 {
		return s.Network.Up, s.changed
	}
	return c.verifiedUp.Load(), s.changed
}

// stuckAfter: an event loop that has not turned for this long is stuck
// (it wakes at least every heartbeat).
const stuckAfter = 30 * time.Second

// Health is the collector's state for /healthz.
type Health struct {
	// Alive: the event loop runs, turns, and has (or recently had) a
	// kernel connection. A restart could help when it is false.
	Alive bool
	// Problem says why Alive is false.
	Problem string
	// Verified: the state is known to equal the kernel's. When false,
	// Doubt says why and DoubtSince when it began. A restart would not
	// help: linkgate is already rebuilding the state.
	Verified   bool
	Doubt      string
	DoubtSince time.Time
}

// Health reports liveness and whether the state is verified.
func (c *Collector) Health() Health {
	now := c.now()
	h := Health{Alive: true}
	switch {
	case !c.running.Load():
		h.Alive, h.Problem = false, "event loop not running"
	case c.failingSince.Load() != 0 && now.Sub(time.Unix(0, c.failingSince.Load())) >= stuckAfter:
		h.Alive, h.Problem = false, "cannot open an rtnetlink socket since "+time.Unix(0, c.failingSince.Load()).UTC().Format(time.RFC3339)
	case now.Sub(time.Unix(0, c.beatAt.Load())) >= max(stuckAfter, 3*c.opts.PollInterval):
		h.Alive, h.Problem = false, "event loop stuck since "+time.Unix(0, c.beatAt.Load()).UTC().Format(time.RFC3339)
	}
	s := c.snap.Load()
	h.Verified, h.Doubt, h.DoubtSince = s.Verified, s.Doubt, s.DoubtSince
	if s.Version == 0 {
		h.Doubt = "no state yet: first dump under way"
	}
	return h
}

// Alive reports whether /healthz should say ok (see Health).
func (c *Collector) Alive() bool { return c.Health().Alive }

// beat records that the event loop turned.
func (c *Collector) beat() { c.beatAt.Store(c.now().UnixNano()) }

func (c *Collector) now() time.Time { return c.clock.Now() }

// SetRequired replaces the required interfaces and republishes the network
// status (used by required_interfaces: auto and by config reload).
func (c *Collector) SetRequired(names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(names, c.required) {
		return
	}
	c.required = slices.Clone(names)
	c.republishLocked()
}

// republishLocked publishes the current tables again (for a change of
// the required list or of doubt). Callers hold mu.
func (c *Collector) republishLocked() {
	prev := c.snap.Load()
	next := *prev
	next.changed = make(chan struct{})
	c.publishLocked(&next, prev)
}

// publish builds and swaps in a snapshot of st. verified: st was just
// rebuilt from a consistent dump, which ends any doubt.
func (c *Collector) publish(st *state, verified bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if verified {
		c.doubtReason, c.doubtSince = "", time.Time{}
	}
	c.publishLocked(st.snapshot(), c.snap.Load())
	c.syncOnce.Do(func() { close(c.synced) })
}

// doubt marks the state unverified, from now until the next verified
// publish, and publishes that at once so that consumers fail closed
// without waiting for the resync. The first reason of an episode stays.
func (c *Collector) doubt(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.doubtReason != "" {
		return
	}
	c.doubtReason, c.doubtSince = reason, c.now()
	if c.snap.Load().Version == 0 {
		return // nothing published yet: checks already fail for that
	}
	c.republishLocked()
}

func (c *Collector) publishLocked(next, prev *Snapshot) {
	now := c.now()
	next.Version = prev.Version + 1
	next.Taken = now
	next.Verified = c.doubtReason == ""
	next.Doubt, next.DoubtSince = c.doubtReason, c.doubtSince
	next.Network = aggregate(next.Links, c.required, prev.Network, prev.Version == 0, now)
	if next.Verified {
		c.verifiedUp.Store(next.Network.Up)
	}
	c.snap.Store(next)
	close(prev.changed)
}

// inLoop has the event loop run f between reads, and wakes it. For tests.
func (c *Collector) inLoop(f func(*loop)) {
	c.testHooks <- f
	if ev := c.evSock.Load(); ev != nil {
		_ = ev.conn.SetReadDeadline(time.Unix(1, 0))
	}
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
		c.closeSockets()
	}()
	st := newState()
	backoff := 100 * time.Millisecond
	first := true
	c.beat()
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
		// Events may have been missed from here until the new socket is
		// subscribed: fail closed until its dump is in.
		c.doubt(doubtLostEvents + " (event socket failed)")
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
		c.beat()
		backoff = min(backoff*2, 30*time.Second)
	}
}

// startTimeout bounds Start's wait for the first dump, which takes
// milliseconds.
const startTimeout = 10 * time.Second

// Start runs Run in a goroutine and returns once the first full dump is
// published, so that callers judge real state, not the empty initial
// snapshot. If Run fails first, Start returns its error; if no state
// comes within 10s (on Options.Clock), or ctx ends first, it stops Run
// and fails. stop cancels Run, waits for it to return and returns its
// error (nil after a normal cancel); it may be called more than once.
// Start (or Run) may be called once per Collector.
func (c *Collector) Start(ctx context.Context) (stop func() error, err error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t := c.clock.NewTimer(startTimeout)
	defer t.Stop()
	select {
	case <-c.synced:
		return stop, nil
	case err = <-done:
		cancel()
		if err == nil { // Run returns nil only when ctx ended
			err = fmt.Errorf("no kernel network state: %w", context.Cause(ctx))
		}
		return nil, err
	case <-t.C():
		err = fmt.Errorf("no kernel network state after %s", startTimeout)
	case <-ctx.Done():
		err = fmt.Errorf("no kernel network state: %w", context.Cause(ctx))
	}
	if rerr := stop(); rerr != nil {
		err = rerr
	}
	return nil, err
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

// closeSockets closes the request socket and the namespace.
func (c *Collector) closeSockets() error {
	c.closeReq()
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	if c.nsFile == nil {
		return nil
	}
	err := c.nsFile.Close()
	c.nsFile = nil
	return err
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
		c.beat()
		if k, err := c.dumpAll(ctx); err != nil {
			if c.failingSince.Load() == 0 {
				c.failingSince.Store(c.now().UnixNano())
			}
			c.doubt("dump failed: " + err.Error())
			c.log.Warn("rtnetlink dump failed", "err", err)
		} else {
			c.failingSince.Store(0)
			st.adopt(k, c.now())
			c.publish(st, true)
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

// errDumpInterrupted: every attempt of a dump was marked inconsistent.
var errDumpInterrupted = errors.New("dump interrupted by concurrent changes")

// dumpAttempts bounds the immediate retries of an interrupted dump. Past
// them the caller retries later (see loop.resync); the socket is fine.
const dumpAttempts = 3

// dumpTimeout bounds one dump request.
const dumpTimeout = 10 * time.Second

// dump runs one dump request, retrying at once when the kernel marks it
// inconsistent (NLM_F_DUMP_INTR: the table changed while dumping). Each
// attempt is bounded by dumpTimeout, or by ctx's deadline if sooner.
func (c *Collector) dump(ctx context.Context, t netlink.HeaderType, body marshaler) ([]netlink.Message, error) {
	data, err := body.MarshalBinary()
	if err != nil {
		return nil, err
	}
	for range dumpAttempts {
		msgs, err := c.execute(netlink.Message{
			Header: netlink.Header{Type: t, Flags: netlink.Request | netlink.Dump},
			Data:   data,
		}, requestDeadline(ctx, dumpTimeout))
		if err != nil {
			c.dumpRetries[retryError].Add(1)
			return nil, err
		}
		interrupted := c.testHookDump != nil && c.testHookDump(t)
		for _, m := range msgs {
			if interrupted || m.Header.Flags&netlink.DumpInterrupted != 0 {
				interrupted = true
				break
			}
		}
		if !interrupted {
			return msgs, nil
		}
		c.dumpRetries[retryInterrupted].Add(1)
	}
	return nil, errDumpInterrupted
}

// requestDeadline is the deadline of a request to the kernel: limit from
// now, or ctx's deadline if sooner. It is a socket deadline, so it reads
// the real time, not Options.Clock.
func requestDeadline(ctx context.Context, limit time.Duration) time.Time {
	d := time.Now().Add(limit)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		return cd
	}
	return d
}
