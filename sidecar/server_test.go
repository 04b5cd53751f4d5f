package sidecar

import (
	"strings"
	"testing"

	"github.com/linkgate/linkgate/collector"
)

// TestLandingPage: the landing page links what this server serves, and
// nothing it does not (exporter-toolkit's pprof links would be 404s).
func TestLandingPage(t *testing.T) {
	health := func() collector.Health { return collector.Health{Alive: true, Verified: true} }
	g := startGate(t, GateOptions{Snapshots: healthySnapshot(), Checks: []Check{LinksCheck()}})
	h := NewHandler(g, HandlerOptions{})
	t.Cleanup(h.Close)
	for _, tc := range []struct {
		name  string
		ready *Handler
		want  []string
		not   []string
	}{
		{"exporter", nil, []string{`href="/metrics"`, `href="/healthz?verbose"`}, []string{"debug/pprof", "/ready", "/events"}},
		{"sidecar", h, []string{`href="/metrics"`, `href="/healthz?verbose"`, `href="/ready?verbose"`, `href="/events"`}, []string{"debug/pprof"}},
	} {
		srv := NewServer(ServerOptions{TelemetryPath: "/metrics", Gatherer: NewRegistry(), Health: health, Ready: tc.ready})
		code, body := get(t, srv.Handler(), "/")
		if code != 200 {
			t.Fatalf("%s: landing page %d", tc.name, code)
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: landing page lacks %s", tc.name, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(body, n) {
				t.Errorf("%s: landing page has %s", tc.name, n)
			}
		}
	}
}
