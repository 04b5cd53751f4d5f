package sidecar

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/linkgate/linkgate/internal/clock"
)

// SystemdOptions configure NotifySystemd.
type SystemdOptions struct {
	// Status is what STATUS= says now, and a channel closed when it may
	// have changed: GateStatus (sidecar) or SnapshotStatus (exporter).
	Status func() (string, <-chan struct{})
	// Alive gates the watchdog: WATCHDOG=1 is sent only while it returns
	// true (e.g. the collector's Alive). Nil: always alive.
	Alive  func() bool
	Clock  clock.Clock
	Logger *slog.Logger
}

// maxStatus keeps STATUS= readable in `systemctl status`.
const maxStatus = 400

// GateStatus is the gate's one-line summary for STATUS=.
func GateStatus(g *Gate) func() (string, <-chan struct{}) {
	return func() (string, <-chan struct{}) {
		st := g.State()
		return st.Summary(), st.Changed()
	}
}

// SnapshotStatus is the network's state for STATUS= where there is no gate
// (the exporter): "network up", or "network down: eth0", and whether the
// state is verified.
func SnapshotStatus(src Snapshots) func() (string, <-chan struct{}) {
	return func() (string, <-chan struct{}) {
		s := src.Snapshot()
		var b strings.Builder
		switch {
		case s.Version == 0:
			b.WriteString("network: no kernel state yet")
		case s.Network.Up:
			b.WriteString("network up")
		default:
			b.WriteString("network down")
			if len(s.Network.Down) > 0 {
				b.WriteString(": " + strings.Join(s.Network.Down, ", "))
			}
		}
		if s.Version > 0 && !s.Verified {
			b.WriteString("; state unverified: " + s.Doubt)
		}
		return b.String(), s.Changed()
	}
}

// NotifySystemd speaks sd_notify(3) when NOTIFY_SOCKET is set (otherwise
// it returns nil at once). Call it once the HTTP server is serving: it
// sends READY=1 with STATUS=, a new STATUS= whenever it changes,
// WATCHDOG=1 every half WATCHDOG_USEC while Alive holds, and STOPPING=1
// when ctx ends. It returns when ctx ends.
func NotifySystemd(ctx context.Context, opts SystemdOptions) error {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	clk := clock.Or(opts.Clock)
	alive := opts.Alive
	if alive == nil {
		alive = func() bool { return true }
	}
	failed := false
	notify := func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil && !failed {
			failed = true // say it once, not every watchdog period
			log.Warn("sd_notify failed", "err", err)
		}
	}
	status := func(summary string) string {
		return "STATUS=" + truncate(oneLine(summary), maxStatus)
	}

	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("ignoring systemd watchdog settings", "err", err)
		interval = 0
	}
	summary, changed := opts.Status()
	notify(daemon.SdNotifyReady + "\n" + status(summary))

	var watchdog clock.Timer
	arm := func() {
		if interval > 0 {
			watchdog = clk.NewTimer(interval / 2)
		}
	}
	arm()
	defer func() {
		if watchdog != nil {
			watchdog.Stop()
		}
	}()
	for {
		var fire <-chan time.Time
		if watchdog != nil {
			fire = watchdog.C()
		}
		select {
		case <-ctx.Done():
			notify(daemon.SdNotifyStopping)
			return nil
		case <-changed:
			var next string
			next, changed = opts.Status()
			if next != summary { // a snapshot changes far more often than its summary
				summary = next
				notify(status(summary))
			}
		case <-fire:
			if alive() {
				notify(daemon.SdNotifyWatchdog)
			}
			arm()
		}
	}
}
