package probe

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock/fakeclock"
	"github.com/vmware/govmomi/vim25/types"
)

// SSO lockout: whatever happens around it, a target never has more than
// Config.MaxFailedLogins failed logins in any Config.FailedLoginWindow
// (3 in 180 s by default; vCenter SSO locks the account at 5).

const window = DefaultFailedLoginWindow

// advanceTo moves the fake clock to at, jumping from one pending timer to
// the next, each time once the prober has finished reacting (waitIdle):
// every wake-up happens at the fake time it was due.
func advanceTo(t *testing.T, clk *fakeclock.Clock, at time.Time) {
	t.Helper()
	for {
		waitIdle(t)
		clk.DrainCreated()
		now := clk.Now()
		if !now.Before(at) {
			return
		}
		clk.Advance(clk.NextDeadline(at).Sub(now))
	}
}

// drive runs the prober for total of fake time and calls act every
// `every` (act(1) at every, act(2) at 2·every, ...).
func drive(t *testing.T, clk *fakeclock.Clock, total, every time.Duration, act func(i int)) {
	t.Helper()
	start := clk.Now()
	for i := 1; time.Duration(i)*every < total; i++ {
		advanceTo(t, clk, start.Add(time.Duration(i)*every))
		act(i)
	}
	advanceTo(t, clk, start.Add(total))
}

