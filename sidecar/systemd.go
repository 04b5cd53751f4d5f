package sidecar

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/linkgate/linkgate/internal/clock"
)

// SystemdOptions configure NotifySystemd.
type SystemdOptions struct {
	Gate *Gate
	// Alive gates the watchdog: WATCHDOG=1 is sent only while it returns
	// true (e.g. the collector's Alive). Nil: always alive.
	Alive  func() bool
	Clock  clock.Clock
	Logger *slog.Logger
}

// maxStatus keeps STATUS= readable in `systemctl status`.
const maxStatus = 400

// NotifySystemd speaks sd_notify(3) when NOTIFY_SOCKET is set (otherwise
// it returns nil at once). Call it once the HTTP server is serving: it
// sends READY=1 with the gate's STATUS=, a new STATUS= on every gate
// change, WATCHDOG=1 every half WATCHDOG_USEC while Alive holds, and
// STOPPING=1 when ctx ends. It returns when ctx ends.
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
	status := func(st *State) string {
		return "STATUS=" + truncate(oneLine(st.Summary()), maxStatus)
	}

	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("ignoring systemd watchdog settings", "err", err)
		interval = 0
	}
	st := opts.Gate.State()
	notify(daemon.SdNotifyReady + "\n" + status(st))

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
		case <-st.Changed():
			st = opts.Gate.State()
			notify(status(st))
		case <-fire:
			if alive() {
				notify(daemon.SdNotifyWatchdog)
			}
			arm()
		}
	}
}
