package probe

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// loginLimiter caps the failed logins of one target: vCenter SSO locks an
// account after 5 failures in 180 s by default, and the account is often
// shared with other tools (migrations), which a lockout would stop too.
//
// A failure counts for window after its answer arrived. A Login counts as
// failed from the moment it is sent until its answer says otherwise, so
// logins running at the same time (Run and ProbeOnce) cannot overshoot
// together. Nothing resets the count: not a success, not the network
// coming back, not a new password; SSO does not know about any of them.
type loginLimiter struct {
	max    int
	window time.Duration

	mu       sync.Mutex
	failures []time.Time // failed logins that still count, oldest first
	inFlight int         // logins sent and not answered yet
}

func newLoginLimiter(limit int, window time.Duration) *loginLimiter {
	return &loginLimiter{max: limit, window: window}
}

// LoginLimitError is a login that was not sent because the target already
// has Max failed logins within Window: one more could lock the account.
type LoginLimitError struct {
	Max    int
	Window time.Duration
	Until  time.Time // when a login may be sent again
}

func (e *LoginLimitError) Error() string {
	return fmt.Sprintf("not sent: %d failed logins within %v is the limit; next login at %s",
		e.Max, e.Window, e.Until.UTC().Format(time.RFC3339))
}

// begin reserves a login at now, or returns a *LoginLimitError. Every
// begin is followed by one end.
func (l *loginLimiter) begin(now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if at := l.allowedAtLocked(now); at.After(now) {
		return &LoginLimitError{Max: l.max, Window: l.window, Until: at}
	}
	l.inFlight++
	return nil
}

// end records the answer to a login begun earlier, received at now.
func (l *loginLimiter) end(now time.Time, failed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	if failed {
		// Answers to concurrent logins may be recorded out of order.
		i, _ := slices.BinarySearchFunc(l.failures, now, time.Time.Compare)
		l.failures = slices.Insert(l.failures, i, now)
	}
}

// allowedAt returns when a login may be sent: now, or later when the
// limit is reached.
func (l *loginLimiter) allowedAt(now time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.allowedAtLocked(now)
}

// state returns how many more logins may fail now, and until when logins
// are held back (zero when they are not).
func (l *loginLimiter) state(now time.Time) (remaining int, blockedUntil time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if at := l.allowedAtLocked(now); at.After(now) {
		blockedUntil = at
	}
	return max(0, l.max-len(l.failures)-l.inFlight), blockedUntil
}

func (l *loginLimiter) allowedAtLocked(now time.Time) time.Time {
	// Forget the failures that no longer count.
	i := 0
	for i < len(l.failures) && !now.Before(l.failures[i].Add(l.window)) {
		i++
	}
	l.failures = slices.Delete(l.failures, 0, i)

	over := len(l.failures) + l.inFlight - l.max
	switch {
	case over < 0:
		return now
	case over < len(l.failures):
		// The over+1 oldest failures must age out first.
		return l.failures[over].Add(l.window)
	default:
		// Logins in flight fill the limit on their own; their answers
		// decide, and until then the worst is assumed.
		return now.Add(l.window)
	}
}
