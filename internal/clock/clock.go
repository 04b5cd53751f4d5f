// Package clock is linkgate's one time abstraction: the probe's schedule,
// the gate's damping, the HTTP waits, the notifiers and the collector's
// timestamps read time through a Clock, so that tests can drive them with
// fakeclock instead of sleeping.
package clock

import "time"

// Clock is a source of time and one-shot timers.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer that linkgate uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// System is the real clock.
var System Clock = system{}

// Or returns c, or System when c is nil: the default of every Options.Clock.
func Or(c Clock) Clock {
	if c == nil {
		return System
	}
	return c
}

type system struct{}

func (system) Now() time.Time                 { return time.Now() }
func (system) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }
