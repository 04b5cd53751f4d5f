package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/linkgate/linkgate/internal/vcsim"
	"github.com/linkgate/linkgate/probe"
)

// TestVCenterReasonsVerbatim: what /ready?verbose and the JSON report
// show for real probe failures (a refused port, a rejected password) is
// the probe's error text unaltered, whatever the password is, even when
// the password is a piece of that text.
func TestVCenterReasonsVerbatim(t *testing.T) {
	vc := startVCSim(t, "vc-user", "the right password")
	dead := testkit.ClosedAddr(t)
	want := fmt.Sprintf("%[1]s: transient: refused: connect %[1]s: Post \"https://%[1]s/sdk\": dial tcp %[1]s: connect: connection refused; "+
		"%[2]s: permanent: auth: login %[2]s: ServerFaultCode: Login failure", dead, vc)

	for _, pw := range []string{"1", "e", "connect", "refused"} {
		t.Run(pw, func(t *testing.T) {
			cfg := probe.DefaultConfig()
			cfg.URLs = []string{dead, vc}
			cfg.User, cfg.Password, cfg.Insecure = "vc-user", pw, true
			p, err := probe.New(cfg, nil, probe.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				t.Fatal(err)
			}
			g := vcenterGate(t, GateOptions{}, newFakeVCenter(p.ProbeOnce(context.Background())...))
			h := NewHandler(g, HandlerOptions{})
			t.Cleanup(h.Close)
			mux := http.NewServeMux()
			h.Register(mux)
			waitState(t, g, "vcenter failing", checkFails(CheckVCenter, "refused"))

			code, body := get(t, mux, "/ready?verbose")
			if wantBody := "[+]links ok\n[-]vcenter failed: " + want + "\nreadyz check failed\n"; code != 503 || body != wantBody {
				t.Errorf("/ready?verbose: %d\n%s\nwant 503\n%s", code, body, wantBody)
			}
			_, body = get(t, mux, "/ready", "Accept", "application/json")
			var doc struct {
				Checks []struct{ Name, Reason string } `json:"checks"`
			}
			if err := json.Unmarshal([]byte(body), &doc); err != nil || len(doc.Checks) != 2 || doc.Checks[1].Reason != want {
				t.Errorf("JSON report: %v %+v, want the vcenter reason %q", err, doc, want)
			}
			if strings.Contains(body, "REDACTED") {
				t.Errorf("JSON report substitutes text: %s", body)
			}
		})
	}
}

// startVCSim serves govmomi's vCenter simulator over HTTPS on loopback,
// accepting user and password; it returns host:port.
func startVCSim(t *testing.T, user, password string) string {
	t.Helper()
	sim, err := vcsim.StartWith(user, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	return sim.Addr()
}
