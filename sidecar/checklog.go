package sidecar

import (
	"log/slog"
	"time"
)

// checkLog says in the log why the gate is closed: one line when a check
// fails (from the start on, or for a new reason while failing) and one
// when it holds again. A flapping check must not flood the log: per check,
// up to checkLogBurst lines, then one per checkLogEvery; the lines held
// back are counted in the next one.
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
			if held, ok := l.allow(c.Name, now); ok {
				l.log.Warn("readiness check failed", "check", c.Name, "reason", c.Reason, "held_back", held)
			}
		case c.OK && seen && !p.OK:
			if held, ok := l.allow(c.Name, now); ok {
				l.log.Info("readiness check ok again", "check", c.Name, "failed_for", now.Sub(p.Since).Round(time.Millisecond), "held_back", held)
			}
		}
	}
}

// allow takes a token for name; held is how many lines were held back
// since its last line.
func (l *checkLog) allow(name string, now time.Time) (held int, ok bool) {
	s := l.checks[name]
	if s == nil {
		s = &checkLogState{tokens: checkLogBurst, refill: now}
		l.checks[name] = s
	}
	s.tokens = min(checkLogBurst, s.tokens+float64(now.Sub(s.refill))/float64(checkLogEvery))
	s.refill = now
	if s.tokens < 1 {
		s.held++
		return 0, false
	}
	s.tokens--
	held, s.held = s.held, 0
	return held, true
}
