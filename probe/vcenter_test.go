package probe

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator/vpx"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
)

func TestProbeOnceSuccessAndAbout(t *testing.T) {
	s := startSim(t, simOptions{})
	p := newProber(t, s.config(), nil)
	sts := p.ProbeOnce(context.Background())
	if len(sts) != 1 {
		t.Fatalf("got %d statuses", len(sts))
	}
	st := sts[0]
	if !st.Up || st.Kind != "" || st.Reason != "" || st.LastSuccess.IsZero() {
		t.Fatalf("status %+v", st)
	}
	if st.Target != s.addr {
		t.Errorf("Target = %q, want %q", st.Target, s.addr)
	}
	want := vpx.ServiceContent.About
	got := st.About
	if got.Version != want.Version || got.Build != want.Build || got.APIType != want.ApiType ||
		got.APIVersion != want.ApiVersion || got.InstanceUUID != want.InstanceUuid || got.APIType != "VirtualCenter" {
		t.Errorf("About = %+v, want %+v", got, want)
	}
	if n := s.countCalls("Logout"); n != 1 {
		t.Errorf("ProbeOnce logged out %d times, want 1", n)
	}
	if got := metricValue(t, p, "linkgate_vcenter_logins_total", "result", "success"); got != 1 {
		t.Errorf("logins = %v, want 1", got)
	}
}

