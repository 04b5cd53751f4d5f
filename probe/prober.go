// Package probe owns the question "can we talk to vCenter right now, and if
// not, why?". It keeps one logged-in govmomi session per vCenter endpoint,
// probes it with one cheap authenticated call, classifies every failure as
// transient or permanent with a named kind, retries on a jittered
// exponential backoff, parks while the network is known to be down, and
// publishes the result as Status snapshots and Prometheus metrics.
//
// It never logs, labels or reports a password: the password goes only into
// the body of the Login request, URLs with user info are refused, and
// errors are built from the operation, the target (host[:port]) and the
// underlying cause, none of which contains it. Nothing needs redacting:
// a target's name is its host[:port], which redact.Target shows as it is,
// and the URL that net/http puts in its errors is the target's, which has
// no user info, query or fragment.
//
// Failed logins are capped per target (Config.MaxFailedLogins within
// Config.FailedLoginWindow) so that linkgate cannot lock out the account
// through vCenter SSO's lockout policy.
//
// With Config.Inventory, each target's ESXi hosts and datastores are
// watched over the same session, event-driven (a property collector's
// WaitForUpdatesEx on a container view; watch.go), and published as
// Inventory snapshots that say whether they can be trusted (Verified):
// the hosts a migration reads disks from, and their datastores.
package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
)

// fileCheckInterval is how often the password and CA files are checked for
// a change while a target is down with a permanent error. Stat and a small
// read are cheap, and unlike inotify on the file they see the symlink swap
// Kubernetes uses to update a mounted secret.
const fileCheckInterval = 2 * time.Second

// Network reports whether the required network is up; changed is closed at
// the next change. A change may leave up as it was (collector.Collector
// signals every snapshot); the prober acts only on transitions.
type Network interface {
	NetworkState() (up bool, changed <-chan struct{})
}

// Status is the verdict on one target, as (*Prober).Status and ProbeOnce
// report it: a snapshot, which later attempts do not change. It holds no
// secret, so every field may be shown as it is.
type Status struct {
	// Target names the endpoint: the host[:port] of its URL, as in the
	// target label of the metrics and in every message. It never holds
	// user info, a path or a query (Config refuses a URL with user info).
	Target string
	// Up says the target is reachable. A success sets it. A failure
	// clears it at once when retrying soon cannot help (Permanent), and
	// otherwise only once the fast retries of the connect cycle
	// (Config.MaxRetries) have failed too: during those retries Up stays
	// as it was while Class already names the failure. A pause longer
	// than Config.MaxNetworkWait clears it as well. False before the
	// first success.
	Up bool
	// Paused says probing is parked because the Network is down (with
	// Config.PauseOnNetworkDown): no attempt is made until it is back.
	Paused bool
	// LastAttempt is when the last recorded attempt started; zero before
	// the first. An attempt abandoned because the network went down under
	// it is not recorded.
	LastAttempt time.Time
	// LastSuccess is when the last successful attempt ended; zero if none.
	LastSuccess time.Time
	// Class says whether the last failure is transient or permanent, and
	// Kind names its cause (one of the Kind constants, as in the
	// errors_total metric). Both are empty when the last attempt
	// succeeded, and before the first. A pause longer than
	// Config.MaxNetworkWait sets them to transient/network_down without
	// an attempt.
	Class Class
	Kind  Kind
	// Reason is the text of the last failure's error, empty when Class
	// is. It never contains a secret.
	Reason string
	// Permanent is Class == Permanent: only a change (password, CA,
	// URL) or time can fix the failure; the target is re-checked at the
	// slow cadence, or at once when the password or CA file changes.
	Permanent bool
	// ConsecutiveFailures counts the failed attempts since the last
	// success; nothing else resets it.
	ConsecutiveFailures int
	// Backoff is the wait before the next attempt after a failure: the
	// backoff step, the slow cadence, or longer while the failed-login
	// limit holds logins back. 0 while healthy, and from the start of a
	// pause until the next failure.
	Backoff time.Duration
	// About is what the vCenter says about itself (ServiceContent.about)
	// as of the last success, kept through later failures; zero before
	// the first. ProbeOnce sets it whenever its login succeeded, even if
	// the probe then failed.
	About About
}

