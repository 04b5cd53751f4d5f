package probe

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Clock is the time source of the schedule, replaceable so that tests can
// drive the schedule step by step.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
	After(d time.Duration) <-chan time.Time
}

// Timer is the part of *time.Timer the prober uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) NewTimer(d time.Duration) Timer         { return realTimer{time.NewTimer(d)} }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }

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
