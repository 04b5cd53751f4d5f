package soak

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/netnstest"
)

// Tunables. LINKGATE_SOAK sets the length (default: short mode);
// LINKGATE_SOAK_SEED replays a run's random choices (the kernel's and the
// clients' timing still differ); LINKGATE_SOAK_LOGDIR keeps linkgate's
// output there; LINKGATE_SOAK_BIN soaks that binary instead of building one.
const (
	shortSoak     = 30 * time.Second
	settleTimeout = 15 * time.Second // a quiet point that has not converged by then is a failure

	soakUser          = "soak@vsphere.local"
	maxFailedLogins   = 3 // linkgate's documented limit: per target, in any window
	failedLoginWindow = 180 * time.Second
	rssLimit          = 100 << 20
	goroutineSlack    = 25
	fdSlack           = 10
)

// Quiet-point kinds: the state the chaos is stopped in, and what /ready
// must then say.
const (
	quietReady       = "ready"          // required link up, vCenter up, right password: 200
	quietLinkDown    = "link-down"      // required link down, deleted or without carrier: 503 naming links
	quietVCenterDown = "vcenter-down"   // simulator stopped: 503 naming vcenter
	quietWrongPass   = "wrong-password" // simulator restarted, wrong password in the file: 503 naming vcenter
)

func TestSoak(t *testing.T) {
	length := shortSoak
	if v := os.Getenv("LINKGATE_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("LINKGATE_SOAK=%q: want a duration like 45s or 10m", v)
		}
		length = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("LINKGATE_SOAK_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("LINKGATE_SOAK_SEED=%q: want an unsigned integer", v)
		}
		seed = n
	}
	if dl, ok := t.Deadline(); ok && time.Until(dl) < length+3*time.Minute {
		t.Fatalf("LINKGATE_SOAK=%v needs a longer go test -timeout (at least %v)", length, (length + 3*time.Minute).Round(time.Minute))
	}
	t.Logf("soak for %v, seed %d (LINKGATE_SOAK_SEED=%d replays the choices)", length, seed, seed)
	rng := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	ns := netnstest.New(t)
	network := newNetwork(t, ns, rng)
	secrets := []string{newSecret(t), newSecret(t), newSecret(t)} // the right password, two wrong ones
	vc := startVCenter(t, soakUser, secrets[0])
	pw := newPasswordFile(t, secrets...)
	bin := buildLinkgate(t)

	lg := startSidecar(t, bin,
		"--netns="+ns.Path,
		"--network.required-interfaces="+requiredLink,
		"--vcenter.url="+vc.url(),
		"--vcenter.user="+soakUser,
		"--vcenter.password-file="+pw.path,
		"--vcenter.ca-file="+vc.caFile,
		"--vcenter.interval=1s",
		"--vcenter.timeout=2s",
		"--vcenter.base-backoff=200ms",
		"--vcenter.max-backoff=1s",
		// The simulator's host names resolve nowhere: probing them would
		// ask the machine's resolver, off the machine.
		"--vsphere.host-ports=",
		"--gate.stable-for=0s",
		"--collector.verify-interval=5s",
		"--log.level=debug",
	)
	obs := newObserver(lg.base, secrets...)
	s := &soak{t: t, rng: rng, net: network, vc: vc, pw: pw, lg: lg, obs: obs, ops: map[string]int{}, quiet: map[string]int{}}

	ctx, stopClients := context.WithCancel(context.Background())
	var clients sync.WaitGroup
	clients.Go(func() { obs.scraper(ctx, mrand.New(mrand.NewPCG(seed, 1))) })
	for i := range 2 {
		clients.Go(func() { obs.longPoller(ctx, mrand.New(mrand.NewPCG(seed, uint64(10+i)))) })
		clients.Go(func() { obs.subscriber(ctx, i, mrand.New(mrand.NewPCG(seed, uint64(20+i)))) })
	}
	defer func() { stopClients(); clients.Wait() }()

	start := time.Now()
	s.quietPoint(quietReady)
	shortMode := length <= 2*time.Minute
	// Lockout pressure once in short mode, at 40%; in long mode at 2 min
	// and every 4 min after, so that holds (180 s) end between them.
	nextPressure := length * 2 / 5
	if !shortMode {
		nextPressure = 2 * time.Minute
	}
	for time.Since(start) < length {
		if time.Since(start) >= nextPressure {
			s.lockoutPressure(10 * time.Second)
			s.quietPoint(quietWrongPass)
			nextPressure += 4 * time.Minute
			if shortMode {
				nextPressure = length + time.Hour
			}
			continue
		}
		phase := time.Duration(3000+rng.IntN(2000)) * time.Millisecond
		if !shortMode {
			phase = time.Duration(5000+rng.IntN(7000)) * time.Millisecond
		}
		s.chaos(min(phase, length-time.Since(start)))
		s.quietPoint(s.pickQuiet())
	}
	s.quietPoint(quietReady)
	soaked := time.Since(start)

	final, err := obs.scrape(context.Background())
	if err != nil {
		t.Fatalf("final scrape: %v", err)
	}
	stopClients()
	clients.Wait()
	s.checkArgv()
	hwm, err := lg.peakRSS()
	if err != nil {
		t.Errorf("peak RSS: %v", err)
	}
	stopTook, exitErr := lg.stop()
	s.finish(final, hwm, stopTook, exitErr, soaked)
}

