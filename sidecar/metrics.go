package sidecar

import (
	"github.com/linkgate/linkgate/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
)

// desc names a metric of the gate, its HTTP endpoints or its notifiers.
func desc(name, help string, labels ...string) *prometheus.Desc {
	return metric.NewDesc("", name, help, labels...)
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
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, metric.Bool(st.Ready))
	for _, name := range g.names {
		c, _ := st.Check(name) // not evaluated yet: 0
		ch <- prometheus.MustNewConstMetric(descReadyCheck, prometheus.GaugeValue, metric.Bool(c.OK), name)
	}
	ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(g.toReady.Load()), "ready")
	ch <- prometheus.MustNewConstMetric(descTransitions, prometheus.CounterValue, float64(g.toNotReady.Load()), "not_ready")
	ch <- prometheus.MustNewConstMetric(descLastChange, prometheus.GaugeValue, float64(st.Since.UnixNano())/1e9)
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

var (
	descWebhookDeliveries = desc("webhook_deliveries_total", "Webhook notifications by final result: success (2xx), rejected (4xx, not retried), failed (gave up after retries).", "result")
	descWebhookRetries    = desc("webhook_retries_total", "Webhook delivery attempts that were retried after a 5xx, 429 or connection error.")
	descWebhookDropped    = desc("webhook_dropped_total", "Webhook notifications dropped undelivered: queue full (oldest dropped) or shutdown.")
	descWebhookQueue      = desc("webhook_queue_length", "Webhook notifications waiting to be delivered, over all hooks.")
)

// Describe implements prometheus.Collector.
func (w *Webhooks) Describe(ch chan<- *prometheus.Desc) {
	ch <- descWebhookDeliveries
	ch <- descWebhookRetries
	ch <- descWebhookDropped
	ch <- descWebhookQueue
}

// Collect implements prometheus.Collector.
func (w *Webhooks) Collect(ch chan<- prometheus.Metric) {
	for _, r := range deliveryResults {
		ch <- prometheus.MustNewConstMetric(descWebhookDeliveries, prometheus.CounterValue, float64(w.deliveries[r].Load()), r)
	}
	ch <- prometheus.MustNewConstMetric(descWebhookRetries, prometheus.CounterValue, float64(w.retries.Load()))
	ch <- prometheus.MustNewConstMetric(descWebhookDropped, prometheus.CounterValue, float64(w.dropped.Load()))
	queued := 0
	for _, h := range w.hooks {
		queued += h.len()
	}
	ch <- prometheus.MustNewConstMetric(descWebhookQueue, prometheus.GaugeValue, float64(queued))
}

var (
	descEmailDeliveries = desc("email_deliveries_total", "Email notifications by final result: success (accepted by the SMTP server), rejected (5xx reply, not retried), failed (gave up after retries, or refused to send over a connection that would not be secure).", "result")
	descEmailRetries    = desc("email_retries_total", "Email delivery attempts that were retried after a 4xx reply or a connection error.")
	descEmailDropped    = desc("email_dropped_total", "Email notifications dropped undelivered: queue full (oldest dropped) or shutdown.")
	descEmailQueue      = desc("email_queue_length", "Email notifications waiting to be delivered.")
)

// Describe implements prometheus.Collector.
func (e *Email) Describe(ch chan<- *prometheus.Desc) {
	ch <- descEmailDeliveries
	ch <- descEmailRetries
	ch <- descEmailDropped
	ch <- descEmailQueue
}

// Collect implements prometheus.Collector.
func (e *Email) Collect(ch chan<- prometheus.Metric) {
	for _, r := range deliveryResults {
		ch <- prometheus.MustNewConstMetric(descEmailDeliveries, prometheus.CounterValue, float64(e.deliveries[r].Load()), r)
	}
	ch <- prometheus.MustNewConstMetric(descEmailRetries, prometheus.CounterValue, float64(e.retries.Load()))
	ch <- prometheus.MustNewConstMetric(descEmailDropped, prometheus.CounterValue, float64(e.dropped.Load()))
	ch <- prometheus.MustNewConstMetric(descEmailQueue, prometheus.GaugeValue, float64(e.queued()))
}

var (
	descDaemonCommands    = desc("hyper2kvm_commands_total", "Commands linkgate sent to hyper2kvm's daemon control socket, by command (status, pause, resume) and result: ok, error (the daemon answered error), unreachable (no socket, connection refused), timeout, invalid (not a JSON reply).", "socket", "command", "result")
	descDaemonPaused      = desc("hyper2kvm_paused_by_linkgate", "Whether linkgate holds a pause of hyper2kvm's daemon that it will resume when the gate opens (1), or none (0).", "socket")
	descDaemonReachable   = desc("hyper2kvm_daemon_reachable", "Whether the last command to hyper2kvm's daemon got the protocol's answer, ok or error (1), or not: no socket, refused, timeout, not JSON (0). 0 before the first command.", "socket")
	descDaemonStateErrors = desc("hyper2kvm_state_file_errors_total", "Failures of the file where linkgate remembers that it paused hyper2kvm's daemon: unreadable or corrupt at start (the pause is then not taken as linkgate's), or not written or removed.", "socket")
)

// Describe implements prometheus.Collector.
func (d *Daemon) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDaemonCommands
	ch <- descDaemonPaused
	ch <- descDaemonReachable
	ch <- descDaemonStateErrors
}

// Collect implements prometheus.Collector. Every series exists from the
// start, so increase() sees the first failure.
func (d *Daemon) Collect(ch chan<- prometheus.Metric) {
	socket := d.opts.Socket
	for _, c := range daemonCommands {
		for _, r := range daemonResults {
			ch <- prometheus.MustNewConstMetric(descDaemonCommands, prometheus.CounterValue, float64(d.commands[[2]string{c, r}].Load()), socket, c, r)
		}
	}
	ch <- prometheus.MustNewConstMetric(descDaemonPaused, prometheus.GaugeValue, metric.Bool(d.paused.Load()), socket)
	ch <- prometheus.MustNewConstMetric(descDaemonReachable, prometheus.GaugeValue, metric.Bool(d.reachable.Load()), socket)
	ch <- prometheus.MustNewConstMetric(descDaemonStateErrors, prometheus.CounterValue, float64(d.stateErrors.Load()), socket)
}
