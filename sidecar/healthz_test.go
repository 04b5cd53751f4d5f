package sidecar

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/clock/fakeclock"
)

func TestHealthz(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name        string
		health      collector.Health
		target      string
		code        int
		wantLines   []string
		unwantLines []string
	}{
		{name: "alive and verified", health: collector.Health{Alive: true, Verified: true}, target: "/healthz",
			code: http.StatusOK, wantLines: []string{"ok"}},
		{name: "in doubt is still live", target: "/healthz",
			health: collector.Health{Alive: true, Doubt: "resyncing after lost events (overflow)", DoubtSince: now.Add(-1500 * time.Millisecond)},
			code:   http.StatusOK, wantLines: []string{"ok"}},
		{name: "in doubt, verbose", target: "/healthz?verbose",
			health: collector.Health{Alive: true, Doubt: "resyncing after lost events (overflow)", DoubtSince: now.Add(-1500 * time.Millisecond)},
			code:   http.StatusOK, wantLines: []string{
				"[+]event-loop ok",
				"[-]netlink-state-verified failed (not a liveness failure): resyncing after lost events (overflow), for 1.5s",
				"healthz check passed",
			}},
		{name: "verified, verbose", health: collector.Health{Alive: true, Verified: true}, target: "/healthz?verbose",
			code: http.StatusOK, wantLines: []string{"[+]event-loop ok", "[+]netlink-state-verified ok", "healthz check passed"}},
		{name: "stuck", health: collector.Health{Problem: "event loop stuck since 2030-01-02T03:03:00Z", Verified: true}, target: "/healthz",
			code: http.StatusServiceUnavailable, wantLines: []string{"event loop stuck since 2030-01-02T03:03:00Z"}},
		{name: "stuck, verbose", health: collector.Health{Problem: "event loop not running"}, target: "/healthz?verbose",
			code: http.StatusServiceUnavailable, wantLines: []string{"[-]event-loop failed: event loop not running", "healthz check failed"}, unwantLines: []string{"healthz check passed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := HealthzHandler(func() collector.Health { return tc.health }, fakeclock.New(now))
			code, body := get(t, h, tc.target)
			if code != tc.code {
				t.Errorf("status %d, want %d\n%s", code, tc.code, body)
			}
			lines := strings.Split(strings.TrimSpace(body), "\n")
			for _, w := range tc.wantLines {
				if !slices.Contains(lines, w) {
					t.Errorf("body lacks line %q:\n%s", w, body)
				}
			}
			for _, w := range tc.unwantLines {
				if slices.Contains(lines, w) {
					t.Errorf("body has line %q:\n%s", w, body)
				}
			}
		})
	}
}

// TestProbeOnly: the health listener's /ready/ serves the gate's checks,
// not the host and VM gates (no auth there).
func TestProbeOnly(t *testing.T) {
	h := probeOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	for path, want := range map[string]int{
		"/ready/links": http.StatusTeapot, "/ready/vcenter": http.StatusTeapot,
		"/ready/host/esx1": http.StatusNotFound, "/ready/vm/vm-1": http.StatusNotFound, "/ready/vm/": http.StatusNotFound,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
	}
}
