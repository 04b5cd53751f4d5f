package probe

import (
	"math/rand/v2"
	"sync"
	"time"
)

// plan is what the backoff policy decides after an attempt.
type plan struct {
	wait time.Duration // before the next attempt
	down bool          // the failure takes the target down now; false leaves Up as it was
}

// nextAttempt is the backoff policy, a pure function of the
// configuration, the attempt's classified result (the zero failure for a
// success), cycle (the failed attempts of the current connect cycle, this
// one included) and r, the jitter draw backoff takes.
func (c Config) nextAttempt(f failure, cycle int, r float64) plan {
	switch {
	case f.ok():
		return plan{wait: c.Interval}
	case f.kind == KindAuth:
		// A wrong password re-tried every MaxBackoff (30s) would trip
		// vCenter SSO's lockout (5 failures in 180s by default) and
		// lock the service account for everyone using it. Spread the
		// re-checks so that the failed-login limit is not reached on
		// its own; a new password in the file is tried at once if the
		// limit allows.
		return plan{wait: max(c.slowWait(r), c.authRecheck()), down: true}
	case f.class == Permanent:
		// Retrying fast cannot fix it: down at once, slow cadence.
		return plan{wait: c.slowWait(r), down: true}
	case cycle <= c.MaxRetries:
		return plan{wait: backoff(c.BaseBackoff, c.MaxBackoff, cycle, r)}
	default:
		// The cycle failed: down, and from now on the slow cadence.
		return plan{wait: c.slowWait(r), down: true}
	}
}

// authRecheck is the shortest cadence for re-checking a rejected login:
// MaxFailedLogins-1 re-checks spread over FailedLoginWindow (90 s by
// default), so that re-checks alone never fill the window and a login with
// a rotated password always finds a slot at once. With a limit of 1 there
// is no slot to keep: one re-check per window.
func (c Config) authRecheck() time.Duration {
	return c.FailedLoginWindow / time.Duration(max(c.MaxFailedLogins-1, 1))
}

// slowWait is the cadence of a down target: the capped backoff, jittered
// by r.
func (c Config) slowWait(r float64) time.Duration {
	return backoff(c.MaxBackoff, c.MaxBackoff, 1, r)
}

// jitter is a mutex-guarded random source: one per Prober, shared by the
// target goroutines (rand.Rand is not safe for concurrent use).
type jitter struct {
	mu  sync.Mutex
	r   *rand.Rand
	off bool // Config.DisableJitter (vc_connection_enable_jitter: false)
}

// float64 returns a uniform value in [0, 1), or -1 when jitter is off.
func (j *jitter) float64() float64 {
	if j.off {
		return -1
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.r.Float64()
}

// backoff returns the wait before retry n (n >= 1): base·2^(n−1), capped at
// max, with ±25% jitter. The jitter window is clipped to the cap instead of
// clamping the result to it, so the wait never exceeds max and targets that
// have all reached the cap still spread over [0.75·max, max] rather than
// firing together at exactly max. r is uniform in [0, 1); r < 0 means no
// jitter: exactly base·2^(n−1), capped.
func backoff(base, max time.Duration, n int, r float64) time.Duration {
	if max <= 0 {
		return 0
	}
	d := base
	if d <= 0 || d > max {
		d = max
	}
	// Doubling stops at the cap, so a large n cannot overflow.
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	if r < 0 {
		return d
	}
	lo := float64(d) * 0.75
	hi := float64(d) * 1.25
	if hi > float64(max) {
		hi = float64(max)
	}
	w := time.Duration(lo + r*(hi-lo))
	if w > max {
		w = max
	}
	return w
}