// soak is one run: the chaos, the quiet points and their findings.
type soak struct {
	t   *testing.T
	rng *mrand.Rand
	net *network
	vc  *vcenter
	pw  *passwordFile
	lg  *sidecar
	obs *observer

	ops         map[string]int // chaos operations by kind
	faults      int
	quiet       map[string]int // quiet points checked, by kind
	held        int            // ready quiet points where the failed-login limit held logins back
	divergences int            // quiet points that did not converge to the truth
	maxSettle   time.Duration
	maxSessions int
	first, last *sample // resources at the first and last ready quiet point
	pressures   []int   // failed logins during each lockout-pressure phase
}

type sample struct{ goroutines, fds float64 }

func (s *soak) op(kind string) { s.ops[kind]++ }

func (s *soak) fault(kind string) { s.ops[kind]++; s.faults++ }

// chaos runs random operations for d.
func (s *soak) chaos(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		switch r := s.rng.IntN(100); {
		case r < 40:
			s.net.churn()
			s.op("churn")
		case r < 48:
			s.op("link-" + s.net.recreate())
		case r < 56:
			s.net.rename()
			s.op("link-rename")
		case r < 68:
			what := s.net.required()
			if s.net.requiredUp() || what == "mtu" {
				s.op("required-" + what)
			} else {
				s.fault("required-" + what)
			}
		case r < 80:
			s.vcenterChaos()
		case r < 87:
			s.passwordChaos()
		default:
			// A burst: several churn batches back to back.
			for range 3 + s.rng.IntN(5) {
				s.net.churn()
			}
			s.op("churn-burst")
		}
		time.Sleep(time.Duration(10+s.rng.IntN(110)) * time.Millisecond)
	}
}

func (s *soak) vcenterChaos() {
	switch r := s.rng.IntN(10); {
	case r < 4:
		if s.vc.running() {
			s.vc.stop()
			s.fault("vcenter-stop")
		} else {
			s.must(s.vc.start())
			s.op("vcenter-start")
		}
	case r < 7:
		s.must(s.vc.restart())
		s.fault("vcenter-restart")
	default:
		var d time.Duration
		switch r := s.rng.IntN(10); {
		case r < 4:
		case r < 8:
			d = time.Duration(50+s.rng.IntN(750)) * time.Millisecond
		default:
			d = time.Duration(2500+s.rng.IntN(1500)) * time.Millisecond // past --vcenter.timeout
		}
		s.vc.setDelay(d)
		if d > 0 {
			s.fault("vcenter-delay")
		} else {
			s.op("vcenter-undelay")
		}
	}
}

func (s *soak) passwordChaos() {
	switch r := s.rng.IntN(10); {
	case r < 5 && s.pw.wrongNow():
		s.pw.set(0)
		s.op("password-right")
	case r < 5:
		s.pw.setWrong()
		s.fault("password-wrong")
	case r < 8:
		s.pw.touch()
		s.op("password-touch")
	default:
		s.pw.rewrite()
		s.op("password-rewrite")
	}
}

