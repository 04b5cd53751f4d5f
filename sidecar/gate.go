package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
)

// DefaultStableFor is the default flap damping: how long every check must
// hold before the gate turns ready.
const DefaultStableFor = 2 * time.Second

// GateOptions configure a Gate.
type GateOptions struct {
	// Snapshots is the collector (required).
	Snapshots Snapshots
	// VCenter is the prober's result source (optional).
	VCenter VCenterSource
	// Checks are evaluated in order; see Checks.
	Checks []Check
	// StableFor is the flap damping, taken as given: 0 turns ready as
	// soon as every check holds. Callers default it to DefaultStableFor.
	StableFor time.Duration
	// EvalTimeout bounds one evaluation of all checks (default 10s).
	EvalTimeout time.Duration
	Clock       clock.Clock
	Logger      *slog.Logger
}

// Gate evaluates the checks on every collector or vCenter change and
// publishes the result as a State.
type Gate struct {
	snaps       Snapshots
	vcenter     VCenterSource
	checks      []Check
	names       []string
	stableFor   time.Duration
	evalTimeout time.Duration
	clock       clock.Clock
	log         *slog.Logger
	checkLog    *checkLog

	state   atomic.Pointer[State]
	running atomic.Bool

	evalMu     sync.Mutex
	evaluated  uint64        // version of the last kernel snapshot evaluated
	evalDone   chan struct{} // closed after each evaluation
	toReady    atomic.Uint64
	toNotReady atomic.Uint64
}

// NewGate returns a Gate in the not-ready state; start it with Run.
func NewGate(opts GateOptions) (*Gate, error) {
	if opts.Snapshots == nil {
		return nil, errors.New("gate: no snapshot source")
	}
	if opts.StableFor < 0 {
		return nil, fmt.Errorf("gate: negative stable-for %s", opts.StableFor)
	}
	g := &Gate{
		snaps:       opts.Snapshots,
		vcenter:     opts.VCenter,
		checks:      opts.Checks,
		stableFor:   opts.StableFor,
		evalTimeout: opts.EvalTimeout,
		clock:       clock.Or(opts.Clock),
		log:         opts.Logger,
	}
	if g.evalTimeout <= 0 {
		g.evalTimeout = 10 * time.Second
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.checkLog = newCheckLog(g.log)
	for _, c := range opts.Checks {
		name := c.Name()
		if name == "" || strings.ContainsAny(name, "/ \t\n?&=") {
			return nil, fmt.Errorf("gate: invalid check name %q", name)
		}
		for _, n := range g.names {
			if n == name {
				return nil, fmt.Errorf("gate: duplicate check %q", name)
			}
		}
		g.names = append(g.names, name)
	}
	g.state.Store(&State{Since: g.clock.Now(), changed: make(chan struct{})})
	g.evalDone = make(chan struct{})
	return g, nil
}

// State returns the current gate state. It never blocks.
func (g *Gate) State() *State { return g.state.Load() }

// CheckNames returns the configured check names in order.
func (g *Gate) CheckNames() []string { return append([]string(nil), g.names...) }

// Run evaluates the checks on every change signal until ctx ends. It
// returns nil after ctx is cancelled.
func (g *Gate) Run(ctx context.Context) error {
	if !g.running.CompareAndSwap(false, true) {
		return errors.New("gate: already running")
	}
	defer g.running.Store(false)
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		snap := g.snaps.Snapshot()
		in := &Input{Snapshot: snap, Now: g.clock.Now()}
		var vcChanged <-chan struct{}
		if g.vcenter != nil {
			in.VCenter, vcChanged = g.vcenter.Status()
		}
		ectx, cancel := context.WithTimeout(ctx, g.evalTimeout)
		report := Evaluate(ectx, g.checks, in)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		st := g.publish(report, in.Now)
		g.markEvaluated(snap.Version)

		// One one-shot timer for whichever comes first: the end of the
		// damping period, a freshness deadline, or the check log's next
		// token for a line it held back.
		wake := in.recheck
		for _, at := range []time.Time{st.ReadyAt, g.checkLog.flush(st, in.Now)} {
			if !at.IsZero() && (wake.IsZero() || at.Before(wake)) {
				wake = at
			}
		}
		if timer != nil {
			timer.Stop()
			timer = nil
		}
		var fire <-chan time.Time
		if !wake.IsZero() {
			timer = g.clock.NewTimer(max(wake.Sub(in.Now), 0))
			fire = timer.C()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-snap.Changed():
		case <-vcChanged:
		case <-fire:
		}
	}
}

