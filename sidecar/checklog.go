package sidecar

import (
	"log/slog"
	"time"
)

// checkLog says in the log why the gate is closed: one line when a check
// fails (from the start on, or for a new reason while failing) and one
// when it holds again. A flapping check must not flood the log: per check,
// up to checkLogBurst lines, then one per checkLogEvery; the lines held
// back are counted in the next one. The log never ends on a line that is
// no longer true: a check whose last change was held back is written as
// it stands once a token is back (flush, on the gate's timer).
type checkLog struct {
	log    *slog.Logger
	checks map[string]*checkLogState
}

const (
	checkLogBurst = 3
	checkLogEvery = 30 * time.Second
)

type checkLogState struct {
	tokens float64
	refill time.Time // when tokens were last topped up
	held   int       // lines not written since the last one
	// The check as the last line written about it said (failing: with
	// its reason); pending: a change since was held back.
	wroteOK     bool
	wroteReason string
	pending     bool
}

func newCheckLog(log *slog.Logger) *checkLog {
	return &checkLog{log: log, checks: map[string]*checkLogState{}}
}

// observe logs what changed for each check from prev to next.
func (l *checkLog) observe(prev, next *State, now time.Time) {
	for _, c := range next.Checks {
		p, seen := prev.Check(c.Name)
		switch {
		case !c.OK && (!seen || p.OK || p.Reason != c.Reason):
			l.write(c, now, p.Since)
		case c.OK && seen && !p.OK:
			l.write(c, now, p.Since)
		}
	}
}

// flush writes the checks of st whose last change was held back, as they
// stand, if a token is back; it returns when the next such check will have
// one (zero: none pending).
func (l *checkLog) flush(st *State, now time.Time) (next time.Time) {
	for _, c := range st.Checks {
		s := l.checks[c.Name]
		if s == nil || !s.pending {
			continue
		}
		if s.wroteOK == c.OK && s.wroteReason == c.Reason {
			s.pending = false // back to what the log says
			continue
		}
		l.topUp(s, now)
		if s.tokens < 1 {
			at := now.Add(time.Duration((1 - s.tokens) * float64(checkLogEvery)))
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		l.write(c, now, time.Time{})
	}
	return next
}

// write logs c's line, or holds it back when the check has no token left;
// failedSince (zero: unknown) is when a recovering check started failing.
func (l *checkLog) write(c CheckStatus, now, failedSince time.Time) {
	s := l.checks[c.Name]
	if s == nil {
		s = &checkLogState{tokens: checkLogBurst, refill: now, wroteOK: true}
		l.checks[c.Name] = s
	}
	l.topUp(s, now)
	if s.tokens < 1 {
		s.held++
		s.pending = true
		return
	}
	s.tokens--
	held := s.held
	s.held, s.pending, s.wroteOK, s.wroteReason = 0, false, c.OK, c.Reason
	if !c.OK {
		l.log.Warn("readiness check failed", "check", c.Name, "reason", c.Reason, "held_back", held)
		return
	}
	attrs := []any{"check", c.Name}
	if !failedSince.IsZero() {
		attrs = append(attrs, "failed_for", now.Sub(failedSince).Round(time.Millisecond))
	}
	l.log.Info("readiness check ok again", append(attrs, "held_back", held)...)
}

func (l *checkLog) topUp(s *checkLogState, now time.Time) {
	s.tokens = min(checkLogBurst, s.tokens+float64(now.Sub(s.refill))/float64(checkLogEvery))
	s.refill = now
}