// lockoutPressure does, with wrong passwords, everything that used to buy
// linkgate another login (issue 8). A new wrong password is new content,
// a new credential that linkgate may try at once: it gets one every 2.5 s,
// longer than linkgate's 2 s file check, with the simulator restarted
// (every session gone) half of the time. In between come what must not
// buy a login: the file touched or rewritten with the same content and,
// at the end, the required link flapping. Without a hard limit that is a
// failed login every 2.5 s; SSO locks the account at 5 in 180 s.
func (s *soak) lockoutPressure(d time.Duration) {
	s.vc.setDelay(0)
	s.must(s.vc.start())
	s.net.setRequired(true, true, true)
	before := len(s.vc.loginTimes(loginFailed))
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		s.pw.setWrong()
		s.fault("password-wrong")
		if s.rng.IntN(2) == 0 {
			s.must(s.vc.restart())
			s.fault("vcenter-restart")
		}
		for range 3 {
			time.Sleep(800 * time.Millisecond)
			if s.rng.IntN(2) == 0 {
				s.pw.touch()
				s.op("password-touch")
			} else {
				s.pw.rewrite()
				s.op("password-rewrite")
			}
		}
	}
	for range 3 {
		s.net.setRequired(true, false, true)
		time.Sleep(300 * time.Millisecond)
		s.net.setRequired(true, true, true)
		s.fault("required-admin")
		time.Sleep(700 * time.Millisecond)
	}
	n := len(s.vc.loginTimes(loginFailed)) - before
	s.pressures = append(s.pressures, n)
	s.t.Logf("lockout pressure for %v: %d failed logins at the simulator", d, n)
}

func (s *soak) must(err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
}

// pickQuiet favours ready quiet points: a wrong password costs a failed
// login, and after three the limit holds logins back for up to 180 s,
// during which a ready quiet point can only check that it holds.
func (s *soak) pickQuiet() string {
	switch r := s.rng.IntN(10); {
	case r < 5:
		return quietReady
	case r < 7:
		return quietLinkDown
	case r < 9:
		return quietVCenterDown
	default:
		return quietWrongPass
	}
}

