package sidecar

import (
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testkit"
)

func stateOf(checks ...CheckStatus) *State { return &State{Checks: checks} }

func failing(name, reason string, since time.Time) CheckStatus {
	return CheckStatus{CheckResult: CheckResult{Name: name, Reason: reason}, Since: since}
}

func passing(name string, since time.Time) CheckStatus {
	return CheckStatus{CheckResult: CheckResult{Name: name, OK: true}, Since: since}
}

// TestCheckLog: the log says why the gate is closed from the start, when
// the reason changes and when a check recovers, and a flapping check is
// held to a few lines, the rest counted.
func TestCheckLog(t *testing.T) {
	var buf testkit.Buffer
	l := newCheckLog(slog.New(slog.NewTextHandler(&buf, nil)))
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s0 := stateOf(passing("links", t0), failing("vcenter", "no vCenter probe results yet", t0))
	l.observe(&State{}, s0, t0)
	s1 := stateOf(passing("links", t0), failing("vcenter", "transient: refused: connection refused", t0))
	l.observe(s0, s1, t0.Add(time.Second))
	s2 := stateOf(passing("links", t0), passing("vcenter", t0.Add(5*time.Second)))
	l.observe(s1, s2, t0.Add(5*time.Second))
	out := buf.String()
	for _, want := range []string{
		`msg="readiness check failed" check=vcenter reason="no vCenter probe results yet" held_back=0`,
		`msg="readiness check failed" check=vcenter reason="transient: refused: connection refused" held_back=0`,
		`msg="readiness check ok again" check=vcenter failed_for=5s held_back=0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "check=links") {
		t.Errorf("a check that always held was logged:\n%s", out)
	}

	// Flapping every second for a minute: a burst, then one line per
	// checkLogEvery, with the held-back lines counted.
	var flap testkit.Buffer
	l = newCheckLog(slog.New(slog.NewTextHandler(&flap, nil)))
	prev := stateOf(passing("links", t0))
	for i := 1; i <= 60; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		next := stateOf(failing("links", "va: down", now))
		if i%2 == 0 {
			next = stateOf(passing("links", now))
		}
		l.observe(prev, next, now)
		prev = next
	}
	lines := strings.Count(flap.String(), "\n")
	if lines < checkLogBurst || lines > checkLogBurst+2 {
		t.Errorf("60 flaps in 60s logged %d lines, want about %d:\n%s", lines, checkLogBurst+2, flap.String())
	}
	if !regexp.MustCompile(`held_back=[1-9]`).MatchString(flap.String()) {
		t.Errorf("no line counts the lines held back:\n%s", flap.String())
	}

	// Flapping fail, ok, fail (the burst), then ok held back: the log
	// must not end on the failure, which is no longer true. flush writes
	// the check as it stands once a token is back, and says when that is.
	var settle testkit.Buffer
	l = newCheckLog(slog.New(slog.NewTextHandler(&settle, nil)))
	prev = stateOf(passing("links", t0))
	for i := 1; i <= checkLogBurst+1; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		next := stateOf(failing("links", "va: down", now))
		if i%2 == 0 {
			next = stateOf(passing("links", now))
		}
		l.observe(prev, next, now)
		prev = next
	}
	now := t0.Add(time.Duration(checkLogBurst+1) * time.Second)
	if last := lastLine(settle.String()); !strings.Contains(last, "readiness check failed") || !prev.Checks[0].OK {
		t.Fatalf("setup: the log should end on the failure while the check holds: %s", last)
	}
	at := l.flush(prev, now)
	if at.IsZero() || !at.After(now) {
		t.Fatalf("flush with a held-back line and no token: next at %v, want later than %v", at, now)
	}
	if again := l.flush(prev, at); !again.IsZero() {
		t.Errorf("flush at %v: next at %v, want nothing pending", at, again)
	}
	if last := lastLine(settle.String()); !strings.Contains(last, `msg="readiness check ok again" check=links held_back=1`) {
		t.Errorf("the log ends on %q, want the check ok again, with the line held back", last)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