func (g *Gate) markEvaluated(version uint64) {
	g.evalMu.Lock()
	defer g.evalMu.Unlock()
	g.evaluated = version
	close(g.evalDone)
	g.evalDone = make(chan struct{})
}

// maxEvalLag bounds how long a request waits for the gate to evaluate the
// kernel state that was current when the request arrived.
const maxEvalLag = time.Second

// Current returns the state once the gate has evaluated a kernel snapshot
// at least as new as the one current at the call. The gate evaluates each
// snapshot a moment after the collector publishes it; without this, a
// request in that moment would be answered from the state before, e.g.
// ready just after the collector saw the required link go down. fresh is
// false when the gate has not caught up within maxEvalLag (or ctx ends):
// the answer must then not be "ready", and evaluated is closed when the
// gate next finishes an evaluation (a long-poll looks again then: the
// late evaluation may publish no new State). A gate that is not running
// answers at once.
func (g *Gate) Current(ctx context.Context) (st *State, fresh bool, evaluated <-chan struct{}) {
	want := g.snaps.Snapshot().Version
	var limit *time.Timer // real time: evaluation lag is not the gate's clock
	defer func() {
		if limit != nil {
			limit.Stop()
		}
	}()
	for {
		g.evalMu.Lock()
		done, version := g.evalDone, g.evaluated
		g.evalMu.Unlock()
		if version >= want || !g.running.Load() {
			return g.State(), true, nil
		}
		if limit == nil {
			limit = time.NewTimer(maxEvalLag)
		}
		select {
		case <-done:
		case <-limit.C:
			return g.State(), false, done
		case <-ctx.Done():
			return g.State(), false, done
		}
	}
}

// publish derives the next state from report and swaps it in if anything
// visible changed.
func (g *Gate) publish(report Report, now time.Time) *State {
	prev := g.state.Load()
	next := &State{Checks: make([]CheckStatus, len(report.Checks)), changed: make(chan struct{})}
	for i, r := range report.Checks {
		since := now
		if p, ok := prev.Check(r.Name); ok && p.OK == r.OK {
			since = p.Since
		}
		next.Checks[i] = CheckStatus{CheckResult: r, Since: since}
	}
	// Without checks, the damping runs from the last transition.
	next.Ready, next.ReadyAt = g.decide(next.Checks, nil, prev.Since, now)
	if prev.Version > 0 && next.sameAs(prev) {
		return prev
	}
	next.Version = prev.Version + 1
	next.Since = prev.Since
	g.checkLog.observe(prev, next, now)
	if next.Ready != prev.Ready {
		next.Since = now
		if next.Ready {
			g.toReady.Add(1)
			g.log.Info("readiness gate: ready")
		} else {
			g.toNotReady.Add(1)
			g.log.Warn("readiness gate: not ready", "failing", next.Failing())
		}
	}
	prev.next = next
	g.state.Store(next)
	close(prev.changed)
	return next
}

// decide is the one rule of readiness, for the gate and for every request
// that judges it with exclusions: every judged check holds and has held
// for stable-for. excluded filters the checks; quiet is when the damping
// starts if no check is judged. While the damping runs, readyAt is when it
// ends.
func (g *Gate) decide(checks []CheckStatus, excluded map[string]bool, quiet, now time.Time) (ready bool, readyAt time.Time) {
	stableSince, judged := quiet, false
	for _, c := range checks {
		if excluded[c.Name] {
			continue
		}
		if !c.OK {
			return false, time.Time{}
		}
		if !judged || c.Since.After(stableSince) {
			stableSince, judged = c.Since, true
		}
	}
	if at := stableSince.Add(g.stableFor); now.Before(at) {
		return false, at
	}
	return true, time.Time{}
}

