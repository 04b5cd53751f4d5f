package probe

import (
	"encoding/pem"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testkit"
)

func TestBackoffTable(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		name      string
		base, max time.Duration
		n         int
		r         float64
		want      time.Duration
	}{
		// r = 0.5 is the middle of the ±25% window: the plain schedule.
		{"first retry", 2 * s, 30 * s, 1, 0.5, 2 * s},
		{"second", 2 * s, 30 * s, 2, 0.5, 4 * s},
		{"third", 2 * s, 30 * s, 3, 0.5, 8 * s},
		{"fourth", 2 * s, 30 * s, 4, 0.5, 16 * s},
		// 32s is over the cap: the window is [22.5s, 30s], clipped, not shifted.
		{"capped middle", 2 * s, 30 * s, 5, 0.5, 26250 * time.Millisecond},
		{"capped low", 2 * s, 30 * s, 5, 0, 22500 * time.Millisecond},
		{"capped high", 2 * s, 30 * s, 40, math.Nextafter(1, 0), 30 * s},
		{"jitter low", 2 * s, 30 * s, 1, 0, 1500 * time.Millisecond},
		{"jitter high stays under 1.25x", 2 * s, 30 * s, 2, math.Nextafter(1, 0), 5 * s},
		{"window clipped by cap", 2 * s, 30 * s, 4, math.Nextafter(1, 0), 20 * s},
		{"window partly over cap", 10 * s, 22 * s, 2, 0.5, 18500 * time.Millisecond}, // d=20s: [15s, 22s]
		{"window under cap untouched", 10 * s, 30 * s, 2, 0.5, 20 * s},               // d=20s: [15s, 25s]
		{"base above max", time.Hour, 30 * s, 1, 0.5, 26250 * time.Millisecond},
		{"n below 1 is the first step", 2 * s, 30 * s, 0, 0.5, 2 * s},
		{"huge n does not overflow", 2 * s, 30 * s, 1 << 30, 0.5, 26250 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := backoff(tc.base, tc.max, tc.n, tc.r)
			// Allow a nanosecond of float rounding.
			if diff := got - tc.want; diff < -1 || diff > 1 {
				t.Errorf("backoff(%v, %v, %d, %v) = %v, want %v", tc.base, tc.max, tc.n, tc.r, got, tc.want)
			}
		})
	}
}

// TestBackoffProperties checks, over many random inputs, that a wait is
// never above the cap, always within ±25% of the capped exponential step,
// and never shrinks as the attempt number grows (for the same r).
func TestBackoffProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		base := time.Duration(1 + rng.Int64N(int64(10*time.Second)))
		max := base + time.Duration(rng.Int64N(int64(10*time.Minute)))
		n := 1 + rng.IntN(70)
		r := rng.Float64()

		got := backoff(base, max, n, r)
		step := float64(base) * math.Pow(2, float64(n-1))
		step = math.Min(step, float64(max))
		if got > max {
			t.Fatalf("backoff(%v, %v, %d, %v) = %v exceeds max", base, max, n, r, got)
		}
		if float64(got) < 0.75*step-1 || float64(got) > 1.25*step+1 {
			t.Fatalf("backoff(%v, %v, %d, %v) = %v outside ±25%% of %v", base, max, n, r, got, time.Duration(step))
		}
		if next := backoff(base, max, n+1, r); next < got {
			t.Fatalf("backoff shrank from n=%d (%v) to n=%d (%v)", n, got, n+1, next)
		}
	}
}

// TestBackoffJitterSpread checks that jitter really spreads: at the cap the
// waits cover most of [0.75·max, max] rather than piling up at max.
func TestBackoffJitterSpread(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const max = 30 * time.Second
	lo, hi := max, time.Duration(0)
	atMax := 0
	for range 10000 {
		d := backoff(2*time.Second, max, 10, rng.Float64())
		lo, hi = min(lo, d), maxDuration(hi, d)
		if d == max {
			atMax++
		}
	}
	if lo > 23*time.Second || hi < 29*time.Second {
		t.Errorf("capped waits span [%v, %v], want about [22.5s, 30s]", lo, hi)
	}
	if atMax > 10 {
		t.Errorf("%d of 10000 waits exactly at max: jitter is being clamped, not spread", atMax)
	}
}

