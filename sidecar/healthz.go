package sidecar

import (
	"fmt"
	"net/http"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/clock"
)

// HealthzHandler serves /healthz: liveness, not readiness. It answers 503
// only when a restart could help (the collector's event loop is stuck or
// cannot reach the kernel). A state in doubt after lost events does not
// fail it, since linkgate is already rebuilding that state; ?verbose
// shows it, kube-apiserver style, beside the liveness line.
func HealthzHandler(health func() collector.Health, clk clock.Clock) http.Handler {
	clk = clock.Or(clk)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := health()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if !h.Alive {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, verbose := r.URL.Query()["verbose"]
		if !verbose {
			if h.Alive {
				fmt.Fprintln(w, "ok")
			} else {
				fmt.Fprintln(w, h.Problem)
			}
			return
		}
		if h.Alive {
			fmt.Fprintln(w, "[+]event-loop ok")
		} else {
			fmt.Fprintf(w, "[-]event-loop failed: %s\n", h.Problem)
		}
		switch {
		case h.Verified:
			fmt.Fprintln(w, "[+]netlink-state-verified ok")
		case h.DoubtSince.IsZero():
			fmt.Fprintf(w, "[-]netlink-state-verified failed (not a liveness failure): %s\n", h.Doubt)
		default:
			fmt.Fprintf(w, "[-]netlink-state-verified failed (not a liveness failure): %s, for %s\n",
				h.Doubt, clk.Now().Sub(h.DoubtSince).Round(time.Millisecond))
		}
		if h.Alive {
			fmt.Fprintln(w, "healthz check passed")
		} else {
			fmt.Fprintln(w, "healthz check failed")
		}
	})
}