// verdict is one request's view of a State.
type verdict struct {
	state    *State
	lagging  bool // the gate has not evaluated the latest kernel state: not ready
	ready    bool
	readyAt  time.Time // damping deadline, when every judged check holds
	since    time.Time
	checks   []CheckStatus
	excluded map[string]bool
	damped   bool // readyAt comes from this request's exclusions
	// wake are the channels of the other sources a verdict read, closed
	// when it may change: a host verdict's inventory, vCenter and
	// reachability, and, while lagging, the gate's next evaluation. Nil
	// ones never fire.
	wake [4]<-chan struct{}
	// poll, when set, is how soon to look again without a signal (a VM
	// may move without one).
	poll time.Duration
	// noSuch says the host or VM judged is in no inventory or vCenter
	// (404).
	noSuch bool
}

// judge derives the answer for one check (single, undamped), for the whole
// gate (its published verdict), or for the gate without the excluded
// checks (decide with a filter: the remaining checks must all have held
// for stable-for).
func (g *Gate) judge(st *State, single string, excluded map[string]bool, now time.Time) verdict {
	v := verdict{state: st, since: st.Since, excluded: excluded}
	if single != "" {
		c, ok := st.Check(single)
		if !ok {
			c = CheckStatus{CheckResult: CheckResult{Name: single, Reason: "not evaluated yet"}, Since: st.Since}
		}
		v.ready, v.since, v.checks, v.excluded = c.OK, c.Since, []CheckStatus{c}, nil // exclusions judge the whole gate only
		return v
	}
	v.checks = st.Checks
	if len(excluded) == 0 || st.Version == 0 {
		v.ready, v.readyAt = st.Ready, st.ReadyAt
		return v
	}
	v.ready, v.readyAt = g.decide(st.Checks, excluded, time.Time{}, now)
	v.damped = !v.readyAt.IsZero()
	return v
}

// State is an immutable gate verdict. A new State replaces it on every
// visible change; Changed is closed then.
type State struct {
	// Version increases with every published state; 0 means the checks
	// have not been evaluated yet.
	Version uint64
	// Ready: every check has held for the gate's stable-for period.
	Ready bool
	// Since is when Ready last changed (or when the gate was created).
	Since time.Time
	// ReadyAt is set while every check holds but the damping period runs:
	// the gate turns ready then unless a check fails first.
	ReadyAt time.Time
	// Checks are the latest results, in check order.
	Checks []CheckStatus

	changed chan struct{}
	next    *State // set before changed is closed
}

// CheckStatus is one check's latest result and when its OK last changed.
type CheckStatus struct {
	CheckResult
	Since time.Time `json:"since"`
}

// Changed is closed when a newer State supersedes this one.
func (s *State) Changed() <-chan struct{} { return s.changed }

// Next returns the State that superseded s, or nil while s is current.
// Following Next visits every published state in order, so a slow
// consumer sees each transition.
func (s *State) Next() *State {
	select {
	case <-s.changed:
		return s.next
	default:
		return nil
	}
}

// Check returns the status of the named check.
func (s *State) Check(name string) (CheckStatus, bool) {
	for _, c := range s.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return CheckStatus{}, false
}

// Failing returns "name: reason" for every failing check.
func (s *State) Failing() []string {
	var out []string
	for _, c := range s.Checks {
		if !c.OK {
			out = append(out, c.Name+": "+c.Reason)
		}
	}
	return out
}

// Permanent reports whether a failing check failed permanently.
func (s *State) Permanent() bool {
	for _, c := range s.Checks {
		if !c.OK && c.Permanent {
			return true
		}
	}
	return false
}

// Summary is a one-line description: "ready", "not ready: links: ...",
// or "not ready: all checks pass, ready at ...".
func (s *State) Summary() string {
	switch {
	case s.Ready:
		return "ready"
	case s.Version == 0:
		return "not ready: checks not evaluated yet"
	case !s.ReadyAt.IsZero():
		return "not ready: all checks pass, damping until " + s.ReadyAt.UTC().Format(time.RFC3339)
	}
	return "not ready: " + strings.Join(s.Failing(), "; ")
}

// String is the Summary.
func (s *State) String() string { return s.Summary() }

func (s *State) sameAs(o *State) bool {
	if s.Ready != o.Ready || !s.ReadyAt.Equal(o.ReadyAt) || len(s.Checks) != len(o.Checks) {
		return false
	}
	for i := range s.Checks {
		if s.Checks[i].CheckResult != o.Checks[i].CheckResult {
			return false
		}
	}
	return true
}