func maxDuration(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// TestScheduleTransient drives the whole schedule with a fake clock
// against a real endpoint that refuses connections, then comes back.
func TestScheduleTransient(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config() // base 2s, max 30s, 3 retries, interval 15s
	s.stop()

	clk := newFakeClock()
	p := runProber(t, clk, cfg, nil)

	const capped = 26250 * time.Millisecond // middle of [22.5s, 30s]
	for i, want := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, capped, capped} {
		if got := clk.NextTimer(t, guard); got != want {
			t.Fatalf("wait after failure %d = %v, want %v", i+1, got, want)
		}
		st, _ := p.Status()
		if st[0].Kind != KindRefused || st[0].Class != Transient || st[0].Permanent {
			t.Fatalf("failure %d: class/kind = %s/%s permanent=%v, want transient/refused", i+1, st[0].Class, st[0].Kind, st[0].Permanent)
		}
		if st[0].ConsecutiveFailures != i+1 || st[0].Backoff != want || st[0].Up {
			t.Fatalf("failure %d: status %+v", i+1, st[0])
		}
		clk.Advance(want)
	}
	// The Advance of the last wait started attempt 6.
	if got := clk.NextTimer(t, guard); got != capped {
		t.Fatalf("down target: wait %v, want the max cadence %v", got, capped)
	}
	for name, want := range map[string]float64{
		"linkgate_vcenter_retries_total":        5,
		"linkgate_vcenter_consecutive_failures": 6,
		"linkgate_vcenter_backoff_seconds":      capped.Seconds(),
		"linkgate_vcenter_up":                   0,
	} {
		if got := metricValue(t, p, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := metricValue(t, p, "linkgate_vcenter_probes_total", "result", "failure"); got != 6 {
		t.Errorf("failed probes = %v, want 6", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_errors_total", "class", "transient", "kind", "refused"); got != 6 {
		t.Errorf("refused errors = %v, want 6", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_logins_total", "result", "failure"); got != 0 {
		t.Errorf("failed logins = %v: a refused connection never reaches Login", got)
	}

	// vCenter comes back on the same port (a fresh one: no sessions).
	s.restart()
	clk.Advance(capped)
	if got := clk.NextTimer(t, guard); got != cfg.Interval {
		t.Fatalf("after recovery wait %v, want Interval %v", got, cfg.Interval)
	}
	st, _ := p.Status()
	if !st[0].Up || st[0].ConsecutiveFailures != 0 || st[0].Backoff != 0 || st[0].Kind != "" || st[0].LastSuccess != clk.Now() {
		t.Fatalf("after recovery: %+v", st[0])
	}

	// It goes away again: the backoff starts over at the base, and the
	// target stays up through the fast retries of the new cycle.
	s.stop()
	clk.Advance(cfg.Interval)
	for i, want := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second} {
		if got := clk.NextTimer(t, guard); got != want {
			t.Fatalf("second outage, wait %d = %v, want %v (backoff must reset on success)", i+1, got, want)
		}
		st, _ := p.Status()
		if !st[0].Up {
			t.Fatalf("second outage, failure %d: down before the cycle failed: %+v", i+1, st[0])
		}
		if st[0].Class != Transient || (st[0].Kind != KindRefused && st[0].Kind != KindReset) {
			t.Fatalf("second outage: class/kind %s/%s", st[0].Class, st[0].Kind)
		}
		clk.Advance(want)
	}
	if got := clk.NextTimer(t, guard); got != capped {
		t.Fatalf("second outage: cycle failed, wait %v, want %v", got, capped)
	}
	if st, _ := p.Status(); st[0].Up {
		t.Fatalf("cycle of %d retries failed but target still up: %+v", cfg.MaxRetries, st[0])
	}
}

// TestSchedulePermanent: a wrong password is not retried fast; the target
// is down at once, re-checked at the slow cadence but no more often than
// FailedLoginWindow/(MaxFailedLogins-1) (SSO lockout), which leaves a
// login for a new password in the file: it is tried at once.
func TestSchedulePermanent(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	cfg.Password = ""
	cfg.PasswordFile = filepath.Join(t.TempDir(), "password")
	writeFile(t, cfg.PasswordFile, "wrong password\n")

	clk := newFakeClock()
	p := runProber(t, clk, cfg, nil)

	// The jittered slow cadence (26.25s) is below 180s/(3-1).
	const slow = 90 * time.Second
	for i := range 2 {
		if got := nextWait(t, clk); got != slow {
			t.Fatalf("auth failure %d: wait %v, want %v", i+1, got, slow)
		}
		st, _ := p.Status()
		if st[0].Up || !st[0].Permanent || st[0].Class != Permanent || st[0].Kind != KindAuth {
			t.Fatalf("auth failure %d: %+v", i+1, st[0])
		}
		clk.Advance(slow)
	}
	if got := nextWait(t, clk); got != slow {
		t.Fatalf("auth failure 3: wait %v", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_logins_total", "result", "failure"); got != 3 {
		t.Errorf("failed logins = %v, want 3 (one per slow re-check)", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_errors_total", "class", "permanent", "kind", "auth"); got != 3 {
		t.Errorf("auth errors = %v, want 3", got)
	}

	// The failures at 90s and 180s hold the window at two of three: the
	// re-check cadence leaves a slot, so a rotated secret, noticed at the
	// next file check, is tried at once.
	if got := metricValue(t, p, "linkgate_vcenter_login_failures_remaining"); got != 1 {
		t.Errorf("login_failures_remaining = %v after three re-checks, want 1 (a slot left)", got)
	}
	writeFile(t, cfg.PasswordFile, simPass+"\n")
	clk.Advance(fileCheckInterval)
	if got := nextWait(t, clk); got != cfg.Interval {
		t.Fatalf("after rotation at 182s: wait %v, want Interval (logged in at once)", got)
	}
	st, _ := p.Status()
	if !st[0].Up || st[0].Permanent || st[0].Kind != "" {
		t.Fatalf("after rotation: %+v", st[0])
	}
	if n := s.countCalls("Login"); n != 4 {
		t.Errorf("vCenter saw %d logins, want 4: three re-checks and the new password", n)
	}
	if got := metricValue(t, p, "linkgate_vcenter_logins_total", "result", "success"); got != 1 {
		t.Errorf("successful logins = %v, want 1", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_login_blocked_until_timestamp_seconds"); got != 0 {
		t.Errorf("login_blocked_until = %v, want 0", got)
	}
}

// TestPauseWhileNetworkDown: no attempts while parked, network_down
// reported after MaxNetworkWait, a probe at once when the network returns.
func TestPauseWhileNetworkDown(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	clk := newFakeClock()
	nw := newFakeNetwork(false)
	p := runProber(t, clk, cfg, nw)

	if got := clk.NextTimer(t, guard); got != cfg.MaxNetworkWait {
		t.Fatalf("parked: timer %v, want MaxNetworkWait %v", got, cfg.MaxNetworkWait)
	}
	st := waitStatus(t, p, 0, "paused", func(s Status) bool { return s.Paused })
	if st.Kind != "" || st.ConsecutiveFailures != 0 {
		t.Fatalf("outage reported before MaxNetworkWait: %+v", st)
	}
	if got := metricValue(t, p, "linkgate_vcenter_paused"); got != 1 {
		t.Errorf("paused = %v, want 1", got)
	}

	clk.Advance(cfg.MaxNetworkWait)
	st = waitStatus(t, p, 0, "network_down reported", func(s Status) bool { return s.Kind == KindNetworkDown })
	if st.Class != Transient || st.Up || !st.Paused || st.Permanent {
		t.Fatalf("after MaxNetworkWait: %+v", st)
	}
	if got := metricValue(t, p, "linkgate_vcenter_errors_total", "class", "transient", "kind", "network_down"); got != 1 {
		t.Errorf("network_down errors = %v, want 1", got)
	}
	for _, r := range []string{"success", "failure"} {
		if got := metricValue(t, p, "linkgate_vcenter_probes_total", "result", r); got != 0 {
			t.Errorf("probes_total{result=%q} = %v while paused, want 0", r, got)
		}
	}
	if n := s.countCalls("Login") + s.countCalls("CurrentTime"); n != 0 {
		t.Errorf("vCenter saw %d calls while the network was down", n)
	}

	// Back: probed at once, without moving the clock.
	nw.set(true)
	if got := clk.NextTimer(t, guard); got != cfg.Interval {
		t.Fatalf("after network back: wait %v, want Interval", got)
	}
	if sts, _ := p.Status(); !sts[0].Up || sts[0].Paused {
		t.Fatalf("after network back: %+v", sts[0])
	}
}

// refusedConfig is a config for a loopback port that refuses
// connections, whose backoff doubles from 1s and keeps retrying fast
// for the whole test.
func refusedConfig(t *testing.T) Config {
	t.Helper()
	cfg := configFor("https://" + testkit.ClosedAddr(t) + "/sdk")
	cfg.BaseBackoff, cfg.MaxBackoff, cfg.MaxRetries = time.Second, time.Hour, 10
	return cfg
}

// TestNetworkBackResetsBackoff: a target in backoff, then the network goes
// down and comes back: the next attempt is immediate and the backoff
// starts over, instead of waiting out the pending timer.
func TestNetworkBackResetsBackoff(t *testing.T) {
	cfg := refusedConfig(t)
	clk := newFakeClock()
	nw := newFakeNetwork(true)
	p := runProber(t, clk, cfg, nw)

	for _, want := range []time.Duration{time.Second, 2 * time.Second} {
		if got := clk.NextTimer(t, guard); got != want {
			t.Fatalf("wait %v, want %v", got, want)
		}
		clk.Advance(want)
	}
	if got := clk.NextTimer(t, guard); got != 4*time.Second {
		t.Fatalf("wait %v, want 4s", got)
	}
	nw.set(false)
	if got := clk.NextTimer(t, guard); got != cfg.MaxNetworkWait {
		t.Fatalf("parked: timer %v, want MaxNetworkWait", got)
	}
	waitStatus(t, p, 0, "paused", func(s Status) bool { return s.Paused })
	nw.set(true)
	// No Advance: the 4s timer has not fired, yet a new attempt happens,
	// and its failure starts the schedule from the base again.
	if got := clk.NextTimer(t, guard); got != time.Second {
		t.Fatalf("after network back: wait %v, want the base 1s (reset)", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_probes_total", "result", "failure"); got != 4 {
		t.Errorf("failed probes = %v, want 4", got)
	}
	if st, _ := p.Status(); st[0].ConsecutiveFailures != 4 {
		t.Errorf("ConsecutiveFailures = %d, want 4 (only a success resets it)", st[0].ConsecutiveFailures)
	}
}

// TestSpuriousNetworkChangesAreIgnored: a Network may signal changes that
// leave it up (a collector snapshot changes with every neighbour update).
// Those must not trigger attempts, or a failing target would be hammered
// by its own ARP traffic. A real down→up transition does, even with
// pausing off.
func TestSpuriousNetworkChangesAreIgnored(t *testing.T) {
	cfg := refusedConfig(t)
	cfg.PauseOnNetworkDown = false
	clk := newFakeClock()
	nw := newFakeNetwork(true)
	p := runProber(t, clk, cfg, nw)

	if got := clk.NextTimer(t, guard); got != time.Second {
		t.Fatalf("wait %v, want 1s", got)
	}
	for range 5 {
		nw.awaitCall(t, nw.poke)
	}
	clk.Advance(time.Second)
	// Had a poke caused an attempt, its wait (1s, the backoff reset)
	// would come first.
	if got := clk.NextTimer(t, guard); got != 2*time.Second {
		t.Fatalf("wait %v, want 2s: the schedule must go on undisturbed", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_probes_total", "result", "failure"); got != 2 {
		t.Fatalf("failed probes = %v, want 2", got)
	}

	nw.awaitCall(t, func() { nw.set(false) })
	nw.set(true)
	if got := clk.NextTimer(t, guard); got != time.Second {
		t.Fatalf("after down→up: wait %v, want 1s (attempt at once, backoff reset)", got)
	}
	if st, _ := p.Status(); st[0].ConsecutiveFailures != 3 || st[0].Paused {
		t.Errorf("after down→up: %+v", st[0])
	}
}

// TestAttemptAbandonedWhenNetworkDrops: the network goes down while a
// probe is in flight; the probe is cancelled and not counted.
func TestAttemptAbandonedWhenNetworkDrops(t *testing.T) {
	arrived := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	s := startSim(t, simOptions{onCall: func(method string) {
		if method != "CurrentTime" {
			return
		}
		// Hold the first probe in vCenter until the test lets go.
		once.Do(func() {
			close(arrived)
			<-release
		})
	}})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	cfg := s.config()
	clk := newFakeClock()
	nw := newFakeNetwork(true)
	p := runProber(t, clk, cfg, nw)

	select {
	case <-arrived:
	case <-time.After(guard):
		t.Fatal("probe never reached vCenter")
	}
	nw.set(false)
	waitStatus(t, p, 0, "paused", func(s Status) bool { return s.Paused })
	if got := clk.NextTimer(t, guard); got != cfg.MaxNetworkWait {
		t.Fatalf("parked: timer %v", got)
	}
	for _, r := range []string{"success", "failure"} {
		if got := metricValue(t, p, "linkgate_vcenter_probes_total", "result", r); got != 0 {
			t.Errorf("probes_total{result=%q} = %v: the abandoned attempt was counted", r, got)
		}
	}
	close(release)
	nw.set(true)
	if got := clk.NextTimer(t, guard); got != cfg.Interval {
		t.Fatalf("after network back: wait %v, want Interval", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_probes_total", "result", "success"); got != 1 {
		t.Errorf("successful probes = %v, want 1", got)
	}
	if got := metricValue(t, p, "linkgate_vcenter_logins_total", "result", "success"); got != 1 {
		t.Errorf("logins = %v, want 1: the session survives an abandoned probe", got)
	}
}

// TestCAFileChangeRechecksAtOnce: a certificate failure is permanent; a
// new CA file is tried at the next file check, not at the slow cadence.
func TestCAFileChangeRechecksAtOnce(t *testing.T) {
	s := startSim(t, simOptions{})
	good, err := os.ReadFile(s.caFile)
	if err != nil {
		t.Fatal(err)
	}
	other := httptest.NewTLSServer(http.NotFoundHandler())
	other.Close()
	cfg := s.config()
	cfg.CAFile = filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, cfg.CAFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Certificate().Raw})))

	clk := newFakeClock()
	p := runProber(t, clk, cfg, nil)
	if got := nextWait(t, clk); got != 26250*time.Millisecond {
		t.Fatalf("wait %v, want the slow cadence", got)
	}
	if st, _ := p.Status(); st[0].Kind != KindTLSCertificate || !st[0].Permanent {
		t.Fatalf("status %+v, want permanent tls_certificate", st[0])
	}
	writeFile(t, cfg.CAFile, string(good))
	clk.Advance(fileCheckInterval)
	if got := nextWait(t, clk); got != cfg.Interval {
		t.Fatalf("after CA change: wait %v, want Interval", got)
	}
	if st, _ := p.Status(); !st[0].Up {
		t.Fatalf("after CA change: %+v", st[0])
	}
}

// vc_connection_enable_jitter: false gives the seed's plain schedule.
func TestBackoffWithoutJitter(t *testing.T) {
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		if got := backoff(2*time.Second, 30*time.Second, i+1, -1); got != w {
			t.Errorf("attempt %d: %s, want %s", i+1, got, w)
		}
	}
	j := &jitter{off: true}
	if r := j.float64(); r >= 0 {
		t.Errorf("disabled jitter returned %v", r)
	}
}

// TestNextAttempt is the backoff policy on its own: what it waits and
// whether it takes the target down, for each kind of result.
func TestNextAttempt(t *testing.T) {
	const s = time.Second
	def := DefaultConfig() // interval 15s, 3 retries, backoff 2s..30s, 3 failed logins in 180s
	slowMax := DefaultConfig()
	slowMax.MaxBackoff = 5 * time.Minute
	noRetries := DefaultConfig()
	noRetries.MaxRetries = 0
	refused := failure{class: Transient, kind: KindRefused, reason: "connection refused"}
	auth := failure{class: Permanent, kind: KindAuth, reason: "login failure"}
	cert := failure{class: Permanent, kind: KindTLSCertificate, reason: "unknown authority"}
	for _, tc := range []struct {
		name  string
		cfg   Config
		f     failure
		cycle int
		r     float64
		want  plan
	}{
		{"success", def, failure{}, 0, 0.5, plan{wait: 15 * s}},
		{"first retry", def, refused, 1, 0.5, plan{wait: 2 * s}},
		{"last retry", def, refused, 3, 0.5, plan{wait: 8 * s}},
		{"cycle failed", def, refused, 4, 0.5, plan{wait: 26250 * time.Millisecond, down: true}},
		{"cycle failed, no jitter", def, refused, 4, -1, plan{wait: 30 * s, down: true}},
		{"no retries", noRetries, refused, 1, 0.5, plan{wait: 26250 * time.Millisecond, down: true}},
		{"permanent", def, cert, 1, 0.5, plan{wait: 26250 * time.Millisecond, down: true}},
		{"auth: the failed-login cadence", def, auth, 1, 0.5, plan{wait: 90 * s, down: true}},
		{"auth: the slow cadence when longer", slowMax, auth, 1, 0.5, plan{wait: 262500 * time.Millisecond, down: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cfg.nextAttempt(tc.f, tc.cycle, tc.r); got != tc.want {
				t.Errorf("nextAttempt(%+v, %d, %v) = %+v, want %+v", tc.f, tc.cycle, tc.r, got, tc.want)
			}
		})
	}
}

// TestStatusAttempted: what an attempt changes in a Status, and what it
// keeps.
func TestStatusAttempted(t *testing.T) {
	t0 := epoch
	about := About{APIType: "VirtualCenter", Version: "8.0"}
	up := Status{Target: "vc", Up: true, LastAttempt: t0, LastSuccess: t0, About: about}

	refused := failure{class: Transient, kind: KindRefused, reason: "connection refused"}
	st := up
	st.attempted(t0.Add(time.Minute), t0.Add(time.Minute+time.Second), refused, plan{wait: 2 * time.Second}, nil)
	want := Status{Target: "vc", Up: true, LastAttempt: t0.Add(time.Minute), LastSuccess: t0,
		Class: Transient, Kind: KindRefused, Reason: "connection refused", ConsecutiveFailures: 1, Backoff: 2 * time.Second, About: about}
	if st != want {
		t.Fatalf("fast retry:\n got %+v\nwant %+v", st, want)
	}

	auth := failure{class: Permanent, kind: KindAuth, reason: "login failure"}
	st.attempted(t0.Add(2*time.Minute), t0.Add(2*time.Minute), auth, plan{wait: time.Minute, down: true}, nil)
	want.Up, want.LastAttempt, want.Class, want.Kind, want.Reason, want.Permanent = false, t0.Add(2*time.Minute), Permanent, KindAuth, "login failure", true
	want.ConsecutiveFailures, want.Backoff = 2, time.Minute
	if st != want {
		t.Fatalf("down:\n got %+v\nwant %+v", st, want)
	}

	st.Paused = true
	newer := About{APIType: "VirtualCenter", Version: "9.0"}
	end := t0.Add(3*time.Minute + time.Second)
	st.attempted(t0.Add(3*time.Minute), end, failure{}, plan{wait: 15 * time.Second}, &newer)
	want = Status{Target: "vc", Up: true, LastAttempt: t0.Add(3 * time.Minute), LastSuccess: end, About: newer}
	if st != want {
		t.Fatalf("success:\n got %+v\nwant %+v", st, want)
	}
	st.attempted(end, end, failure{}, plan{wait: 15 * time.Second}, nil)
	if st.About != newer {
		t.Errorf("a success without a session cleared About: %+v", st.About)
	}
}

// TestLogAttempt: recoveries and news of failure are logged at Info and
// Warn, a failure that repeats itself at Debug.
func TestLogAttempt(t *testing.T) {
	ok := Status{Target: "vc", Up: true}
	failing := func(up bool, kind Kind, n int) Status {
		return Status{Target: "vc", Up: up, Class: Transient, Kind: kind, Reason: "why",
			ConsecutiveFailures: n, Backoff: 2 * time.Second}
	}
	for _, tc := range []struct {
		name      string
		prev, cur Status
		want      string // the start of the line; "" for none
	}{
		{"first success", Status{Target: "vc"}, ok, `level=INFO msg="vCenter reachable" target=vc after_failures=0`},
		{"still fine", ok, ok, ""},
		{"recovered", failing(true, KindRefused, 2), ok, `level=INFO msg="vCenter reachable" target=vc after_failures=2`},
		{"first failure, still up", ok, failing(true, KindRefused, 1),
			`level=WARN msg="vCenter probe failed" target=vc class=transient kind=refused reason=why consecutive_failures=1 next_attempt_in=2s`},
		{"repeated", failing(true, KindRefused, 1), failing(true, KindRefused, 2), `level=DEBUG msg="vCenter probe failed"`},
		{"new kind", failing(true, KindRefused, 1), failing(true, KindReset, 2), `level=WARN msg="vCenter probe failed"`},
		{"down", failing(true, KindRefused, 3), failing(false, KindRefused, 4), `level=WARN msg="vCenter down"`},
		{"still down", failing(false, KindRefused, 4), failing(false, KindRefused, 5), `level=DEBUG msg="vCenter probe failed"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			logAttempt(logs.logger(), tc.prev, tc.cur)
			_, got, _ := strings.Cut(logs.String(), " ") // drop the time
			if (tc.want == "") != (got == "") || !strings.HasPrefix(got, tc.want) {
				t.Errorf("logged %q, want %q", got, tc.want)
			}
		})
	}
}
