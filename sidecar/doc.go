// Package sidecar owns linkgate's readiness gate and everything that reports
// it: the checks, the gate that composes them, the HTTP server (/metrics,
// /healthz, /ready, /ready/<check>, /events), the gate's metrics, systemd,
// webhook and email notifications, and the library halves of `linkgate
// wait` and `linkgate check`.
//
// State flows one way. The collector publishes kernel snapshots and the
// vCenter probe publishes probe.Status values, each with a change channel;
// the Gate evaluates every Check on each change (never on a ticker), applies
// flap damping, and publishes an immutable State with its own Changed
// channel. Everything else in this package reads States.
//
// Gate.decide is the one rule of readiness (every judged check holds and
// has held for stable-for): the gate's published verdict and every request
// that excludes checks (/ready?exclude=) reach theirs through it.
//
// Checks follow kube-apiserver's healthz model: each is a value with a
// Name and a Check method, Checks is the one place they are composed, and
// the HTTP output uses its "[+]name ok" / "[-]name failed: reason" lines.
//
// The package defines the small interfaces it consumes (Snapshots,
// RouteLookup, RequiredSetter, VCenterSource); *collector.Collector,
// *collector.Static and *probe.Prober satisfy them. It reads the probe's
// own Status type rather than a copy of it.
package sidecar