// attempted records an attempt of the schedule that started at start
// and ended at end, and what the backoff policy made of it.
func (s *Status) attempted(start, end time.Time, f failure, next plan, about *About) {
	s.LastAttempt = start
	if f.ok() {
		s.succeeded(end, about)
		return
	}
	s.failed(f)
	if next.down {
		s.Up = false
	}
	s.Backoff = next.wait
}

// succeeded records a successful attempt that ended at end; about, when
// not nil, replaces About.
func (s *Status) succeeded(end time.Time, about *About) {
	s.Up, s.Paused, s.LastSuccess = true, false, end
	s.setFailure(failure{})
	s.ConsecutiveFailures, s.Backoff = 0, 0
	if about != nil {
		s.About = *about
	}
}

// failed records a failed attempt.
func (s *Status) failed(f failure) {
	s.ConsecutiveFailures++
	s.setFailure(f)
}

// setFailure sets the fields that describe the last failure; the zero
// failure clears them.
func (s *Status) setFailure(f failure) {
	s.Class, s.Kind, s.Reason, s.Permanent = f.class, f.kind, f.reason, f.class == Permanent
}

// Option configures a Prober.
type Option func(*Prober)

// WithClock replaces the wall clock of the schedule (nil: clock.System).
func WithClock(c clock.Clock) Option { return func(p *Prober) { p.clock = c } }

// WithRand replaces the jitter source.
func WithRand(src rand.Source) Option {
	return func(p *Prober) { p.jitter = &jitter{r: rand.New(src)} }
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(p *Prober) { p.log = l } }

// WithDialContext replaces how TCP connections to vCenter are dialed (a
// test dials from inside a network namespace with it). TLS is still done
// by the prober on top of the returned connection.
func WithDialContext(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(p *Prober) { p.dial = dial }
}

// Prober probes a set of vCenter endpoints. It implements
// prometheus.Collector.
type Prober struct {
	cfg     Config
	network Network
	clock   clock.Clock
	jitter  *jitter
	log     *slog.Logger
	dial    DialFunc
	pins    [][]byte
	targets []*target
	metrics *metrics

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every Status change
	running bool

	// The inventory watch (Config.Inventory); see inventory.go.
	hostFilter hostFilter
	invWait    time.Duration // MaxWaitSeconds of one WaitForUpdatesEx
	vmTTL      time.Duration // how long a resolved VM placement is reused (LookupVM)
	vmScanMin  time.Duration // at most one scan of a target's VM names this often
	invMu      sync.Mutex
	invChanged chan struct{} // closed and replaced on every Inventory change
}

type target struct {
	endpoint
	user   string
	creds  *credentials
	logins *loginLimiter

	// Guarded by Prober.mu.
	st Status
	// The logged-in session (nil: none; the session_active metric), and
	// for the inventory watch the successful attempts so far and a
	// channel closed and replaced when either or st changes.
	sess      *conn
	successes uint64
	sig       chan struct{}

	// kick asks the schedule for an attempt now, while it is healthy:
	// the inventory watch failed, and the session may be gone.
	kick chan struct{}

	// Guarded by Prober.invMu.
	inv *Inventory

	// LookupVM's caches.
	vms *vmCache

	// Owned by the target's Run goroutine.
	conn      *conn
	files     [2]fingerprint // password and CA file contents as of the last attempt
	heldUntil time.Time      // the last hold of the failed-login limit that was logged
}

