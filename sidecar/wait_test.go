package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/collector"
)

func TestWaitURLReady(t *testing.T) {
	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{}, vc)
	h := NewHandler(g, HandlerOptions{})
	waiting := make(chan struct{}, 1)
	h.onWait = func() { waiting <- struct{}{} }
	srv := serve(t, h)
	waitState(t, g, "not ready", isNotReady)

	done := make(chan error, 1)
	go func() {
		done <- WaitURL(context.Background(), srv.URL, WaitOptions{Client: srv.Client(), Timeout: hang})
	}()
	recv(t, waiting, "long-poll parked")
	vc.set(vcUp(time.Now()))
	if err := recv(t, done, "WaitURL/WaitLocal result"); err != nil {
		t.Errorf("WaitURL = %v, want nil", err)
	}
}

func TestWaitURLTimesOut(t *testing.T) {
	g := vcenterGate(t, GateOptions{}, newFakeVCenter(vcRefused()))
	h := NewHandler(g, HandlerOptions{})
	srv := serve(t, h)
	waitState(t, g, "not ready", isNotReady)

	err := WaitURL(context.Background(), srv.URL+"/ready?exclude=links", WaitOptions{Client: srv.Client(), Timeout: 300 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) ||
		!strings.Contains(err.Error(), "vcenter failed: transient: refused: connection refused") {
		t.Errorf("WaitURL = %v, want a time-out naming the failing check", err)
	}
}

func TestWaitURLHardErrors(t *testing.T) {
	g := vcenterGate(t, GateOptions{}, newFakeVCenter(vcRefused()))
	h := NewHandler(g, HandlerOptions{})
	authed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "admin" || p != "right" {
			w.Header().Set("WWW-Authenticate", `Basic realm="linkgate"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(authed)
	t.Cleanup(func() { h.Close(); srv.Close() })
	dir := t.TempDir()
	pwFile := func(pw string) string {
		f := filepath.Join(dir, pw)
		if err := os.WriteFile(f, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	wrong, right := pwFile("wrong-secret"), pwFile("right")
	for _, tc := range []struct {
		url, user, pwFile, want string
	}{
		{srv.URL + "/ready", "admin", wrong, "401 Unauthorized"},
		{srv.URL + "/ready/nosuch", "admin", right, "404 Not Found"},
		{strings.Replace(srv.URL, "http://", "http://admin:right-secret@", 1) + "/ready", "", "", "user info in the URL is not accepted"},
		{"ftp://example.com/ready", "", "", "bad URL"},
		{"http://[::1/ready", "", "", "bad URL"},
		{"http://sidecar.example/ready", "", "", "no such host"},
	} {
		client := srv.Client()
		if strings.Contains(tc.url, "sidecar.example") {
			// No DNS in tests: the transport answers like a resolver would.
			client = &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "sidecar.example", IsNotFound: true}}
			}}}
		}
		err := WaitURL(context.Background(), tc.url, WaitOptions{Client: client, Timeout: hang, User: tc.user, PasswordFile: tc.pwFile})
		if err == nil || errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("WaitURL(%s) = %v, want a hard error with %q", tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
	// With the right credentials it waits on the gate (not ready: vCenter refused).
	err := WaitURL(context.Background(), srv.URL, WaitOptions{Client: srv.Client(), Timeout: 200 * time.Millisecond, User: "admin", PasswordFile: right})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "vcenter failed") {
		t.Errorf("WaitURL with credentials = %v, want a time-out naming vcenter", err)
	}
}

// TestWaitURLRefusesOtherEndpoints: any 200 is not "ready". Pointed at
// /healthz or /metrics by mistake, wait fails at once instead of letting a
// migration start while the gate is closed.
func TestWaitURLRefusesOtherEndpoints(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "linkgate_ready 0") })
	mux.HandleFunc("/json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for _, path := range []string{"/healthz", "/metrics", "/json"} {
		err := WaitURL(context.Background(), srv.URL+path, WaitOptions{Client: srv.Client(), Timeout: hang})
		if !errors.Is(err, ErrNotGate) {
			t.Errorf("WaitURL(%s) = %v, want ErrNotGate", path, err)
		}
	}
}

// TestWaitURLReportsProgress: while it waits, wait says why, periodically.
func TestWaitURLReportsProgress(t *testing.T) {
	g := vcenterGate(t, GateOptions{}, newFakeVCenter(vcRefused()))
	h := NewHandler(g, HandlerOptions{})
	srv := serve(t, h)
	waitState(t, g, "not ready", isNotReady)
	// The first report ends the wait: nothing here depends on how fast
	// the machine is.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var reports []string
	err := WaitURL(ctx, srv.URL, WaitOptions{Client: srv.Client(), Timeout: hang,
		ProgressEvery: 100 * time.Millisecond, Progress: func(_ time.Duration, why string) { reports = append(reports, why); cancel() }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitURL = %v, want the cancel from the first report", err)
	}
	if len(reports) != 1 || !strings.Contains(reports[0], "vcenter failed: transient: refused") {
		t.Errorf("progress reports %q, want one naming the failing vcenter check", reports)
	}
}

// TestWaitURLWhileStarting: connection refused is retried until the
// sidecar listens.
func TestWaitURLWhileStarting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	refused := make(chan struct{}, 1)
	dialer := &net.Dialer{}
	transport := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, a)
		if errors.Is(err, syscall.ECONNREFUSED) {
			select {
			case refused <- struct{}{}:
			default:
			}
		}
		return c, err
	}}
	t.Cleanup(transport.CloseIdleConnections)
	done := make(chan error, 1)
	go func() {
		done <- WaitURL(context.Background(), "http://"+addr, WaitOptions{Client: &http.Client{Transport: transport}, Timeout: hang})
	}()
	recv(t, refused, "a refused connection")

	g := vcenterGate(t, GateOptions{}, newFakeVCenter(vcUp(time.Now())))
	h := NewHandler(g, HandlerOptions{})
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("re-listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(func() { h.Close(); srv.Close() })
	if err := recv(t, done, "WaitURL/WaitLocal result"); err != nil {
		t.Errorf("WaitURL = %v, want nil once the sidecar is up", err)
	}
}

func TestWaitLocal(t *testing.T) {
	a, b := pair(t)
	c := startCollector(t, a)
	va := func(state string) LocalWait {
		r, err := ParseLinkRequirement("va" + state)
		if err != nil {
			t.Fatal(err)
		}
		return LocalWait{Links: []LinkRequirement{r}}
	}
	ctx := context.Background()
	if err := WaitLocal(ctx, c, va(""), hang, nil); err != nil {
		t.Errorf("va up: %v", err)
	}
	if err := WaitLocal(ctx, c, LocalWait{}, hang, nil); err != nil {
		t.Errorf("any link up: %v", err)
	}

	b.IP(t, "link", "set", "vb", "down")
	waitSnapshot(t, c, "va without carrier", func(s *collector.Snapshot) bool { l, _ := s.LinkByName("va"); return !l.Up })
	err := WaitLocal(ctx, c, va(":up"), 100*time.Millisecond, nil)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "va: operstate down, want up") {
		t.Errorf("va without carrier: %v", err)
	}
	if err := WaitLocal(ctx, c, va(":down"), 0, nil); err != nil {
		t.Errorf("va:down without carrier: %v", err)
	}

	done := make(chan error, 1)
	go func() { done <- WaitLocal(ctx, c, va(":up"), hang, nil) }()
	b.IP(t, "link", "set", "vb", "up")
	if err := recv(t, done, "WaitURL/WaitLocal result"); err != nil {
		t.Errorf("waiting for carrier: %v", err)
	}

	inet := va("")
	inet.IPv4 = true
	if err := WaitLocal(ctx, c, inet, 0, nil); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "va: no global inet address") {
		t.Errorf("-4 without address: %v", err)
	}
	go func() { done <- WaitLocal(ctx, c, inet, hang, nil) }()
	a.IP(t, "addr", "add", "10.85.0.1/24", "dev", "va")
	if err := recv(t, done, "WaitURL/WaitLocal result"); err != nil {
		t.Errorf("-4 after address: %v", err)
	}

	missing, _ := ParseLinkRequirement("missing0")
	both := LocalWait{Links: []LinkRequirement{va("").Links[0], missing}}
	if err := WaitLocal(ctx, c, both, 0, nil); !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "missing0: missing") {
		t.Errorf("all of va, missing0: %v", err)
	}
	both.Any = true
	if err := WaitLocal(ctx, c, both, 0, nil); err != nil {
		t.Errorf("--any va missing0: %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := WaitLocal(cctx, c, both, hang, nil); err != nil {
		t.Errorf("satisfied wait with a cancelled ctx: %v", err)
	}
	if err := WaitLocal(cctx, c, LocalWait{Links: []LinkRequirement{missing}}, hang, nil); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestLocalWaitRules(t *testing.T) {
	for _, s := range []string{"", ":up", "eth0:routable", "eth0:unknown", "a-very-long-interface-name", "eth0/1"} {
		if _, err := ParseLinkRequirement(s); err == nil {
			t.Errorf("ParseLinkRequirement(%q) accepted", s)
		}
	}
	snap := &collector.Snapshot{Version: 1, Verified: true, Links: []collector.Link{
		{Index: 1, Name: "dorm", AdminUp: true, Carrier: true, OperState: collector.OperDormant},
		{Index: 2, Name: "tun0", AdminUp: true, Carrier: true, OperState: collector.OperUnknown, Up: true},
		{Index: 3, Name: "nocarrier", AdminUp: true, OperState: collector.OperUnknown},
	}}
	for _, tc := range []struct {
		spec string
		ok   bool
	}{
		{"dorm:dormant", true},
		{"dorm:testing", true},
		{"dorm", false},
		{"tun0", true},
		{"nocarrier:lowerlayerdown", true},
		{"nocarrier:testing", false},
	} {
		r, err := ParseLinkRequirement(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		if ok, why := (LocalWait{Links: []LinkRequirement{r}}).Satisfied(snap); ok != tc.ok {
			t.Errorf("%s: satisfied=%v (%s), want %v", tc.spec, ok, why, tc.ok)
		}
	}
	if ok, _ := (LocalWait{}).Satisfied(&collector.Snapshot{}); ok {
		t.Error("satisfied before the first dump")
	}
}

// TestGateDocWhy: wait's progress reason is the gate's own document read
// as the server writes it: failing checks the request excluded are not
// the reason (found in review: wait blamed them and hid the damping).
func TestGateDocWhy(t *testing.T) {
	v := verdict{ready: false, readyAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), excluded: map[string]bool{CheckVCenter: true},
		checks: []CheckStatus{{CheckResult: CheckResult{Name: CheckLinks, OK: true}}, {CheckResult: CheckResult{Name: CheckVCenter, Reason: "transient: refused"}}}}
	body := mustJSON(t, newReadyDoc(v))
	d, ok := parseGateDoc(body)
	if !ok {
		t.Fatalf("the gate's own document not taken for one: %s", body)
	}
	if got, want := d.why(), "not ready: every check holds; damping until 2030-01-02T03:04:05Z"; got != want {
		t.Errorf("why = %q, want %q", got, want)
	}
	v.excluded = nil
	d, _ = parseGateDoc(mustJSON(t, newReadyDoc(v)))
	if got, want := d.why(), "not ready: vcenter failed: transient: refused"; got != want {
		t.Errorf("why = %q, want %q", got, want)
	}
	if _, ok := parseGateDoc([]byte(`{"checks":[]}`)); ok {
		t.Error("a document without ready taken for the gate's")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