// quietPoint stops the chaos in the state of kind, waits until linkgate
// agrees with the truth (at most settleTimeout) and records what it saw.
func (s *soak) quietPoint(kind string) {
	t := s.t
	t.Helper()
	s.quiet[kind]++
	s.vc.setDelay(0)
	switch kind {
	case quietReady:
		s.net.setRequired(true, true, true)
		s.pw.set(0)
		s.must(s.vc.start())
	case quietLinkDown:
		s.pw.set(0)
		s.must(s.vc.start())
		switch s.rng.IntN(3) {
		case 0:
			s.net.setRequired(true, false, true)
		case 1:
			s.net.setRequired(true, true, false)
		default:
			s.net.setRequired(false, false, false)
		}
	case quietVCenterDown:
		s.net.setRequired(true, true, true)
		s.pw.set(0)
		s.vc.stop()
	case quietWrongPass:
		s.net.setRequired(true, true, true)
		if !s.pw.wrongNow() {
			s.pw.setWrong()
		}
		s.must(s.vc.restart())
	}
	begin := time.Now()
	deadline := begin.Add(settleTimeout)
	for {
		v := s.observe(kind)
		if len(v.problems) == 0 {
			settle := time.Since(begin)
			s.maxSettle = max(s.maxSettle, settle)
			s.maxSessions = max(s.maxSessions, v.sessions)
			if kind == quietReady && v.held {
				s.held++
			}
			if kind == quietReady && !v.held {
				cur := &sample{goroutines: v.goroutines, fds: v.fds}
				if s.first == nil {
					s.first = cur
				}
				s.last = cur
			}
			t.Logf("quiet point %d (%s): converged in %v; /ready %d%s; sessions %d; goroutines %.0f, fds %.0f",
				s.quietPoints(), kind, settle.Round(time.Millisecond), v.code, v.note, v.sessions, v.goroutines, v.fds)
			return
		}
		if time.Now().After(deadline) {
			s.divergences++
			t.Errorf("quiet point %d (%s): no agreement with the truth after %v:\n  %s\nsimulator failed logins at %s\nlinkgate log tail:\n%s",
				s.quietPoints(), kind, settleTimeout, strings.Join(v.problems, "\n  "),
				times(s.vc.loginTimes(loginFailed)), s.lg.logTail(40))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *soak) quietPoints() int {
	n := 0
	for _, c := range s.quiet {
		n += c
	}
	return n
}

// view is one look at linkgate and the truth at a quiet point.
type view struct {
	problems   []string
	code       int
	held       bool // the failed-login limit holds logins back
	note       string
	sessions   int
	goroutines float64
	fds        float64
}

// readyDoc is the JSON form of /ready.
type readyDoc struct {
	Ready  bool `json:"ready"`
	Checks []struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Reason string `json:"reason"`
	} `json:"checks"`
}

func (d readyDoc) failing() map[string]string {
	out := map[string]string{}
	for _, c := range d.Checks {
		if !c.OK {
			out[c.Name] = c.Reason
		}
	}
	return out
}

// observe compares linkgate with the truth once and lists every
// disagreement.
func (s *soak) observe(kind string) view {
	var v view
	bad := func(format string, args ...any) { v.problems = append(v.problems, fmt.Sprintf(format, args...)) }
	ctx := context.Background()

	m, err := s.obs.scrape(ctx)
	if err != nil {
		bad("scrape: %v", err)
		return v
	}
	k, err := s.net.kernel()
	if err != nil {
		bad("ip: %v", err)
		return v
	}
	v.problems = append(v.problems, compareWithKernel(m, k)...)
	v.goroutines, _ = m.value("go_goroutines")
	v.fds, _ = m.value("process_open_fds")

	if verified, _ := m.value("linkgate_netlink_state_verified"); verified != 1 {
		bad("linkgate_netlink_state_verified is %v", verified)
	}

	code, body, err := s.obs.get(ctx, "/ready", "application/json")
	if err != nil {
		bad("/ready: %v", err)
		return v
	}
	v.code = code
	var doc readyDoc
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		bad("/ready JSON: %v: %.300s", err, body)
		return v
	}
	failing := doc.failing()
	// Whether the failed-login limit holds logins back, as linkgate
	// exports it; a hold must end within one window.
	now := float64(time.Now().UnixNano()) / 1e9
	if until, ok := m.value("linkgate_vcenter_login_blocked_until_timestamp_seconds"); ok && until > now {
		v.held = true
		if until > now+failedLoginWindow.Seconds()+5 {
			bad("logins held back until %.0f s from now, longer than the %v window", until-now, failedLoginWindow)
		}
	}

	switch kind {
	case quietReady:
		switch {
		case code == 200 && doc.Ready && len(failing) == 0:
			v.held = false
		case v.held && code == 503 && len(failing) == 1 && failing["vcenter"] != "":
			v.note = " (logins held back by the failed-login limit: " + failing["vcenter"] + ")"
		default:
			bad("want 200 (required link up, vCenter up, right password), got %d %v", code, failing)
		}
	case quietLinkDown:
		if code != 503 || doc.Ready || !strings.Contains(failing["links"], requiredLink) {
			bad("want 503 naming links (%s down), got %d %v", requiredLink, code, failing)
		}
		if up, _ := m.value("linkgate_network_up"); up != 0 {
			bad("linkgate_network_up is %v with %s down", up, requiredLink)
		}
	case quietVCenterDown:
		if code != 503 || doc.Ready || failing["vcenter"] == "" || failing["links"] != "" {
			bad("want 503 naming vcenter only, got %d %v", code, failing)
		}
	case quietWrongPass:
		// The simulator restarted: linkgate must log in again, and with a
		// wrong password that fails (auth) or is held back (login_limited).
		// While logins are held back no attempt is made, so the reason is
		// still that of the last one, whatever it was.
		why := failing["vcenter"]
		if code != 503 || doc.Ready || failing["links"] != "" || why == "" ||
			!(v.held || strings.Contains(why, "auth") || strings.Contains(why, "login_limited")) {
			bad("want 503 naming vcenter only, for auth or login_limited (or held back), got %d %v", code, failing)
		}
	}
	if code == 503 {
		v.note += fmt.Sprintf(" %v", failing)
		// People read the text form: every failing check is named there.
		tcode, text, err := s.obs.get(ctx, "/ready?verbose", "")
		if err != nil {
			bad("/ready?verbose: %v", err)
		} else if tcode == 503 {
			for name := range failing {
				if !strings.Contains(text, "[-]"+name+" failed") {
					bad("/ready?verbose does not name %s: %.300s", name, text)
				}
			}
		}
	}

	if ok, why := s.obs.streamsAgree(doc.Ready); !ok {
		bad("%s, /ready says ready=%v", why, doc.Ready)
	}
	if subs, _ := m.value("linkgate_events_subscribers"); subs != float64(s.obs.sseOpen.Load()) {
		bad("linkgate_events_subscribers %v, open streams %d", subs, s.obs.sseOpen.Load())
	}
	if w, _ := m.value("linkgate_ready_waiters"); w > 2 {
		bad("linkgate_ready_waiters %v with 2 long-pollers", w)
	}

	sessions, err := s.vc.sessions()
	if err != nil {
		bad("sessions: %v", err)
	}
	v.sessions = sessions
	active, _ := m.value("linkgate_vcenter_session_active")
	switch {
	case sessions > 1:
		bad("the simulator holds %d sessions; linkgate needs one", sessions)
	case kind == quietReady && code == 200 && (sessions != 1 || active != 1):
		bad("ready with %d simulator sessions and linkgate_vcenter_session_active %v", sessions, active)
	}
	return v
}

