// Package metric holds the rules every linkgate metric follows, so that
// the collector, the probe, the gate and the HTTP code name and encode
// their series the same way: every name is linkgate_<subsystem>_<name>,
// built by Name, and a boolean is 1 or 0.
package metric

import "github.com/prometheus/client_golang/prometheus"

// Namespace prefixes every metric linkgate exports.
const Namespace = "linkgate"

// Name returns linkgate_<subsystem>_<name> (no subsystem: linkgate_<name>).
func Name(subsystem, name string) string {
	return prometheus.BuildFQName(Namespace, subsystem, name)
}

// NewDesc is prometheus.NewDesc for a name built by Name.
func NewDesc(subsystem, name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Name(subsystem, name), help, labels, nil)
}

// Bool is a boolean as a sample value.
func Bool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