// New checks cfg and builds a Prober; nothing is dialed until Run or
// ProbeOnce. A nil network means always up.
func New(cfg Config, network Network, opts ...Option) (*Prober, error) {
	cfg = cfg.withDefaults()
	eps, err := cfg.targets()
	if err != nil {
		return nil, err
	}
	pins, _ := parseThumbprints(cfg.Thumbprint) // checked by targets
	hosts, _ := cfg.hostFilter()                // checked by targets
	p := &Prober{
		cfg:        cfg,
		network:    network,
		log:        slog.Default(),
		pins:       pins,
		changed:    make(chan struct{}),
		hostFilter: hosts,
		invWait:    inventoryMaxWait,
		vmTTL:      vmPlacementTTL,
		vmScanMin:  vmNameScanInterval,
		invChanged: make(chan struct{}),
	}
	for _, o := range opts {
		o(p)
	}
	p.clock = clock.Or(p.clock)
	if p.jitter == nil {
		p.jitter = &jitter{r: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	}
	if cfg.DisableJitter {
		p.jitter.off = true
	}
	if p.dial == nil {
		d := &net.Dialer{Timeout: cfg.Timeout}
		p.dial = d.DialContext
	}
	var names []string
	for _, ep := range eps {
		t := &target{
			endpoint: ep,
			user:     cfg.User,
			creds:    &credentials{file: cfg.PasswordFile, literal: newSecret(cfg.Password)},
			logins:   newLoginLimiter(cfg.MaxFailedLogins, cfg.FailedLoginWindow),
			sig:      make(chan struct{}),
			kick:     make(chan struct{}, 1),
			vms:      newVMCache(),
		}
		t.st.Target = ep.name
		if cfg.Inventory {
			t.inv = &Inventory{Target: ep.name, Doubt: doubtNotYet, DoubtSince: p.clock.Now()}
		}
		p.targets = append(p.targets, t)
		names = append(names, ep.name)
	}
	// The credentials hold it now; a printed Prober must not.
	p.cfg.Password = ""
	p.metrics = newMetrics(p)
	if cfg.Insecure {
		p.log.Warn("vCenter TLS certificate verification is disabled (Insecure)", "targets", names)
	}
	return p, nil
}

// Run probes every target until ctx is done, then logs out and returns nil.
// When it returns, every goroutine it started has stopped. It may be
// called once.
func (p *Prober) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		return errors.New("probe: Run called twice")
	}
	p.running = true
	p.mu.Unlock()

	var wg sync.WaitGroup
	for _, t := range p.targets {
		wg.Go(func() { p.runTarget(ctx, t) })
	}
	wg.Wait()
	return nil
}

// runTarget runs the schedule of one target and, with Config.Inventory,
// its inventory watch, until ctx is done; then it logs out, after the
// watch has released what it holds on the session.
func (p *Prober) runTarget(ctx context.Context, t *target) {
	var wg sync.WaitGroup
	if p.cfg.Inventory {
		wg.Go(func() { p.watchInventory(ctx, t) })
	}
	p.loop(ctx, t)
	wg.Wait()
	p.endSession(t, p.networkUp(), min(p.cfg.Timeout, shutdownLogout))
}

// Status returns a snapshot per target, in Config.URLs order, and a channel
// closed at the next change.
func (p *Prober) Status() ([]Status, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Status, len(p.targets))
	for i, t := range p.targets {
		out[i] = t.st
	}
	return out, p.changed
}

// ProbeOnce connects, logs in, probes and logs out once per target,
// concurrently, without retries and without touching the Run state (the
// counters and the duration histogram do count it). It is for one-shot
// checks such as `linkgate check`. A Status it returns has
// ConsecutiveFailures 1 or 0 and no Backoff.
func (p *Prober) ProbeOnce(ctx context.Context) []Status {
	out := make([]Status, len(p.targets))
	var wg sync.WaitGroup
	for i, t := range p.targets {
		wg.Go(func() { out[i] = p.probeOnce(ctx, t) })
	}
	wg.Wait()
	return out
}

func (p *Prober) probeOnce(ctx context.Context, t *target) Status {
	st := Status{Target: t.name, LastAttempt: p.clock.Now()}
	c, err := p.connect(ctx, t)
	if err == nil {
		err = opError("probe", t.name, c.probe(ctx, p.cfg.Timeout))
		st.About = c.about
		c.close(true, p.cfg.Timeout)
	}
	end := p.clock.Now()
	f := classifyFailure(err)
	p.metrics.probed(t.name, end.Sub(st.LastAttempt), f)
	if f.ok() {
		st.succeeded(end, nil)
	} else {
		st.failed(f)
	}
	return st
}

