package collector

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Timing of the event loop. None of these is a poll of the kernel: they
// bound how long the loop may defer work while events keep arriving.
const (
	// publishMaxDelay: while events arrive back to back, a snapshot is
	// published at least this often; otherwise as soon as the queue is
	// empty.
	publishMaxDelay = 50 * time.Millisecond
	// flushInterval: at most one route and neighbour re-dump per interval
	// however many links go down, done when the queue is empty, or after
	// one interval under a continuous stream.
	flushInterval = 100 * time.Millisecond
	// resyncRetry bounds the pause between attempts of a resync whose dump
	// was interrupted or failed. The socket is kept: only a socket error
	// re-dials.
	resyncRetryMin = 10 * time.Millisecond
	resyncRetryMax = 250 * time.Millisecond
	// heartbeat is the longest the loop blocks, so that Alive can tell a
	// quiet loop from a stuck one.
	heartbeat = 5 * time.Second
	// verifyBusyRetry: an anti-entropy check that met concurrent changes
	// is tried again after this, rather than compared against moving state.
	verifyBusyRetry = time.Second
	// verifyConfirm: how long after a comparison that found differences
	// the next one confirms them, longer than linkwatch's delay (1s).
	verifyConfirm = 1500 * time.Millisecond
	maxConfirms   = 3
	// readBatch: datagrams read between looks at the timers.
	readBatch = 256
)

// Reasons for doubt, as they appear in check failures and /healthz?verbose.
const doubtLostEvents = "resyncing after lost events"

// loop is one event socket's life: subscribe, dump, follow.
type loop struct {
	c  *Collector
	ev *eventSocket
	st *state

	msgs []netlink.Message // scratch for parseMessages

	// dirty: state changed since the last publish.
	dirty      bool
	dirtySince time.Time

	// flushPending: a change may have made the kernel drop routes or
	// neighbours silently; re-dump them (coalesced, see flushInterval).
	flushPending bool
	flushSince   time.Time
	lastFlush    time.Time

	// verifyAt is when the next anti-entropy check is due (zero: never).
	verifyAt time.Time

	// lost, when set, is a loss found outside a read (see lose).
	lost string

	// suspects are the differences the last anti-entropy comparison
	// found, to be confirmed; confirms counts comparisons in a row that
	// found differences but none confirmed.
	suspects divergence
	confirms int
}

// lose records that events were lost, for a resync at the next turn.
func (l *loop) lose(reason string) { l.lost = reason }

// watch subscribes, dumps, and applies events until the socket fails or
// ctx ends.
func (c *Collector) watch(ctx context.Context, st *state, first bool) error {
	conn, err := c.dialEvents(c.config(groups))
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPROTONOSUPPORT) ||
			errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("%w: %w", errSubscribeRefused, err)
		}
		return fmt.Errorf("dial rtnetlink events: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c.setReceiveBuffer(conn)
	ev, err := newEventSocket(conn)
	if err != nil {
		return fmt.Errorf("rtnetlink event socket: %w", err)
	}
	if ev.noMeminfo {
		c.log.Warn("kernel has no SO_MEMINFO: drops it does not report as ENOBUFS go unseen until the next anti-entropy check")
	}
	c.evSock.Store(ev)
	defer c.evSock.Store(nil)
	// The kernel answers: a resync that takes long is doubt (reported as
	// unverified state), not a liveness failure.
	c.failingSince.Store(0)

	l := &loop{c: c, ev: ev, st: st}
	// Subscribed: now dump. Events queued meanwhile are applied after.
	reason := ""
	if !first {
		reason = ResyncReconnect
	}
	if err := l.resync(ctx, reason); err != nil {
		return err
	}
	c.polling.Store(false)
	return l.run(ctx)
}

