package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName("linkgate", "", name), help, labels, nil)
}

var (
	descReady       = desc("ready", "Whether the readiness gate is ready: every check has held for the stable-for period.")
	descReadyCheck  = desc("ready_check", "Whether each readiness check currently holds (before flap damping).", "check")
	descTransitions = desc("ready_transitions_total", "Transitions of the readiness gate, by new state.", "to")
	descLastChange  = desc("ready_last_change_timestamp_seconds", "Unix time of the last readiness gate transition (or of the gate's start).")
)

// Describe implements prometheus.Collector.
func (g *Gate) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReady
	ch <- descReadyCheck
	ch <- descTransitions
	ch <- descLastChange
}

// Collect implements prometheus.Collector. It reads the current State.
func (g *Gate) Collect(ch chan<- prometheus.Metric) {
	st := g.State()
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, boolValue(st.Ready))
	for _, name := range g.names {
		c, _ := st.Check(name) // not evaluated yet: 0
		ch <- prometheus.MustNewConstMetric(descReadyCheck, prometheus.GaugeValue, boolValue(c.OK), name)
	}
	ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(g.toReady.Load()), "ready")
	ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(g.toNotReady.Load()), "not_ready")
	ch <- prometheus.MustNewConstMetric(descLastChange, prometheus.GaugeValue, float64(st.Since.UnixNano())/1e9)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var (
	descWaiters     = desc("ready_waiters", "Long-poll requests (/ready?wait=) currently waiting for the gate.")
	descSubscribers = desc("events_subscribers", "Open /events streams.")
)

// Describe implements prometheus.Collector for the HTTP side of the gate.
func (h *Handler) Describe(ch chan<- *prometheus.Desc) {
	ch <- descWaiters
	ch <- descSubscribers
}

// Collect reports how many callers are parked on the gate right now.
func (h *Handler) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descWaiters, prometheus.GaugeValue, float64(len(h.waiters)))
	ch <- prometheus.MustNewConstMetric(descSubscribers, prometheus.GaugeValue, float64(len(h.subscribers)))
}