// compareWithKernel lists where linkgate's exported network state differs
// from the kernel's: every link and only those, their state and MTU,
// address counts, route counts, the required interface and the network.
func compareWithKernel(m metrics, k kernelState) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	exported := map[string]kernelLink{}
	for _, s := range m["linkgate_link_up"] {
		dev := s.labels["device"]
		l := kernelLink{Up: s.value == 1}
		admin, _ := m.value("linkgate_link_admin_up", "device", dev)
		carrier, _ := m.value("linkgate_link_carrier", "device", dev)
		mtu, _ := m.value("linkgate_link_mtu_bytes", "device", dev)
		l.Admin, l.Carrier, l.MTU = admin == 1, carrier == 1, int(mtu)
		for _, o := range m["linkgate_link_oper_state"] {
			if o.labels["device"] == dev && o.value == 1 {
				l.Oper = o.labels["state"]
			}
		}
		exported[dev] = l
	}
	for dev, kl := range k.links {
		el, ok := exported[dev]
		if !ok {
			bad("link %s: in the kernel, not exported", dev)
			continue
		}
		if !kl.Admin {
			// IFLA_CARRIER (linkgate) and IFF_LOWER_UP (ip) differ only
			// while the link is administratively down.
			el.Carrier = kl.Carrier
		}
		if el != kl {
			bad("link %s: exported %+v, kernel %+v", dev, el, kl)
		}
	}
	for dev := range exported {
		if _, ok := k.links[dev]; !ok {
			bad("link %s: exported, not in the kernel", dev)
		}
	}
	addrs := map[string]int{}
	for _, s := range m["linkgate_link_addresses"] {
		if s.value != 0 {
			addrs[s.labels["device"]+"|"+s.labels["family"]+"|"+s.labels["scope"]] = int(s.value)
		}
	}
	for key := range union(addrs, k.addrs) {
		if addrs[key] != k.addrs[key] {
			bad("addresses %s: exported %d, kernel %d", key, addrs[key], k.addrs[key])
		}
	}
	for _, fam := range []string{"inet", "inet6"} {
		if r, _ := m.value("linkgate_routes", "family", fam); int(r) != k.routes[fam] {
			bad("routes %s: exported %v, kernel %d", fam, r, k.routes[fam])
		}
		if r, _ := m.value("linkgate_route_default", "family", fam); int(r) != k.defaults[fam] {
			bad("default routes %s: exported %v, kernel %d", fam, r, k.defaults[fam])
		}
	}
	reqUp := k.links[requiredLink].Up
	if v, ok := m.value("linkgate_network_required_interface_up", "device", requiredLink); !ok || (v == 1) != reqUp {
		bad("linkgate_network_required_interface_up{device=%q} %v (present %v), kernel up %v", requiredLink, v, ok, reqUp)
	}
	if v, _ := m.value("linkgate_network_up"); (v == 1) != reqUp {
		bad("linkgate_network_up %v, kernel %s up %v", v, requiredLink, reqUp)
	}
	if len(out) > 12 {
		out = append(out[:12], fmt.Sprintf("… and %d more", len(out)-12))
	}
	return out
}