// resync rebuilds the state from a full dump, consistent with the event
// stream: queued events (which may predate a loss) are discarded first,
// and a dump during which the kernel dropped events is done again. Until
// it succeeds the published state is marked unverified. Interrupted or
// failed dumps are retried with a short, bounded pause on the same socket.
func (l *loop) resync(ctx context.Context, reason string) error {
	c := l.c
	if reason != "" {
		c.resyncs[reason].Add(1)
		c.doubt(doubtLostEvents + " (" + reason + ")")
	}
	if h := c.testHookResync; h != nil {
		h(reason)
	}
	wait := resyncRetryMin
	for {
		c.beat()
		err := l.ev.drain()
		if err != nil {
			return err
		}
		if _, err := l.ev.newDrops(); err != nil {
			return err
		}
		k, derr := c.dumpAll(ctx)
		if derr == nil {
			drops, err := l.ev.newDrops()
			if err != nil {
				return err
			}
			if drops == 0 {
				l.st.adopt(k, c.now())
				l.flushPending, l.dirty = false, false
				l.lastFlush = c.now()
				l.scheduleVerify()
				c.publish(l.st, true)
				return nil
			}
			c.dropped.Add(uint64(drops))
			derr = fmt.Errorf("%d events dropped during the dump", drops)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.log.Debug("resync incomplete; retrying", "err", derr, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, resyncRetryMax)
	}
}

func (l *loop) scheduleVerify() {
	if iv := l.c.opts.VerifyInterval; iv > 0 {
		l.verifyAt = l.c.now().Add(iv)
	}
}

// run applies events until the socket fails or ctx ends.
func (l *loop) run(ctx context.Context) error {
	c := l.c
	batch, wait := 0, false
	for {
		c.beat()
		if h := c.testHookReceive; h != nil {
			h()
		}
		if l.runHooks() {
			wait = false
		}
		deadline := wait
		if deadline {
			// Idle: block until the next datagram or the next timer.
			if err := l.ev.conn.SetReadDeadline(l.nextTimer()); err != nil {
				return err
			}
			wait = len(c.testHooks) == 0 // a hook queued before the deadline was set
		}
		b, err := l.ev.next(wait)
		if deadline {
			_ = l.ev.conn.SetReadDeadline(time.Time{})
		}
		wait = false
		empty, lost := false, ""
		switch {
		case err == nil:
			l.handle(b)
			if batch++; batch < readBatch {
				continue
			}
		case errors.Is(err, errQueueEmpty), errors.Is(err, os.ErrDeadlineExceeded):
			empty = true
		case errors.Is(err, unix.ENOBUFS):
			c.log.Warn("rtnetlink receive queue overflowed; events lost, re-dumping")
			lost = ResyncOverflow
		case errors.Is(err, errTruncated):
			c.log.Warn("rtnetlink event larger than the receive buffer; re-dumping")
			lost = ResyncDrops
		default:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("receive rtnetlink events: %w", err)
		}
		batch = 0
		drops, err := l.ev.newDrops()
		if err != nil {
			return err
		}
		if drops > 0 {
			c.dropped.Add(uint64(drops))
			if lost == "" {
				c.log.Warn("kernel dropped rtnetlink events without reporting an overflow; re-dumping", "dropped", drops)
				lost = ResyncDrops
			}
		}
		if lost == "" {
			lost = l.lost
		}
		l.lost = ""
		if lost != "" {
			if err := l.resync(ctx, lost); err != nil {
				return ignoreCancel(ctx, err)
			}
			continue
		}
		l.timers(ctx, empty)
		if !empty {
			continue
		}
		if l.verifyDue() {
			if err := l.verify(ctx); err != nil {
				return ignoreCancel(ctx, err)
			}
			continue
		}
		wait = true
	}
}

// ignoreCancel: an error caused by ctx ending is the normal way out.
func ignoreCancel(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// handle applies one datagram's messages.
func (l *loop) handle(b []byte) {
	c := l.c
	msgs, perr := parseMessages(b, l.msgs)
	l.msgs = msgs
	now := c.now()
	for _, m := range msgs {
		c.countEvent(m.Header.Type)
		ch, err := l.st.apply(m, now)
		if err != nil {
			if !errors.Is(err, errIgnored) {
				c.decodeErrors.Add(1)
				c.log.Debug("skipping undecodable rtnetlink message", "type", m.Header.Type, "err", err)
			}
			continue
		}
		if ch.changed && !l.dirty {
			l.dirty, l.dirtySince = true, now
		}
		if ch.flush && !l.flushPending {
			l.flushPending, l.flushSince = true, now
		}
	}
	if perr != nil {
		c.decodeErrors.Add(1)
		c.log.Debug("skipping malformed rtnetlink datagram", "err", perr)
	}
}

// timers does the deferred work that is due: the coalesced route and
// neighbour re-dump, and publishing.
func (l *loop) timers(ctx context.Context, empty bool) {
	c := l.c
	now := c.now()
	if l.flushPending && now.Sub(l.lastFlush) >= flushInterval && (empty || now.Sub(l.flushSince) >= flushInterval) {
		changed, err := c.redumpRoutesAndNeighbors(ctx, l.st)
		if err != nil {
			// Not a socket failure: try again at the next interval.
			c.log.Debug("route and neighbour re-dump failed; retrying", "err", err)
			l.lastFlush = now
		} else {
			c.resyncs[ResyncFlush].Add(1)
			l.flushPending = false
			l.lastFlush = now
			if changed && !l.dirty {
				l.dirty, l.dirtySince = true, now
			}
		}
	}
	if l.dirty && (empty || now.Sub(l.dirtySince) >= publishMaxDelay) {
		l.dirty = false
		c.publish(l.st, false)
	}
}

func (l *loop) nextTimer() time.Time {
	now := time.Now()
	t := now.Add(heartbeat)
	if l.flushPending {
		t = minTime(t, now.Add(max(0, flushInterval-l.c.now().Sub(l.lastFlush))))
	}
	if !l.verifyAt.IsZero() {
		t = minTime(t, now.Add(max(0, l.verifyAt.Sub(l.c.now()))))
	}
	// An already-expired deadline fails before reading: give it a moment.
	return maxTime(t, now.Add(time.Millisecond))
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (l *loop) verifyDue() bool {
	return !l.verifyAt.IsZero() && !l.flushPending && !l.dirty && !l.c.now().Before(l.verifyAt)
}

// verify is the anti-entropy check: a full dump compared with the state.
// It runs only with an empty queue and compares only if no event arrived
// during the dump. Even then the kernel can be ahead of its own
// notifications (linkwatch delays a carrier change's RTM_NEWLINK by up to
// a second), so a difference is confirmed by a second comparison
// verifyConfirm later: only what differs the same way twice is a
// divergence, counted, logged and repaired.
func (l *loop) verify(ctx context.Context) error {
	c := l.c
	k, err := c.dumpAll(ctx)
	if err != nil {
		c.verifications[verifyBusy].Add(1)
		c.log.Debug("anti-entropy dump failed; retrying", "err", err)
		l.verifyAt = c.now().Add(verifyBusyRetry)
		return nil
	}
	drops, err := l.ev.newDrops()
	if err != nil {
		return err
	}
	if drops > 0 {
		c.dropped.Add(uint64(drops))
		return l.resync(ctx, ResyncDrops)
	}
	busy, err := l.ev.queued()
	if err != nil {
		return err
	}
	if busy {
		c.verifications[verifyBusy].Add(1)
		l.verifyAt = c.now().Add(verifyBusyRetry)
		return nil
	}
	d := l.st.diff(k)
	suspects := l.suspects
	l.suspects = nil
	if len(d) == 0 {
		c.verifications[verifyOK].Add(1)
		l.scheduleVerify()
		return nil
	}
	confirmed := d.persisting(suspects)
	if len(confirmed) == 0 {
		// New, or changed since the last look: look again shortly,
		// unless this has gone on for a while (a stream of changes).
		if l.confirms++; l.confirms <= maxConfirms {
			l.suspects = d
			l.verifyAt = c.now().Add(verifyConfirm)
			return nil
		}
		l.confirms = 0
		c.verifications[verifyBusy].Add(1)
		l.scheduleVerify()
		return nil
	}
	l.confirms = 0
	c.verifications[verifyDiverged].Add(1)
	counts := confirmed.counts()
	for obj, n := range counts {
		c.divergences[obj].Add(uint64(n))
	}
	c.log.Error("snapshot diverged from the kernel; repaired from a full dump",
		"links", counts[objectLink], "addresses", counts[objectAddress],
		"routes", counts[objectRoute], "neighbors", counts[objectNeighbor],
		"differences", confirmed.details())
	c.resyncs[ResyncDivergence].Add(1)
	l.st.adopt(k, c.now())
	l.dirty = false
	c.publish(l.st, true)
	l.scheduleVerify()
	return nil
}

// runHooks runs functions tests queue for the loop (see Collector.inLoop)
// and reports whether there were any.
func (l *loop) runHooks() bool {
	ran := false
	for {
		select {
		case f := <-l.c.testHooks:
			f(l)
			ran = true
		default:
			return ran
		}
	}
}
