package sidecar

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/probe"
	"github.com/vmware/govmomi/simulator"
)

// TestVCenterReasonsVerbatim: what /ready?verbose and the JSON report
// show for real probe failures (a refused port, a rejected password) is
// the probe's error text unaltered, whatever the password is, even when
// the password is a piece of that text.
func TestVCenterReasonsVerbatim(t *testing.T) {
	vc := startVCSim(t, "vc-user", "the right password")
	dead := closedAddr(t)
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
			var statuses []VCenterStatus
			for _, s := range p.ProbeOnce(context.Background()) {
				statuses = append(statuses, VCenterStatus{
					Target: s.Target, Up: s.Up, LastSuccess: s.LastSuccess,
					Class: string(s.Class), Kind: s.Kind, Reason: s.Reason, Permanent: s.Permanent, Paused: s.Paused,
				})
			}
			g := vcenterGate(t, GateOptions{}, newFakeVCenter(statuses...))
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
	m := simulator.VPX()
	m.ClusterHost, m.Machine = 1, 0
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(user, password)}
	srv := m.Service.NewServer()
	t.Cleanup(func() { srv.Close(); m.Remove() })
	return srv.URL.Host
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