func union(a, b map[string]int) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// checkArgv makes sure no secret is on linkgate's command line or in its
// environment, as any user of the host can read them from /proc.
func (s *soak) checkArgv() {
	for _, f := range []string{"cmdline", "environ"} {
		text, err := s.lg.procFile(f)
		if err != nil {
			s.t.Errorf("/proc/PID/%s: %v", f, err)
			continue
		}
		s.obs.scan("/proc/PID/"+f, text)
	}
}

// finish checks what only the whole run can show and prints the counts.
func (s *soak) finish(final metrics, hwm int64, stopTook time.Duration, exitErr error, soaked time.Duration) {
	t := s.t
	o := s.obs
	o.scan("linkgate stdout", s.lg.stdout.String())
	o.scan("linkgate stderr", s.lg.stderr.String())
	if dir := os.Getenv("LINKGATE_SOAK_LOGDIR"); dir != "" {
		for name, text := range map[string]string{"linkgate.stdout": s.lg.stdout.String(), "linkgate.stderr": s.lg.stderr.String()} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
				t.Errorf("LINKGATE_SOAK_LOGDIR: %v", err)
			}
		}
	}

	if exitErr != nil || stopTook > 8*time.Second {
		t.Errorf("SIGTERM: exit %v after %v; README: exits 0 within 8 s", exitErr, stopTook)
	}
	for _, l := range o.leaks {
		t.Errorf("secret leaked: %s", l)
	}
	for _, d := range o.decreases {
		t.Errorf("counter went back: %s", d)
	}
	for _, a := range o.anomalies {
		t.Errorf("client saw: %s", a)
	}
	failed := s.vc.loginTimes(loginFailed)
	mostFailed := mostInWindow(failed, failedLoginWindow)
	if mostFailed > maxFailedLogins {
		t.Errorf("%d failed logins at the simulator within %v (limit %d); failed logins at %s",
			mostFailed, failedLoginWindow, maxFailedLogins, times(failed))
	}
	netDiv := final.sum("linkgate_netlink_divergences_total")
	if netDiv != 0 {
		t.Errorf("linkgate_netlink_divergences_total %v: anti-entropy found the state wrong", netDiv)
	}
	if hwm > rssLimit {
		t.Errorf("peak RSS %d MiB, limit %d MiB", hwm>>20, rssLimit>>20)
	}
	var grow string
	if s.first != nil && s.last != nil {
		grow = fmt.Sprintf("goroutines %.0f→%.0f, fds %.0f→%.0f", s.first.goroutines, s.last.goroutines, s.first.fds, s.last.fds)
		if s.last.goroutines > s.first.goroutines+goroutineSlack || s.last.fds > s.first.fds+fdSlack {
			t.Errorf("growth beyond +%d goroutines / +%d fds between the first and last ready quiet point: %s",
				goroutineSlack, fdSlack, grow)
		}
	} else {
		grow = "goroutines/fds: no ready quiet point without a login hold"
		t.Errorf("%s", grow)
	}

	kinds := make([]string, 0, len(s.ops))
	for k := range s.ops {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var ops []string
	total := 0
	for _, k := range kinds {
		ops = append(ops, fmt.Sprintf("%s=%d", k, s.ops[k]))
		total += s.ops[k]
	}
	var quiet []string
	for _, k := range []string{quietReady, quietLinkDown, quietVCenterDown, quietWrongPass} {
		quiet = append(quiet, fmt.Sprintf("%s=%d", k, s.quiet[k]))
	}
	linkgateLogins, _ := final.value("linkgate_vcenter_logins_total", "result", "failure")
	t.Logf("operations: %d (%s); ip -batch lines rejected (expected): %d, mostly %s",
		total, strings.Join(ops, " "), s.net.rejected, s.net.topReasons(4))
	t.Logf("faults injected: %d; simulator starts: %d", s.faults, s.vc.starts)
	t.Logf("quiet points: %d (%s), %d of them ready-but-held by the failed-login limit; slowest convergence %v",
		s.quietPoints(), strings.Join(quiet, " "), s.held, s.maxSettle.Round(time.Millisecond))
	t.Logf("lockout pressure phases: %d, failed logins during each: %v", len(s.pressures), s.pressures)
	t.Logf("divergences: %d at quiet points, linkgate_netlink_divergences_total %v", s.divergences, netDiv)
	t.Logf("logins at the simulator: %d ok, %d failed (max %d in any %v), %d dropped while delayed; linkgate counted %v failed; simulator requests: %d",
		len(s.vc.loginTimes(loginOK)), len(failed), mostFailed, failedLoginWindow, len(s.vc.loginTimes(loginDropped)), linkgateLogins, s.vc.served())
	t.Logf("clients: %d scrapes, %d long-polls (slowest 503 %v), %d /events streams with %d events",
		o.scrapes, o.polls.Load(), time.Duration(o.pollMaxLatency.Load()).Round(time.Millisecond), o.sseStreams.Load(), o.sseEvents.Load())
	t.Logf("resources: peak RSS %.1f MiB (VmHWM; scraped max %.1f MiB), max goroutines %.0f, max fds %.0f, %s, max simulator sessions %d",
		float64(hwm)/(1<<20), o.peakRSS/(1<<20), o.maxGoroutines, o.maxFDs, grow, s.maxSessions)
	t.Logf("SIGTERM: exit %v after %v; secrets found in output: %d; counters gone back: %d; client anomalies: %d",
		exitErr, stopTook.Round(time.Millisecond), len(o.leaks), len(o.decreases), len(o.anomalies))
	fmt.Printf("soak: %v ops=%d faults=%d quiet=%d divergences=%d failed-logins=%d (max %d/%v) peak-rss=%.1fMiB %s sessions<=%d leaks=%d\n",
		soaked.Round(time.Second), total, s.faults, s.quietPoints(), s.divergences+int(netDiv), len(failed), mostFailed,
		failedLoginWindow, float64(hwm)/(1<<20), grow, s.maxSessions, len(o.leaks))
}