func TestProbeOnceManyTargets(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	dead := testkit.ClosedAddr(t)
	cfg.URLs = []string{dead, s.url()}
	p := newProber(t, cfg, nil)
	sts := p.ProbeOnce(context.Background())
	if len(sts) != 2 || sts[0].Target != dead || sts[1].Target != s.addr {
		t.Fatalf("statuses %+v, want one per URL in order", sts)
	}
	if sts[0].Up || sts[0].Kind != KindRefused || !sts[1].Up {
		t.Fatalf("statuses %+v", sts)
	}
	if got := metricValue(t, p, "linkgate_vcenter_probes_total", "target", dead, "result", "failure"); got != 1 {
		t.Errorf("failures for %s = %v", dead, got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_probes_total", "target", s.addr, "result", "success"); got != 1 {
		t.Errorf("successes for %s = %v", s.addr, got)
	}
	// ProbeOnce leaves the Run state alone.
	if run, _ := p.Status(); run[1].Up || !run[1].LastAttempt.IsZero() {
		t.Errorf("Run status changed by ProbeOnce: %+v", run[1])
	}
}

// TestRunOneSessionManyProbes: many probes, one login, published metrics,
// and a logout when Run ends.
func TestRunOneSessionManyProbes(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	clk := newFakeClock()
	p := newProber(t, cfg, nil, WithClock(clk))
	stop := running(t, p)
	for range 5 {
		if got := clk.NextTimer(t, guard); got != cfg.Interval {
			t.Fatalf("wait %v, want Interval", got)
		}
		clk.Advance(cfg.Interval)
	}
	clk.NextTimer(t, guard) // the 6th probe is recorded

	if n := s.countCalls("Login"); n != 1 {
		t.Errorf("vCenter saw %d logins for 6 probes, want 1", n)
	}
	if n := s.countCalls("CurrentTime"); n != 6 {
		t.Errorf("vCenter saw %d CurrentTime calls, want 6", n)
	}
	a := vpx.ServiceContent.About
	expected := fmt.Sprintf(`
# HELP linkgate_vcenter_backoff_seconds Current wait before the next attempt after a failure; 0 while healthy.
# TYPE linkgate_vcenter_backoff_seconds gauge
linkgate_vcenter_backoff_seconds{target="%[1]s"} 0
# HELP linkgate_vcenter_consecutive_failures Failed probe attempts since the last success.
# TYPE linkgate_vcenter_consecutive_failures gauge
linkgate_vcenter_consecutive_failures{target="%[1]s"} 0
# HELP linkgate_vcenter_info vCenter product information from ServiceContent.about; always 1.
# TYPE linkgate_vcenter_info gauge
linkgate_vcenter_info{api_type="VirtualCenter",api_version="%[2]s",build="%[3]s",instance_uuid="%[4]s",target="%[1]s",version="%[5]s"} 1
# HELP linkgate_vcenter_last_success_timestamp_seconds Unix time of the last successful probe; 0 if none.
# TYPE linkgate_vcenter_last_success_timestamp_seconds gauge
linkgate_vcenter_last_success_timestamp_seconds{target="%[1]s"} %[6]d
# HELP linkgate_vcenter_login_blocked_until_timestamp_seconds Unix time until which logins are held back by the failed-login limit; 0 when a login may be sent.
# TYPE linkgate_vcenter_login_blocked_until_timestamp_seconds gauge
linkgate_vcenter_login_blocked_until_timestamp_seconds{target="%[1]s"} 0
# HELP linkgate_vcenter_login_failures_remaining Logins that may still fail within the failed-login window before linkgate holds logins back (logins in flight count as failed); 0 while held back.
# TYPE linkgate_vcenter_login_failures_remaining gauge
linkgate_vcenter_login_failures_remaining{target="%[1]s"} 3
# HELP linkgate_vcenter_logins_total vCenter Login calls by result (success or failure).
# TYPE linkgate_vcenter_logins_total counter
linkgate_vcenter_logins_total{result="failure",target="%[1]s"} 0
linkgate_vcenter_logins_total{result="success",target="%[1]s"} 1
# HELP linkgate_vcenter_paused Whether probing is paused because the required network is down.
# TYPE linkgate_vcenter_paused gauge
linkgate_vcenter_paused{target="%[1]s"} 0
# HELP linkgate_vcenter_probes_total Probe attempts by result (success or failure).
# TYPE linkgate_vcenter_probes_total counter
linkgate_vcenter_probes_total{result="failure",target="%[1]s"} 0
linkgate_vcenter_probes_total{result="success",target="%[1]s"} 6
# HELP linkgate_vcenter_retries_total Probe attempts made after a failed attempt.
# TYPE linkgate_vcenter_retries_total counter
linkgate_vcenter_retries_total{target="%[1]s"} 0
# HELP linkgate_vcenter_session_active Whether a logged-in vCenter session is held for the target.
# TYPE linkgate_vcenter_session_active gauge
linkgate_vcenter_session_active{target="%[1]s"} 1
# HELP linkgate_vcenter_tls_insecure Whether TLS certificate verification is disabled for the target.
# TYPE linkgate_vcenter_tls_insecure gauge
linkgate_vcenter_tls_insecure{target="%[1]s"} 0
# HELP linkgate_vcenter_up Whether the last probe of the vCenter succeeded (1) or the target is down (0).
# TYPE linkgate_vcenter_up gauge
linkgate_vcenter_up{target="%[1]s"} 1
`, s.addr, a.ApiVersion, a.Build, a.InstanceUuid, a.Version, clk.Now().Unix())
	if err := testutil.CollectAndCompare(p, strings.NewReader(expected),
		"linkgate_vcenter_backoff_seconds", "linkgate_vcenter_consecutive_failures", "linkgate_vcenter_info",
		"linkgate_vcenter_last_success_timestamp_seconds", "linkgate_vcenter_login_blocked_until_timestamp_seconds",
		"linkgate_vcenter_login_failures_remaining", "linkgate_vcenter_logins_total", "linkgate_vcenter_paused",
		"linkgate_vcenter_probes_total", "linkgate_vcenter_retries_total", "linkgate_vcenter_session_active",
		"linkgate_vcenter_tls_insecure", "linkgate_vcenter_up"); err != nil {
		t.Error(err)
	}
	if got := metricValue(t, p, "linkgate_vcenter_probe_duration_seconds"); got != 6 {
		t.Errorf("duration histogram has %v samples, want 6", got)
	}
	problems, err := testutil.CollectAndLint(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("promlint: %s: %s", pr.Metric, pr.Text)
	}

	stop()
	if n := s.countCalls("Logout"); n != 1 {
		t.Errorf("Run ended with %d Logout calls, want 1", n)
	}
	if got := metricValue(t, p, "linkgate_vcenter_session_active"); got != 0 {
		t.Errorf("session_active = %v after Run, want 0", got)
	}
}

// TestSessionExpiry: vCenter drops the session; the next probe logs in
// again and succeeds.
func TestSessionExpiry(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	clk := newFakeClock()
	p := runProber(t, clk, cfg, nil)
	clk.NextTimer(t, guard)
	keys := s.probeSessions()
	if len(keys) != 1 {
		t.Fatalf("prober used %d sessions, want 1", len(keys))
	}
	terminateSessions(t, s, keys)

	clk.Advance(cfg.Interval)
	if got := clk.NextTimer(t, guard); got != cfg.Interval {
		t.Fatalf("after expiry: wait %v, want Interval (re-login within the attempt)", got)
	}
	st, _ := p.Status()
	if !st[0].Up || st[0].ConsecutiveFailures != 0 {
		t.Fatalf("after expiry: %+v", st[0])
	}
	if got := metricValue(t, p, "linkgate_vcenter_logins_total", "result", "success"); got != 2 {
		t.Errorf("logins = %v, want 2", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_errors_total", "class", "transient", "kind", "session_expired"); got != 1 {
		t.Errorf("session_expired errors = %v, want 1", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_probes_total", "result", "success"); got != 2 {
		t.Errorf("successful probes = %v, want 2", got)
	}
	if n := len(s.probeSessions()); n != 2 {
		t.Errorf("prober used %d sessions, want 2", n)
	}
}

// terminateSessions ends sessions from a separate admin session, as an
// operator or vCenter's idle timeout would.
func terminateSessions(t *testing.T, s *sim, keys []string) {
	t.Helper()
	ctx := context.Background()
	u := &url.URL{Scheme: "https", Host: s.addr, Path: "/sdk"}
	sc := soap.NewClient(u, true)
	defer sc.CloseIdleConnections()
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	m := session.NewManager(vc)
	if err := m.Login(ctx, url.UserPassword(simUser, simPass)); err != nil {
		t.Fatal(err)
	}
	defer m.Logout(ctx)
	if err := m.TerminateSession(ctx, keys); err != nil {
		t.Fatal(err)
	}
}

func TestTimeout(t *testing.T) {
	// The timeout also bounds the login, which must succeed under -race on
	// a loaded machine; only CurrentTime is delayed past it.
	s := startSim(t, simOptions{delay: map[string]int{"CurrentTime": 4000}})
	cfg := s.config()
	cfg.Timeout = 1500 * time.Millisecond
	p := newProber(t, cfg, nil)
	st := p.ProbeOnce(context.Background())[0]
	if st.Up || st.Class != Transient || st.Kind != KindTimeout {
		t.Fatalf("status %+v, want transient/timeout", st)
	}
	if got := metricValue(t, p, "linkgate_vcenter_logins_total", "result", "success"); got != 1 {
		t.Errorf("logins = %v: the login is not delayed and must succeed", got)
	}
}

func TestTLSVerification(t *testing.T) {
	s := startSim(t, simOptions{})
	cert := s.server.Certificate()
	sum256 := sha256.Sum256(cert.Raw)
	sum1 := sha1.Sum(cert.Raw)
	// Same port, another name: the certificate is for 127.0.0.1.
	_, port, _ := net.SplitHostPort(s.addr)
	redirect := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.addr)
	}

	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		opts  []Option
		class Class
		kind  Kind
	}{
		{name: "trusted CA", edit: func(*Config) {}},
		{name: "untrusted CA", edit: func(c *Config) { c.CAFile = "" }, class: Permanent, kind: KindTLSCertificate},
		{name: "hostname mismatch", edit: func(c *Config) { c.URLs = []string{"https://vcenter.invalid:" + port + "/sdk"} },
			opts: []Option{WithDialContext(redirect)}, class: Permanent, kind: KindTLSCertificate},
		{name: "sha256 pin", edit: func(c *Config) { c.CAFile, c.Thumbprint = "", colonHex(sum256[:]) }},
		{name: "sha1 pin lowercase no colons", edit: func(c *Config) { c.CAFile, c.Thumbprint = "", hex.EncodeToString(sum1[:]) }},
		{name: "pin skips hostname", edit: func(c *Config) {
			c.CAFile, c.Thumbprint = "", colonHex(sum256[:])
			c.URLs = []string{"https://vcenter.invalid:" + port + "/sdk"}
		}, opts: []Option{WithDialContext(redirect)}},
		{name: "wrong pin", edit: func(c *Config) { c.CAFile, c.Thumbprint = "", strings.Repeat("AB:", 31)+"AB" },
			class: Permanent, kind: KindTLSCertificate},
		{name: "CA and wrong pin", edit: func(c *Config) { c.Thumbprint = strings.Repeat("ab", 20) },
			class: Permanent, kind: KindTLSCertificate},
		{name: "insecure", edit: func(c *Config) { c.CAFile, c.Insecure = "", true }},
		{name: "CA file missing", edit: func(c *Config) { c.CAFile = filepath.Join(t.TempDir(), "nope.pem") },
			class: Permanent, kind: KindConfig},
		{name: "CA file not PEM", edit: func(c *Config) {
			c.CAFile = filepath.Join(t.TempDir(), "garbage.pem")
			os.WriteFile(c.CAFile, []byte("not a certificate"), 0o600)
		}, class: Permanent, kind: KindConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s.config()
			tc.edit(&cfg)
			p := newProber(t, cfg, nil, tc.opts...)
			st := p.ProbeOnce(context.Background())[0]
			if st.Up != (tc.kind == "") || st.Class != tc.class || st.Kind != tc.kind {
				t.Fatalf("status %+v, want class %q kind %q", st, tc.class, tc.kind)
			}
			if tc.name == "wrong pin" && !strings.Contains(st.Reason, colonHex(sum256[:])) {
				t.Errorf("reason %q does not name the server's thumbprint", st.Reason)
			}
		})
	}
}