// loop is the schedule of one target:
//
//	park while the network is down → wait until due → attempt → record → again
//
// cycle counts the failed attempts of the current connect cycle; it picks
// the backoff step and is reset by a success, by the network coming back
// after a transient failure, and by a watched file's content changing.
// Every pass goes through untilDue, so no wake-up can send a login the
// failed-login limit holds back.
func (p *Prober) loop(ctx context.Context, t *target) {
	var (
		cycle int
		due   time.Time // no attempt before
		last  outcome
	)
	for {
		resumed, ok := p.park(ctx, t)
		if !ok {
			return
		}
		if resumed && !last.rejected {
			// The outage explains the failures: start over, at once. A
			// rejected password keeps its re-check time: the network had
			// nothing to do with it, and a login spent now is one a new
			// password may have to wait for.
			cycle, due = 0, time.Time{}
		}
		if wait := p.untilDue(t, due, last.failing); wait > 0 {
			var kick <-chan struct{}
			if !last.failing {
				// A failing schedule keeps its backoff: it is already
				// finding out.
				kick = t.kick
			}
			switch p.sleep(ctx, t, wait, last.failing && !last.rejected, last.permanent, kick) {
			case wakeDone:
				return
			case wakeReset:
				cycle, due = 0, time.Time{}
				last.permanent, last.rejected = false, false
			case wakeNow:
				due = time.Time{}
			case wakeNext:
			}
			continue
		}
		start := p.clock.Now()
		err := p.attempt(ctx, t)
		if ctx.Err() != nil {
			return
		}
		if err != nil && p.pausing() && !p.networkUp() {
			// The network went away under the attempt: not the target's
			// fault, so not counted. park takes over.
			p.log.Debug("vCenter attempt abandoned: network down", "target", t.name)
			continue
		}
		if err == nil {
			cycle = 0
		} else {
			cycle++
		}
		last = p.record(t, start, err, cycle)
		due = p.clock.Now().Add(last.wait)
	}
}

// outcome is what the schedule keeps of an attempt.
type outcome struct {
	wait      time.Duration // before the next attempt
	failing   bool          // the attempt failed
	permanent bool          // only time or a changed password or CA file can fix it
	rejected  bool          // vCenter rejected the login (auth)
}

// untilDue returns how long to wait before the next attempt: until due,
// and, when the attempt must log in, until the failed-login limit allows
// a login.
func (p *Prober) untilDue(t *target, due time.Time, failing bool) time.Duration {
	now := p.clock.Now()
	wait := due.Sub(now)
	if t.conn != nil {
		return wait
	}
	at := t.logins.allowedAt(now)
	if held := at.Sub(now); held > 0 && held > wait {
		wait = held
		if failing {
			p.update(t, func(s *Status) { s.Backoff = wait })
		}
		if !at.Equal(t.heldUntil) {
			t.heldUntil = at
			p.log.Warn("vCenter login held back: failed-login limit reached", "target", t.name,
				"max_failed_logins", p.cfg.MaxFailedLogins, "window", p.cfg.FailedLoginWindow, "next_login_in", wait)
		}
	}
	return wait
}

func (p *Prober) pausing() bool { return p.network != nil && p.cfg.PauseOnNetworkDown }

func (p *Prober) networkUp() bool {
	if p.network == nil {
		return true
	}
	up, _ := p.network.NetworkState()
	return up
}

// park blocks while the network is down (when pausing is on). resumed
// says it did park; ok is false when ctx ended.
func (p *Prober) park(ctx context.Context, t *target) (resumed, ok bool) {
	if ctx.Err() != nil {
		return false, false
	}
	if !p.pausing() {
		return false, true
	}
	up, changed := p.network.NetworkState()
	if up {
		return false, true
	}
	since := p.clock.Now()
	p.update(t, func(s *Status) { s.Paused, s.Backoff = true, 0 })
	p.log.Info("network down: vCenter probe paused", "target", t.name)

	limit := p.clock.NewTimer(p.cfg.MaxNetworkWait)
	defer limit.Stop()
	limitC := limit.C()
	for !up {
		select {
		case <-ctx.Done():
			return false, false
		case <-changed:
			up, changed = p.network.NetworkState()
		case <-limitC:
			limitC = nil
			// Still waiting, but an outage this long is news.
			f := failure{class: Transient, kind: KindNetworkDown,
				reason: fmt.Sprintf("network down for more than %v", p.cfg.MaxNetworkWait)}
			// Count first: whoever sees the new status sees the count.
			p.metrics.failed(t.name, f)
			p.update(t, func(s *Status) { s.Up = false; s.setFailure(f) })
			p.log.Warn("vCenter unreachable: "+f.reason, "target", t.name, "class", f.class, "kind", f.kind)
		}
	}
	p.update(t, func(s *Status) { s.Paused = false })
	p.log.Info("network back: vCenter probe resumed", "target", t.name, "after", p.clock.Now().Sub(since))
	return true, true
}

// attempt is one probe: log in if there is no session, call CurrentTime,
// and on NotAuthenticated log in again once and repeat the call. The
// attempt is cancelled if the network goes down under it.
func (p *Prober) attempt(ctx context.Context, t *target) error {
	ctx, stop := p.attemptContext(ctx)
	defer stop()
	t.files = [2]fingerprint{fileFingerprint(p.cfg.PasswordFile), fileFingerprint(p.cfg.CAFile)}

	if t.conn == nil {
		if err := p.login(ctx, t); err != nil {
			return err
		}
	}
	err := opError("probe", t.name, t.conn.probe(ctx, p.cfg.Timeout))
	if err == nil {
		return nil
	}
	switch f := classifyFailure(err); {
	case f.kind == KindSessionExpired:
		p.metrics.failed(t.name, f)
		p.log.Info("vCenter session expired: logging in again", "target", t.name)
		p.endSession(t, false, p.cfg.Timeout)
		if err := p.login(ctx, t); err != nil {
			return err
		}
		return opError("probe", t.name, t.conn.probe(ctx, p.cfg.Timeout))
	case f.class == Permanent:
		// Start over with a fresh client: it re-reads the CA file and the
		// password.
		p.endSession(t, true, p.cfg.Timeout)
	}
	return err
}

// attemptContext derives the context of one attempt, cancelled when the
// network goes down while pausing is on.
func (p *Prober) attemptContext(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancel(ctx)
	if !p.pausing() {
		return ctx, cancel
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		up, changed := p.network.NetworkState()
		for up {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				up, changed = p.network.NetworkState()
			}
		}
		cancel()
	})
	return ctx, func() { cancel(); wg.Wait() }
}

// connect opens and logs in a new session for t. Every Login goes through
// the target's failed-login limit, and every Login sent is counted: one
// that did not succeed counts as failed even when it timed out or was
// cancelled, since SSO may have seen it.
func (p *Prober) connect(ctx context.Context, t *target) (*conn, error) {
	pw, err := t.creds.password()
	if err != nil {
		return nil, opError("read password", t.name, err)
	}
	return connect(ctx, connectOptions{
		target:   t.name,
		url:      t.url,
		host:     t.host,
		user:     t.user,
		password: pw,
		tls:      tlsSettings{insecure: p.cfg.Insecure, caFile: p.cfg.CAFile, pins: p.pins},
		dial:     p.dial,
		timeout:  p.cfg.Timeout,
		beforeLogin: func() error {
			return t.logins.begin(p.clock.Now())
		},
		afterLogin: func(err error) {
			t.logins.end(p.clock.Now(), err != nil)
			p.metrics.loggedIn(t.name, err == nil)
		},
	})
}

// login makes a new session the target's session.
func (p *Prober) login(ctx context.Context, t *target) error {
	c, err := p.connect(ctx, t)
	if err != nil {
		return err
	}
	t.conn = c
	p.mu.Lock()
	t.sess = c
	p.signalLocked(t)
	p.mu.Unlock()
	p.log.Info("logged in to vCenter", "target", t.name, "version", c.about.Version,
		"build", c.about.Build, "api_type", c.about.APIType, "api_version", c.about.APIVersion)
	return nil
}

// shutdownLogout bounds the Logout when the prober stops, so SIGTERM ends
// in seconds even when vCenter has stopped answering (the session then
// expires on the server).
const shutdownLogout = 2 * time.Second

// endSession drops the target's session, logging out if asked, within timeout.
func (p *Prober) endSession(t *target, logout bool, timeout time.Duration) {
	if t.conn == nil {
		return
	}
	p.mu.Lock()
	t.sess = nil
	p.signalLocked(t)
	p.mu.Unlock()
	t.conn.close(logout, timeout)
	t.conn = nil
}

