package sidecar

import (
	"context"
	"net/netip"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/probe"
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

// VCenterSource publishes the vCenter probe's verdicts, one per target;
// the channel is closed at the next change. *probe.Prober satisfies it:
// the gate reads probe.Status itself, the one type for that fact.
type VCenterSource interface {
	Status() ([]probe.Status, <-chan struct{})
}

// The collector is the snapshot source, the route lookup and, for
// required_interfaces: auto, the setter; its one-shot form (check) is the
// first two; the prober is the vCenter and inventory source, each
// target's Reach a reachability source.
var (
	_ Snapshots       = (*collector.Static)(nil)
	_ RouteLookup     = (*collector.Static)(nil)
	_ Snapshots       = (*collector.Collector)(nil)
	_ RouteLookup     = (*collector.Collector)(nil)
	_ RequiredSetter  = (*collector.Collector)(nil)
	_ VCenterSource   = (*probe.Prober)(nil)
	_ InventorySource = (*probe.Prober)(nil)
	_ ReachSource     = (*probe.Reach)(nil)
	_ VMSource        = (*probe.Prober)(nil)
)