func TestInsecureIsLoudAndVisible(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	cfg.CAFile, cfg.Insecure = "", true
	var logs logBuffer
	p := newProber(t, cfg, nil, WithLogger(logs.logger()))
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "disabled") {
		t.Errorf("no warning logged for Insecure: %q", logs.String())
	}
	if got := metricValue(t, p, "linkgate_vcenter_tls_insecure"); got != 1 {
		t.Errorf("tls_insecure = %v, want 1", got)
	}
}

// TestNotVCenter: endpoints that answer, but not as vCenter.
func TestNotVCenter(t *testing.T) {
	// Resets every connection once the client has spoken.
	reset := listen(t, func(c net.Conn) {
		c.Read(make([]byte, 1))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	// Speaks plain text: an SSH daemon or an HTTP port.
	plain := listen(t, func(c net.Conn) {
		io.WriteString(c, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
		c.Read(make([]byte, 512))
		c.Close()
	})
	status := func(code int, body string) *httptest.Server {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	busy := status(http.StatusServiceUnavailable, "busy")
	missing := status(http.StatusNotFound, "not found")
	html := status(http.StatusOK, "<html><body>welcome</body></html>")

	for _, tc := range []struct {
		name  string
		addr  string
		pin   *httptest.Server
		class Class
		kind  Kind
	}{
		{"connection reset", reset, nil, Transient, KindReset},
		{"not TLS", plain, nil, Permanent, KindProtocol},
		{"HTTP 503", busy.Listener.Addr().String(), busy, Transient, KindServerBusy},
		{"HTTP 404", missing.Listener.Addr().String(), missing, Permanent, KindProtocol},
		{"HTML, not SOAP", html.Listener.Addr().String(), html, Permanent, KindProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := configFor(tc.addr)
			cfg.Insecure = true
			if tc.pin != nil {
				sum := sha256.Sum256(tc.pin.Certificate().Raw)
				cfg.Insecure, cfg.Thumbprint = false, hex.EncodeToString(sum[:])
			}
			p := newProber(t, cfg, nil)
			st := p.ProbeOnce(context.Background())[0]
			if st.Up || st.Class != tc.class || st.Kind != tc.kind {
				t.Fatalf("status %+v, want %s/%s", st, tc.class, tc.kind)
			}
		})
	}
}

// listen serves each connection with handle on a loopback listener closed
// at cleanup; it returns the address.
func listen(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			handle(c)
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

// TestDNSFailure: a name that does not resolve. The resolver is pointed at
// a closed loopback port so that no query leaves the machine.
func TestDNSFailure(t *testing.T) {
	dead := testkit.ClosedAddr(t)
	d := &net.Dialer{Resolver: &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", dead)
		},
	}}
	cfg := configFor("vcenter.invalid")
	p := newProber(t, cfg, nil, WithDialContext(d.DialContext))
	st := p.ProbeOnce(context.Background())[0]
	if st.Up || st.Class != Transient || st.Kind != KindDNS {
		t.Fatalf("status %+v, want transient/dns", st)
	}
	if st.Target != "vcenter.invalid" {
		t.Errorf("Target = %q", st.Target)
	}
}

// TestPasswordFileRotationWithRealClock is the rotation story end to end
// on the wall clock: an auth failure, then the secret is rotated, and the
// target comes up without a restart and long before MaxBackoff.
func TestPasswordFileRotationWithRealClock(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	cfg.Password = ""
	cfg.MaxBackoff = time.Hour // only the file watch can bring it up in time
	cfg.BaseBackoff = time.Hour
	dir := t.TempDir()
	// Kubernetes layout: the file is a symlink into a directory swapped
	// atomically through the ..data symlink.
	writeSecretDir(t, dir, "v1", "stale password")
	cfg.PasswordFile = filepath.Join(dir, "password")
	if err := os.Symlink("..data/password", cfg.PasswordFile); err != nil {
		t.Fatal(err)
	}
	p := newProber(t, cfg, nil)
	running(t, p)
	waitStatus(t, p, 0, "auth failure", func(s Status) bool { return s.Kind == KindAuth })
	writeSecretDir(t, dir, "v2", simPass)
	st := waitStatus(t, p, 0, "up after rotation", func(s Status) bool { return s.Up })
	if st.ConsecutiveFailures != 0 || st.Kind != "" {
		t.Errorf("after rotation: %+v", st)
	}
}

// writeSecretDir mimics the kubelet's atomic writer: content goes into a
// new directory and the ..data symlink is renamed over the old one.
func writeSecretDir(t *testing.T, dir, version, password string) {
	t.Helper()
	vdir := filepath.Join(dir, "..v-"+version)
	if err := os.Mkdir(vdir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vdir, "password"), []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(vdir), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}