func times(ts []time.Time) string {
	if len(ts) == 0 {
		return "(none)"
	}
	out := make([]string, len(ts))
	for i, at := range ts {
		out[i] = at.Format("15:04:05.000")
	}
	return strings.Join(out, ", ")
}

func newSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "soak-" + hex.EncodeToString(b)
}

// passwordFile is the sidecar's --vcenter.password-file, rotated as a
// secret manager would: write aside, rename over. values[0] is the right
// password, the others are wrong.
type passwordFile struct {
	t      *testing.T
	path   string
	values []string
	cur    int
}

func newPasswordFile(t *testing.T, values ...string) *passwordFile {
	p := &passwordFile{t: t, path: filepath.Join(t.TempDir(), "password"), values: values}
	p.rewrite()
	return p
}

func (p *passwordFile) wrongNow() bool { return p.cur != 0 }

// set puts values[i] in the file, if it is not there.
func (p *passwordFile) set(i int) {
	if i == p.cur {
		return
	}
	p.cur = i
	p.rewrite()
}

// setWrong puts another wrong password in the file: a new credential,
// however wrong.
func (p *passwordFile) setWrong() {
	next := 1 + p.cur%(len(p.values)-1)
	p.set(next)
}

// rewrite writes the current password again: new file, same content.
func (p *passwordFile) rewrite() {
	p.t.Helper()
	tmp := p.path + ".new"
	if err := os.WriteFile(tmp, []byte(p.values[p.cur]+"\n"), 0o600); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Rename(tmp, p.path); err != nil {
		p.t.Fatal(err)
	}
}

// touch changes only the modification time.
func (p *passwordFile) touch() {
	now := time.Now()
	if err := os.Chtimes(p.path, now, now); err != nil {
		p.t.Fatal(err)
	}
}
