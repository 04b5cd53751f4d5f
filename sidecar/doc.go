// Package sidecar owns linkgate's readiness gate and everything that reports
// it: the checks, the gate that composes them, the HTTP endpoints (/ready,
// /ready/<check>, /events), the gate's metrics, systemd and webhook
// notifications, and the library halves of `linkgate wait` and
// `linkgate check`.
//
// State flows one way. The collector publishes kernel snapshots and a
// VCenterSource publishes probe results, each with a change channel; the
// Gate evaluates every Check on each change (never on a ticker), applies
// flap damping, and publishes an immutable State with its own Changed
// channel. Everything else in this package reads States.
//
// Checks follow kube-apiserver's healthz model: each is a value with a
// Name and a Check method, Checks is the one place they are composed, and
// the HTTP output uses its "[+]name ok" / "[-]name failed: reason" lines.
//
// The package takes small interfaces (Snapshots, RouteLookup,
// RequiredSetter, VCenterSource) that *collector.Collector and the vCenter
// prober satisfy; it does not import the prober.
package sidecar
