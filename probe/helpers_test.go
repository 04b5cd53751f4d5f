package probe

import (
	"crypto/tls"
	"encoding/pem"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
	"github.com/linkgate/linkgate/internal/clock/fakeclock"
	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// guard bounds every wait in these tests. It is a failure guard, not a
// timing assertion: on a loaded machine things are slow, not wrong.
const guard = 20 * time.Second

const (
	simUser = "probe@vsphere.local"
	simPass = "correct horse battery staple"
)

// sim is an in-process vCenter (govmomi's simulator, VPX model) over HTTPS
// on loopback, requiring simUser and a password that the test can change.
type sim struct {
	t      testing.TB
	model  *simulator.Model
	server *simulator.Server
	addr   string // host:port
	caFile string

	opts simOptions

	mu       sync.Mutex
	password string
	calls    []string // method names, in order
	sessions map[string]bool
	onCall   func(method string)
	now      func() time.Time // the clock logins are recorded by
	logins   []login
	// loginFault, when set, is vCenter's answer to every Login, as when
	// its SSO service is failing; such a login counts as failed.
	loginFault types.BaseMethodFault
}

// login is one Login call as vCenter saw it.
type login struct {
	at       time.Time
	password string
	ok       bool
}

type simOptions struct {
	addr   string         // listen address; default 127.0.0.1:0
	delay  map[string]int // milliseconds per method
	listen func(func())   // runs server start, e.g. inside a netns
	onCall func(method string)
	// model, when set, shapes the inventory instead of the default
	// one cluster host and no VM.
	model func(*simulator.Model)
}

func startSim(t testing.TB, o simOptions) *sim {
	t.Helper()
	s := &sim{t: t, opts: o, password: simPass, sessions: map[string]bool{}, onCall: o.onCall, now: time.Now}
	s.start(o)
	dir := t.TempDir()
	s.caFile = filepath.Join(dir, "ca.pem")
	cert := s.server.Certificate()
	if err := os.WriteFile(s.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

func (s *sim) start(o simOptions) {
	s.t.Helper()
	m := simulator.VPX()
	m.ClusterHost, m.Machine = 1, 0 // small: the probe needs no inventory
	if o.model != nil {
		o.model(m)
	}
	m.DelayConfig.MethodDelay = o.delay
	if err := m.Create(); err != nil {
		s.t.Fatal(err)
	}
	addr := o.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{Host: addr, User: url.UserPassword(simUser, "set by ValidLogin")}
	reg := m.Service.Context.Map
	reg.SessionManager().ValidLogin = func(req *types.Login) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		ok := req.UserName == simUser && req.Password == s.password
		s.logins = append(s.logins, login{at: s.now(), password: req.Password, ok: ok})
		return ok
	}
	// Record calls and the sessions that make them, so tests can see
	// Logout and terminate the prober's session.
	reg.Handler = func(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		s.mu.Lock()
		s.calls = append(s.calls, m.Name)
		if ctx.Session != nil && m.Name == "CurrentTime" {
			s.sessions[ctx.Session.Key] = true
		}
		hook := s.onCall
		var fault types.BaseMethodFault
		if m.Name == "Login" && s.loginFault != nil {
			fault = s.loginFault
			s.logins = append(s.logins, login{at: s.now()})
		}
		s.mu.Unlock()
		if hook != nil {
			hook(m.Name)
		}
		return nil, fault
	}
	run := o.listen
	if run == nil {
		run = func(f func()) { f() }
	}
	run(func() { s.server = m.Service.NewServer() })
	s.model = m
	s.addr = s.server.URL.Host
}

// stop shuts the server down; the port is free again afterwards.
func (s *sim) stop() {
	if s.server == nil {
		return
	}
	s.server.Close()
	s.model.Remove()
	s.server = nil
}

// restart brings up a fresh vCenter on the same address: like a real
// restart, every session is gone.
func (s *sim) restart() {
	s.t.Helper()
	s.stop()
	o := s.opts
	o.addr = s.addr
	s.start(o)
}

func (s *sim) setPassword(pw string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.password = pw
}

func (s *sim) failLogins(f types.BaseMethodFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loginFault = f
}

// useClock records logins by clk's time.
func (s *sim) useClock(clk clock.Clock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = clk.Now
}

// failedLogins returns when vCenter rejected a login.
func (s *sim) failedLogins() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for _, l := range s.logins {
		if !l.ok {
			out = append(out, l.at)
		}
	}
	return out
}

// loginLog returns every Login call.
func (s *sim) loginLog() []login {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]login(nil), s.logins...)
}

func (s *sim) url() string { return "https://" + s.addr + "/sdk" }

func (s *sim) countCalls(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.calls {
		if c == name {
			n++
		}
	}
	return n
}

func (s *sim) probeSessions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.sessions {
		out = append(out, k)
	}
	return out
}

// config is a config for the simulator's URL that trusts its CA.
func (s *sim) config() Config {
	c := configFor(s.url())
	c.CAFile = s.caFile
	return c
}

// configFor is a config for urls with the simulator's credentials,
// without the inventory watch: the schedule's tests count calls and
// timers exactly. The inventory's tests turn it on.
func configFor(urls ...string) Config {
	c := DefaultConfig()
	c.URLs = urls
	c.User, c.Password = simUser, simPass
	c.Timeout = 5 * time.Second
	c.Inventory = false
	return c
}

// logBuffer collects log output for assertions (no secrets, warnings).
type logBuffer struct{ testkit.Buffer }

// testLogger logs into the test's output, shown on failure or with -v.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newProber is New logging into the test's output (opts may replace
// that); it fails the test on an error.
func newProber(t testing.TB, cfg Config, network Network, opts ...Option) *Prober {
	t.Helper()
	p, err := New(cfg, network, append([]Option{WithLogger(testLogger(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runProber runs a prober on clk until the test ends, with the jitter
// in the middle of its window (the plain schedule); opts may replace
// that.
func runProber(t *testing.T, clk *fakeclock.Clock, cfg Config, network Network, opts ...Option) *Prober {
	t.Helper()
	p := newProber(t, cfg, network, append([]Option{WithClock(clk), WithRand(fixedRand{0.5})}, opts...)...)
	running(t, p)
	return p
}

// running starts p.Run and stops it at cleanup, failing if Run does not
// return.
func running(t testing.TB, p *Prober) (stop func()) {
	t.Helper()
	return testkit.Run(t, guard, p.Run)
}

// waitStatus waits until cond holds for target i, failing after guard.
func waitStatus(t *testing.T, p *Prober, i int, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.After(guard)
	for {
		sts, changed := p.Status()
		if cond(sts[i]) {
			return sts[i]
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("waiting for %s: last status %+v", what, sts[i])
		}
	}
}

// metricValue reads one series of p: a counter's or gauge's value, or a
// histogram's sample count. labels are name, value pairs besides target;
// a series that does not exist reads as -1.
func metricValue(t *testing.T, p *Prober, name string, labels ...string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(p); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Write and rename, as a secret rotation does: the reader never sees
	// a half-written file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func mustContainNone(t *testing.T, where, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%s contains secret %q:\n%s", where, s, text)
		}
	}
}
