package sidecar

import (
	"context"
	"net/netip"
	"time"

	"github.com/linkgate/linkgate/collector"
)

// Snapshots is the collector as the sidecar sees it: the current kernel
// state, whose Changed channel signals the next one.
type Snapshots interface {
	Snapshot() *collector.Snapshot
}

// RouteLookup asks the kernel which route it would use for an address
// (`ip route get`).
type RouteLookup interface {
	RouteGet(ctx context.Context, dst netip.Addr) (collector.Route, error)
}

// RequiredSetter replaces the collector's required interfaces.
type RequiredSetter interface {
	SetRequired(names []string)
}

// Resolver resolves vCenter host names; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// VCenterStatus is the vCenter prober's latest verdict on one target.
type VCenterStatus struct {
	// Target names the endpoint (host or URL without credentials).
	Target string
	// Up: the last probe succeeded.
	Up bool
	// LastSuccess is when a probe last succeeded (zero: never).
	LastSuccess time.Time
	// Class and Kind classify the last failure (e.g. "network",
	// "connection_refused"); Reason is its human text.
	Class, Kind, Reason string
	// Permanent: the failure will not clear by itself (credentials,
	// certificate pin, not a vSphere endpoint...).
	Permanent bool
	// Paused: probing is paused, e.g. because the network is down.
	Paused bool
}

// VCenterSource publishes the prober's results. The channel is closed at
// the next change.
type VCenterSource interface {
	VCenterStatus() ([]VCenterStatus, <-chan struct{})
}

// Clock is the time source of the gate, the HTTP waits and the notifiers;
// tests inject a fake one.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer from a Clock.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time                 { return time.Now() }
func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }

func clockOrSystem(c Clock) Clock {
	if c == nil {
		return systemClock{}
	}
	return c
}

// The collector is the snapshot source, the route lookup and, for
// required_interfaces: auto, the setter.
var (
	_ Snapshots      = (*collector.Collector)(nil)
	_ RouteLookup    = (*collector.Collector)(nil)
	_ RequiredSetter = (*collector.Collector)(nil)
)
