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
// underlying cause, none of which contains it. Nothing needs redacting.
//
// Failed logins are capped per target (Config.MaxFailedLogins within
// Config.FailedLoginWindow) so that linkgate cannot lock out the account
// through vCenter SSO's lockout policy.
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

// Status is the state of one target.
type Status struct {
	Target      string // host[:port]
	Up          bool
	Paused      bool // parked because the network is down
	LastAttempt time.Time
	LastSuccess time.Time
	// Class and Kind describe the last failure; empty when the last
	// attempt succeeded.
	Class               Class
	Kind                string
	Reason              string // the error text; it never contains a secret
	Permanent           bool
	ConsecutiveFailures int
	Backoff             time.Duration // current wait before the next attempt after a failure
	About               About
}

// Option configures a Prober.
type Option func(*Prober)

// WithClock replaces the wall clock of the schedule.
func WithClock(c Clock) Option { return func(p *Prober) { p.clock = c } }

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
	clock   Clock
	jitter  *jitter
	log     *slog.Logger
	dial    DialFunc
	pins    [][]byte
	targets []*target
	metrics *metrics

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every Status change
	running bool
}

type target struct {
	endpoint
	user   string
	creds  *credentials
	logins *loginLimiter

	// Guarded by Prober.mu.
	st            Status
	sessionActive bool

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
	p := &Prober{
		cfg:     cfg,
		network: network,
		clock:   realClock{},
		log:     slog.Default(),
		pins:    pins,
		changed: make(chan struct{}),
	}
	for _, o := range opts {
		o(p)
	}
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
		}
		t.st.Target = ep.name
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
		wg.Go(func() { p.loop(ctx, t) })
	}
	wg.Wait()
	return nil
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
// checks such as `linkgate check`.
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
	now := p.clock.Now()
	p.metrics.duration.WithLabelValues(t.name).Observe(now.Sub(st.LastAttempt).Seconds())
	if err == nil {
		p.metrics.probes.WithLabelValues(t.name, "success").Inc()
		st.Up, st.LastSuccess = true, now
		return st
	}
	class, kind := Classify(err)
	p.metrics.probes.WithLabelValues(t.name, "failure").Inc()
	p.metrics.errors.WithLabelValues(t.name, string(class), string(kind)).Inc()
	st.Class, st.Kind, st.Permanent = class, string(kind), class == Permanent
	st.Reason = err.Error()
	st.ConsecutiveFailures = 1
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
	defer func() { p.endSession(t, p.networkUp(), min(p.cfg.Timeout, shutdownLogout)) }()
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
			switch p.sleep(ctx, t, wait, last.failing && !last.rejected, last.permanent) {
			case wakeDone:
				return
			case wakeReset:
				cycle, due = 0, time.Time{}
				last.permanent, last.rejected = false, false
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
		last = p.record(t, start, err, &cycle)
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
			reason := fmt.Sprintf("network down for more than %v", p.cfg.MaxNetworkWait)
			// Count first: whoever sees the new status sees the count.
			p.metrics.errors.WithLabelValues(t.name, string(Transient), string(KindNetworkDown)).Inc()
			p.update(t, func(s *Status) {
				s.Up, s.Class, s.Kind, s.Reason, s.Permanent = false, Transient, string(KindNetworkDown), reason, false
			})
			p.log.Warn("vCenter unreachable: "+reason, "target", t.name, "class", Transient, "kind", KindNetworkDown)
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
	class, kind := Classify(err)
	switch {
	case kind == KindSessionExpired:
		p.metrics.errors.WithLabelValues(t.name, string(class), string(kind)).Inc()
		p.log.Info("vCenter session expired: logging in again", "target", t.name)
		p.endSession(t, false, p.cfg.Timeout)
		if err := p.login(ctx, t); err != nil {
			return err
		}
		return opError("probe", t.name, t.conn.probe(ctx, p.cfg.Timeout))
	case class == Permanent:
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
			result := "success"
			if err != nil {
				result = "failure"
			}
			p.metrics.logins.WithLabelValues(t.name, result).Inc()
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
	t.sessionActive = true
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
	t.conn.close(logout, timeout)
	t.conn = nil
	p.mu.Lock()
	t.sessionActive = false
	p.mu.Unlock()
}

// record publishes the result of an attempt and returns what the schedule
// needs of it: above all, how long to wait before the next one.
func (p *Prober) record(t *target, start time.Time, err error, cycle *int) outcome {
	var wait time.Duration
	now := p.clock.Now()
	p.metrics.duration.WithLabelValues(t.name).Observe(now.Sub(start).Seconds())

	p.mu.Lock()
	s := &t.st
	prev := *s
	s.LastAttempt = start
	if err == nil {
		*cycle = 0
		s.Up, s.Paused, s.LastSuccess = true, false, now
		s.Class, s.Kind, s.Reason, s.Permanent = "", "", "", false
		s.ConsecutiveFailures, s.Backoff = 0, 0
		if t.conn != nil {
			s.About = t.conn.about
		}
		wait = p.cfg.Interval
	} else {
		class, kind := Classify(err)
		*cycle++
		s.ConsecutiveFailures++
		s.Class, s.Kind, s.Permanent = class, string(kind), class == Permanent
		s.Reason = err.Error()
		switch {
		case kind == KindAuth:
			// A wrong password re-tried every MaxBackoff (30s) would trip
			// vCenter SSO's lockout (5 failures in 180s by default) and
			// lock the service account for everyone using it. Spread the
			// re-checks so that the failed-login limit is not reached on
			// its own; a new password in the file is tried at once if the
			// limit allows.
			s.Up, wait = false, max(p.slowWait(), p.authRecheck())
		case class == Permanent:
			// Retrying fast cannot fix it: down at once, slow cadence.
			s.Up, wait = false, p.slowWait()
		case *cycle <= p.cfg.MaxRetries:
			wait = backoff(p.cfg.BaseBackoff, p.cfg.MaxBackoff, *cycle, p.jitter.float64())
		default:
			// The cycle failed: down, and from now on the slow cadence.
			s.Up, wait = false, p.slowWait()
		}
		s.Backoff = wait
	}
	cur := *s
	// Count before publishing: whoever sees the new status sees the counts.
	if prev.ConsecutiveFailures > 0 {
		p.metrics.retries.WithLabelValues(t.name).Inc()
	}
	if err == nil {
		p.metrics.probes.WithLabelValues(t.name, "success").Inc()
	} else {
		p.metrics.probes.WithLabelValues(t.name, "failure").Inc()
		p.metrics.errors.WithLabelValues(t.name, string(cur.Class), cur.Kind).Inc()
	}
	p.notifyLocked()
	p.mu.Unlock()

	if err == nil {
		if prev.ConsecutiveFailures > 0 || !prev.Up {
			p.log.Info("vCenter reachable", "target", t.name, "after_failures", prev.ConsecutiveFailures)
		}
		return outcome{wait: wait}
	}
	attrs := []any{"target", t.name, "class", cur.Class, "kind", cur.Kind, "reason", cur.Reason,
		"consecutive_failures", cur.ConsecutiveFailures, "next_attempt_in", wait}
	switch {
	case prev.Up && !cur.Up:
		p.log.Warn("vCenter down", attrs...)
	case cur.ConsecutiveFailures == 1 || prev.Kind != cur.Kind:
		p.log.Warn("vCenter probe failed", attrs...)
	default:
		p.log.Debug("vCenter probe failed", attrs...)
	}
	return outcome{wait: wait, failing: true, permanent: cur.Permanent, rejected: cur.Kind == string(KindAuth)}
}

// authRecheck is the shortest cadence for re-checking a rejected login:
// MaxFailedLogins re-checks spread over FailedLoginWindow (a minute by
// default).
func (p *Prober) authRecheck() time.Duration {
	return p.cfg.FailedLoginWindow / time.Duration(p.cfg.MaxFailedLogins)
}

// slowWait is the cadence of a down target: the capped backoff, jittered.
func (p *Prober) slowWait() time.Duration {
	return backoff(p.cfg.MaxBackoff, p.cfg.MaxBackoff, 1, p.jitter.float64())
}

type wake int

const (
	wakeNext  wake = iota // go on: the wait is over, or the network is down and park takes over
	wakeReset             // something changed: attempt now with the backoff reset
	wakeDone              // ctx ended
)

// sleep waits out wait, or less: the network going down (to park), the
// network coming back when networkResets, or with watchFiles the content
// of the password or CA file changing all end it early.
func (p *Prober) sleep(ctx context.Context, t *target, wait time.Duration, networkResets, watchFiles bool) wake {
	var changed <-chan struct{}
	wasUp := true
	if p.network != nil {
		wasUp, changed = p.network.NetworkState()
		if !wasUp && p.cfg.PauseOnNetworkDown {
			return wakeNext
		}
	}
	var poll <-chan time.Time
	if watchFiles && (p.cfg.PasswordFile != "" || p.cfg.CAFile != "") {
		poll = p.clock.After(fileCheckInterval)
	}
	timer := p.clock.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return wakeDone
		case <-timer.C():
			return wakeNext
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
		case <-poll:
			now := [2]fingerprint{fileFingerprint(p.cfg.PasswordFile), fileFingerprint(p.cfg.CAFile)}
			if now != t.files {
				p.log.Info("password or CA file changed: probing vCenter now", "target", t.name)
				return wakeReset
			}
			poll = p.clock.After(fileCheckInterval)
		}
	}
}

// update changes a target's Status and signals the change.
func (p *Prober) update(t *target, f func(*Status)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&t.st)
	p.notifyLocked()
}

func (p *Prober) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}