// mostInWindow returns the largest number of times that fall in one
// window [t, t+w).
func mostInWindow(times []time.Time, w time.Duration) int {
	sorted := append([]time.Time(nil), times...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Before(sorted[j]) })
	most := 0
	for i, from := range sorted {
		n := 0
		for _, at := range sorted[i:] {
			if at.Sub(from) < w {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

// offsets renders times as seconds after start, for messages.
func offsets(times []time.Time, start time.Time) []float64 {
	out := make([]float64, len(times))
	for i, at := range times {
		out[i] = at.Sub(start).Seconds()
	}
	return out
}

// lockoutProber runs a prober with a wrong password in a file against
// the simulator, on a fake clock; edit adjusts the config.
func lockoutProber(t *testing.T, nw Network, edit func(*Config)) (*sim, *Prober, *fakeclock.Clock, Config) {
	t.Helper()
	s := startSim(t, simOptions{})
	cfg := s.config()
	cfg.Password = ""
	cfg.PasswordFile = filepath.Join(t.TempDir(), "password")
	writeFile(t, cfg.PasswordFile, "wrong password\n")
	if edit != nil {
		edit(&cfg)
	}
	clk := newFakeClock()
	s.useClock(clk)
	p := runProber(t, clk, cfg, nw)
	return s, p, clk, cfg
}

// checkLimit fails the test if more than limit failed logins fall in one
// window, and logs what happened.
func checkLimit(t *testing.T, s *sim, start time.Time, limit int) []time.Time {
	t.Helper()
	failed := s.failedLogins()
	t.Logf("%d failed logins, at %v s; most in one %v window: %d",
		len(failed), offsets(failed, start), window, mostInWindow(failed, window))
	if n := mostInWindow(failed, window); n > limit {
		t.Errorf("%d failed logins in one %v window, want at most %d (at %v s)", n, window, limit, offsets(failed, start))
	}
	return failed
}

// checkRecheckCadence checks that only the re-check cadence of a rejected
// password (180s/(3-1)) made the failed logins, and so that they never
// fill the window: a slot is always left for a rotated password.
func checkRecheckCadence(t *testing.T, s *sim, start time.Time) {
	t.Helper()
	failed := checkLimit(t, s, start, 2)
	if got := offsets(failed, start); fmt.Sprint(got) != "[0 90 180]" {
		t.Errorf("failed logins at %v s, want at the re-check cadence [0 90 180]", got)
	}
}

// TestLockoutPasswordFileTouched: touching the password file (a new mtime,
// and every other time a new inode with the same bytes) is not a new
// credential and buys no extra login.
func TestLockoutPasswordFileTouched(t *testing.T) {
	s, _, clk, cfg := lockoutProber(t, nil, nil)
	start := clk.Now()
	drive(t, clk, 200*time.Second, 10*time.Second, func(i int) {
		if i%2 == 0 {
			writeFile(t, cfg.PasswordFile, "wrong password\n")
			return
		}
		mtime := time.Now().Add(time.Duration(i) * time.Second)
		if err := os.Chtimes(cfg.PasswordFile, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	})
	checkRecheckCadence(t, s, start)
}

// TestLockoutNetworkFlapping: the network going down and coming back
// every 10s neither resets the limit nor cuts short the re-check of a
// rejected password.
func TestLockoutNetworkFlapping(t *testing.T) {
	nw := newFakeNetwork(true)
	s, _, clk, _ := lockoutProber(t, nw, nil)
	start := clk.Now()
	drive(t, clk, 200*time.Second, 10*time.Second, func(int) {
		nw.set(false)
		waitIdle(t)
		nw.set(true)
	})
	checkRecheckCadence(t, s, start)
}

// TestLockoutNewWrongPasswords: a different wrong password every 10s is a
// new credential each time. It is tried at the next file check while the
// limit allows, and then waits: the limit holds for new passwords too,
// since SSO counts failures per account.
func TestLockoutNewWrongPasswords(t *testing.T) {
	s, _, clk, cfg := lockoutProber(t, nil, nil)
	start := clk.Now()
	drive(t, clk, 200*time.Second, 10*time.Second, func(i int) {
		writeFile(t, cfg.PasswordFile, fmt.Sprintf("wrong password %d\n", i))
	})
	failed := checkLimit(t, s, start, 3)
	if len(failed) < 2 || failed[1].Sub(start) > 10*time.Second+fileCheckInterval {
		t.Errorf("failed logins at %v s: the password written at 10s was not tried at the next file check",
			offsets(failed, start))
	}
	// Each login used the newest password: no login is wasted on one
	// already rejected.
	seen := map[string]bool{}
	for _, l := range s.loginLog() {
		if seen[l.password] {
			t.Errorf("password %q sent twice", l.password)
		}
		seen[l.password] = true
	}
}

// TestLockoutAnyFailedLogin: logins that fail for another reason than the
// password (vCenter's SSO service failing) are retried on the fast
// backoff, and a flapping network resets it every 10s; the limit still
// holds, because SSO may count any failed login.
func TestLockoutAnyFailedLogin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int
	}{
		{"limit 3", 3},
		{"limit 1000, for comparison", 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nw := newFakeNetwork(true)
			s, p, clk, _ := lockoutProber(t, nw, func(c *Config) {
				c.MaxFailedLogins = tc.limit
				writeFile(t, c.PasswordFile, simPass)
			})
			s.failLogins(&types.SystemError{Reason: "identity source unavailable"})
			start := clk.Now()
			drive(t, clk, 200*time.Second, 10*time.Second, func(int) {
				nw.set(false)
				waitIdle(t)
				nw.set(true)
			})
			failed := checkLimit(t, s, start, tc.limit)
			if tc.limit > len(failed) {
				if len(failed) < 10 {
					t.Errorf("without the limit only %d failed logins: the scenario does not press", len(failed))
				}
				return
			}
			if st, _ := p.Status(); st[0].Class != Transient || st[0].Kind != KindServerFault {
				t.Errorf("status %+v, want the last real failure (transient/server_fault)", st[0])
			}
		})
	}
}

// TestLockoutProbeOnce: ProbeOnce (linkgate check) goes through the same
// limit as Run: with the limit reached it does not send a login and says
// why.
func TestLockoutProbeOnce(t *testing.T) {
	s := startSim(t, simOptions{})
	cfg := s.config()
	cfg.Password = "wrong password"
	cfg.MaxFailedLogins = 2
	clk := newFakeClock()
	p := newProber(t, cfg, nil, WithClock(clk))
	for range 2 {
		if st := p.ProbeOnce(context.Background())[0]; st.Kind != KindAuth {
			t.Fatalf("status %+v, want auth", st)
		}
		clk.Advance(time.Second)
	}
	st := p.ProbeOnce(context.Background())[0]
	if st.Class != Transient || st.Kind != KindLoginLimited || st.Up {
		t.Fatalf("third ProbeOnce: %+v, want transient/login_limited", st)
	}
	if !strings.Contains(st.Reason, "2 failed logins within 3m0s") || !strings.Contains(st.Reason, s.addr) {
		t.Errorf("reason %q does not say which limit for which target", st.Reason)
	}
	if n := s.countCalls("Login"); n != 2 {
		t.Errorf("vCenter saw %d logins, want 2", n)
	}
	// The first failure ages out at 180s after it.
	clk.Advance(window - 2*time.Second)
	if st := p.ProbeOnce(context.Background())[0]; st.Kind != KindAuth {
		t.Fatalf("after the window: %+v, want auth (a login was sent)", st)
	}
	if got := metricValue(t, p, "linkgate_vcenter_logins_total", "result", "failure"); got != 3 {
		t.Errorf("failed logins = %v, want 3", got)
	}
}

func TestLoginLimiter(t *testing.T) {
	at := func(s int) time.Time { return epoch.Add(time.Duration(s) * time.Second) }
	l := newLoginLimiter(3, window)

	fail := func(s int) {
		t.Helper()
		if err := l.begin(at(s)); err != nil {
			t.Fatalf("begin at %ds: %v", s, err)
		}
		l.end(at(s), true)
	}
	check := func(s, remaining, until int) {
		t.Helper()
		r, u := l.state(at(s))
		want := time.Time{}
		if until > 0 {
			want = at(until)
		}
		if r != remaining || !u.Equal(want) {
			t.Errorf("at %ds: remaining %d, blocked until %v; want %d, %v", s, r, u, remaining, want)
		}
		if got := l.allowedAt(at(s)); (until > 0 && !got.Equal(at(until))) || (until == 0 && !got.Equal(at(s))) {
			t.Errorf("at %ds: allowedAt %v", s, got)
		}
	}

	check(0, 3, 0)
	fail(0)
	// A success takes no slot and frees none.
	if err := l.begin(at(5)); err != nil {
		t.Fatal(err)
	}
	l.end(at(5), false)
	fail(10)
	check(10, 1, 0)
	fail(20)
	check(20, 0, 180)
	var le *LoginLimitError
	if err := l.begin(at(100)); !errors.As(err, &le) || !le.Until.Equal(at(180)) {
		t.Fatalf("begin over the limit = %v, want a LoginLimitError until 180s", err)
	}
	if class, kind := Classify(opError("login", "vc", le)); class != Transient || kind != KindLoginLimited {
		t.Errorf("Classify = %s/%s", class, kind)
	}
	// A failure counts for exactly the window: [0s, 180s).
	check(179, 0, 180)
	check(180, 1, 0)

	// Logins in flight count as failed until answered, so two at once
	// cannot both take the last slot.
	if err := l.begin(at(181)); err != nil {
		t.Fatal(err)
	}
	check(181, 0, 190)
	if err := l.begin(at(181)); err == nil {
		t.Fatal("second login in flight allowed past the limit")
	}
	l.end(at(182), false)
	check(182, 1, 0)

	// Answers recorded out of order still age out in order.
	l2 := newLoginLimiter(2, window)
	for range 2 {
		if err := l2.begin(at(0)); err != nil {
			t.Fatal(err)
		}
	}
	l2.end(at(9), true)
	l2.end(at(3), true)
	if got := l2.allowedAt(at(10)); !got.Equal(at(183)) {
		t.Errorf("allowedAt = %v, want 183s", got)
	}
	// In flight alone can fill the limit; the worst is assumed.
	l3 := newLoginLimiter(1, window)
	if err := l3.begin(at(0)); err != nil {
		t.Fatal(err)
	}
	if got := l3.allowedAt(at(1)); !got.Equal(at(181)) {
		t.Errorf("allowedAt with the only slot in flight = %v, want 181s", got)
	}
}

// TestLoginLimiterConcurrent: many goroutines logging in at once never
// get more than the limit past it.
func TestLoginLimiterConcurrent(t *testing.T) {
	l := newLoginLimiter(3, window)
	now := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	sent := 0
	for range 50 {
		wg.Go(func() {
			if l.begin(now) == nil {
				mu.Lock()
				sent++
				mu.Unlock()
				l.end(now, true)
			}
		})
	}
	wg.Wait()
	if sent != 3 {
		t.Errorf("%d logins sent, want 3", sent)
	}
}

// TestFailedLoginLimitCannotBeSwitchedOff: zero means the default limit.
func TestFailedLoginLimitCannotBeSwitchedOff(t *testing.T) {
	cfg := DefaultConfig()
	cfg.URLs, cfg.User, cfg.Password = []string{"vc.example"}, "u", "p"
	cfg.MaxFailedLogins, cfg.FailedLoginWindow = 0, 0
	p := newProber(t, cfg, nil)
	if got := metricValue(t, p, "linkgate_vcenter_login_failures_remaining"); got != DefaultMaxFailedLogins {
		t.Errorf("login_failures_remaining = %v, want the default %d", got, DefaultMaxFailedLogins)
	}
	if l := p.targets[0].logins; l.max != DefaultMaxFailedLogins || l.window != DefaultFailedLoginWindow {
		t.Errorf("limit %d in %v, want the defaults", l.max, l.window)
	}
}