// record publishes the result of an attempt, the cycle-th failed one of
// its connect cycle when it failed, and returns what the schedule needs
// of it: above all, how long to wait before the next one.
func (p *Prober) record(t *target, start time.Time, err error, cycle int) outcome {
	end := p.clock.Now()
	f := classifyFailure(err)
	r := -1.0 // a success draws no jitter
	if !f.ok() {
		r = p.jitter.float64()
	}
	next := p.cfg.nextAttempt(f, cycle, r)
	var about *About
	if t.conn != nil {
		about = &t.conn.about
	}

	p.mu.Lock()
	prev := t.st
	t.st.attempted(start, end, f, next, about)
	cur := t.st
	if f.ok() {
		t.successes++
	}
	// Count before publishing: whoever sees the new status sees the counts.
	if prev.ConsecutiveFailures > 0 {
		p.metrics.retries.WithLabelValues(t.name).Inc()
	}
	p.metrics.probed(t.name, end.Sub(start), f)
	p.notifyLocked()
	p.signalLocked(t)
	p.mu.Unlock()

	logAttempt(p.log, prev, cur)
	return outcome{wait: next.wait, failing: !f.ok(), permanent: f.class == Permanent, rejected: f.kind == KindAuth}
}

// logAttempt logs an attempt from the target's Status before and after
// it: a recovery and the news of a failure (the first one, a new kind,
// the target going down) at Info and Warn, a repeated failure at Debug.
func logAttempt(log *slog.Logger, prev, cur Status) {
	if cur.Class == "" { // a success
		if prev.ConsecutiveFailures > 0 || !prev.Up {
			log.Info("vCenter reachable", "target", cur.Target, "after_failures", prev.ConsecutiveFailures)
		}
		return
	}
	attrs := []any{"target", cur.Target, "class", cur.Class, "kind", cur.Kind, "reason", cur.Reason,
		"consecutive_failures", cur.ConsecutiveFailures, "next_attempt_in", cur.Backoff}
	switch {
	case prev.Up && !cur.Up:
		log.Warn("vCenter down", attrs...)
	case cur.ConsecutiveFailures == 1 || prev.Kind != cur.Kind:
		log.Warn("vCenter probe failed", attrs...)
	default:
		log.Debug("vCenter probe failed", attrs...)
	}
}

type wake int

const (
	wakeNext  wake = iota // go on: the wait is over, or the network is down and park takes over
	wakeReset             // something changed: attempt now with the backoff reset
	wakeNow               // asked for: attempt now
	wakeDone              // ctx ended
)

// sleep waits out wait, or less: the network going down (to park), the
// network coming back when networkResets, with watchFiles the content
// of the password or CA file changing, and a receive from kick all end
// it early.
func (p *Prober) sleep(ctx context.Context, t *target, wait time.Duration, networkResets, watchFiles bool, kick <-chan struct{}) wake {
	var changed <-chan struct{}
	wasUp := true
	if p.network != nil {
		wasUp, changed = p.network.NetworkState()
		if !wasUp && p.cfg.PauseOnNetworkDown {
			return wakeNext
		}
	}
	var poll clock.Timer
	var pollC <-chan time.Time
	if watchFiles && (p.cfg.PasswordFile != "" || p.cfg.CAFile != "") {
		poll = p.clock.NewTimer(fileCheckInterval)
		pollC = poll.C()
		defer func() { poll.Stop() }() // the last one armed
	}
	timer := p.clock.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return wakeDone
		case <-timer.C():
			return wakeNext
		case <-kick:
			p.log.Debug("inventory watch failed: probing vCenter now", "target", t.name)
			return wakeNow
		case <-changed:
			// changed may fire for any change of the network's state, not
			// only up/down (a collector snapshot changes with every
			// neighbour update): only a transition counts.
			var up bool
			up, changed = p.network.NetworkState()
			if !up && p.cfg.PauseOnNetworkDown {
				return wakeNext // park takes over; the loop decides what its return means
			}
			if up && !wasUp && networkResets {
				p.log.Info("network back: probing vCenter now", "target", t.name)
				return wakeReset
			}
			wasUp = up
		case <-pollC:
			now := [2]fingerprint{fileFingerprint(p.cfg.PasswordFile), fileFingerprint(p.cfg.CAFile)}
			if now != t.files {
				p.log.Info("password or CA file changed: probing vCenter now", "target", t.name)
				return wakeReset
			}
			poll = p.clock.NewTimer(fileCheckInterval)
			pollC = poll.C()
		}
	}
}

// update changes a target's Status and signals the change.
func (p *Prober) update(t *target, f func(*Status)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&t.st)
	p.notifyLocked()
	p.signalLocked(t)
}

func (p *Prober) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// signalLocked tells t's inventory watch that its session or Status
// changed.
func (p *Prober) signalLocked(t *target) {
	close(t.sig)
	t.sig = make(chan struct{})
}
