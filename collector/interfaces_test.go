package collector_test

import (
	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/sidecar"
)

// A Static serves the sidecar's checks as a running Collector does
// (sidecar/sources.go asserts the same of *Collector).
var (
	_ sidecar.Snapshots   = (*collector.Static)(nil)
	_ sidecar.RouteLookup = (*collector.Static)(nil)
)
