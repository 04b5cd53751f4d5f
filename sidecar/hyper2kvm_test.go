package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/linkgate/linkgate/internal/clock/fakeclock"
	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/promtooltest"
	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"golang.org/x/sys/unix"
)

// controlServer speaks hyper2kvm's control protocol exactly as
// hyper2kvm/daemon/control.py does: one connection at a time, a single
// recv(4096), one JSON reply, close. Its paused flag lives in memory: a
// restart comes back unpaused, on a new socket at the same path.
type controlServer struct {
	t    *testing.T
	path string
	got  chan string // every command received, in order

	mu      sync.Mutex
	paused  bool
	mode    string        // "": normal; "slow": hold each request until the mode changes; "error"; "garbage"; "lose-pause-reply"; "drop-pause"
	release chan struct{} // closed when the slow mode ends
	unknown map[string]bool
	ln      *net.UnixListener
	done    chan struct{}
	wg      sync.WaitGroup
}

// Server modes.
const (
	modeSlow    = "slow"
	modeError   = "error"
	modeGarbage = "garbage"
	// A pause is carried out, but its reply lost (the connection closes).
	modeLosePauseReply = "lose-pause-reply"
	// A pause is lost before it is carried out: no effect, no reply.
	modeDropPause = "drop-pause"
)

// daemonSocket returns {dir}/.daemon/control.sock in a short temporary
// directory (a Unix socket path must fit in 107 bytes).
func daemonSocket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lgd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Mkdir(filepath.Join(dir, ".daemon"), 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, ".daemon", "control.sock")
}

func newControlServer(t *testing.T, path string, paused bool) *controlServer {
	t.Helper()
	s := &controlServer{t: t, path: path, got: make(chan string, 256), unknown: map[string]bool{}}
	s.start(paused)
	t.Cleanup(s.stop)
	return s
}

// start binds the socket as the daemon does: remove what is there, bind.
func (s *controlServer) start(paused bool) {
	s.t.Helper()
	if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.path, Net: "unix"})
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.ln, s.paused, s.done = ln, paused, make(chan struct{})
	done := s.done
	s.mu.Unlock()
	s.wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.handle(conn, done)
		}
	})
}

// stop closes the socket (and removes it), as the daemon's stop does.
func (s *controlServer) stop() {
	s.mu.Lock()
	ln, done := s.ln, s.done
	s.ln = nil
	s.mu.Unlock()
	if ln == nil {
		return
	}
	close(done)
	ln.Close()
	s.wg.Wait()
}

// restart is a daemon restart: a new socket at the same path, not paused.
func (s *controlServer) restart() {
	s.t.Helper()
	before, err := statSocket(s.path)
	if err != nil {
		s.t.Fatal(err)
	}
	s.stop()
	s.start(false)
	after, err := statSocket(s.path)
	if err != nil {
		s.t.Fatal(err)
	}
	if after == before {
		s.t.Fatalf("the restarted daemon's socket is indistinguishable from the old one: %+v", after)
	}
}

func (s *controlServer) setMode(mode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mode == modeSlow && s.release != nil {
		close(s.release)
		s.release = nil
	}
	s.mode = mode
	if mode == modeSlow {
		s.release = make(chan struct{})
	}
}

func (s *controlServer) isPaused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paused
}

func (s *controlServer) handle(conn net.Conn, done chan struct{}) {
	defer conn.Close()
	buf := make([]byte, 4096)
	n, _ := conn.Read(buf) // one recv, as the daemon does
	data := strings.TrimSpace(string(buf[:n]))
	if data == "" {
		return
	}
	command := data // the daemon's fallback: a bare command string
	var req struct {
		Command string `json:"command"`
	}
	if json.Unmarshal([]byte(data), &req) == nil {
		command = req.Command
	}
	select {
	case s.got <- command:
	default:
		s.t.Errorf("control server: too many unread commands")
	}
	s.mu.Lock()
	mode, release := s.mode, s.release
	s.mu.Unlock()
	if mode == modeSlow {
		select {
		case <-release:
		case <-done:
			return
		}
		s.mu.Lock()
		mode = s.mode
		s.mu.Unlock()
	}
	var reply any
	switch {
	case command == cmdPause && mode == modeDropPause:
		return
	case command == cmdPause && mode == modeLosePauseReply:
		s.answer(command)
		return
	case mode == modeGarbage:
		_, _ = conn.Write([]byte("<html>502 Bad Gateway</html>"))
		return
	case mode == modeError:
		reply = map[string]any{"status": "error", "message": "[Errno 5] Input/output error"}
	default:
		reply = s.answer(command)
	}
	b, _ := json.Marshal(reply)
	_, _ = conn.Write(b)
}

func (s *controlServer) answer(command string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.unknown[command]:
	case command == "status":
		return map[string]any{"status": "ok", "paused": s.paused, "draining": false}
	case command == "pause":
		s.paused = true
		return map[string]any{"status": "ok", "message": "Daemon paused"}
	case command == "resume":
		s.paused = false
		return map[string]any{"status": "ok", "message": "Daemon resumed"}
	case command == "stats":
		return map[string]any{"status": "ok", "stats": map[string]int{"processed": 0}}
	case command == "drain":
		return map[string]any{"status": "ok", "message": "Draining queue"}
	}
	return map[string]any{
		"status":             "error",
		"message":            "Unknown command: " + command,
		"available_commands": []string{"status", "stats", "pause", "resume", "drain", "stop"},
	}
}

// expect receives the next commands, in order.
func (s *controlServer) expect(t *testing.T, commands ...string) {
	t.Helper()
	for _, want := range commands {
		if got := recv(t, s.got, "command "+want); got != want {
			t.Fatalf("daemon received %q, want %q", got, want)
		}
	}
}

// none asserts that no command arrived.
func (s *controlServer) none(t *testing.T) {
	t.Helper()
	select {
	case c := <-s.got:
		t.Fatalf("daemon received %q, want nothing", c)
	default:
	}
}

// human sends a command as `hyper2kvm daemon <command>` would.
func human(t *testing.T, s *controlServer, command string) {
	t.Helper()
	conn, err := net.Dial("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, `{"command": %q}`, command); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	if err != nil || !strings.Contains(string(b), `"ok"`) {
		t.Fatalf("%s: %q, %v", command, b, err)
	}
	s.expect(t, command)
}

// daemonRig runs a Daemon and shows when it waits.
type daemonRig struct {
	*Daemon
	stop func()

	mu      sync.Mutex
	st      *State
	wake    time.Time
	changed chan struct{}
}

func startDaemon(t *testing.T, g *Gate, o DaemonOptions) *daemonRig {
	t.Helper()
	d, err := NewDaemon(g, o)
	if err != nil {
		t.Fatal(err)
	}
	r := &daemonRig{Daemon: d, changed: make(chan struct{})}
	d.onIdle = func(st *State, wake time.Time) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.st, r.wake = st, wake
		close(r.changed)
		r.changed = make(chan struct{})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.Run(ctx); err != nil {
			t.Errorf("daemon: %v", err)
		}
	}()
	var once sync.Once
	r.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(r.stop)
	return r
}

// idle waits until the daemon waits, having acted on st (or a newer
// state), until wake (zero: until the gate changes).
func (r *daemonRig) idle(t *testing.T, st *State, wake time.Time) {
	t.Helper()
	deadline := time.After(hang)
	for {
		r.mu.Lock()
		cur, w, ch := r.st, r.wake, r.changed
		r.mu.Unlock()
		if cur != nil && cur.Version >= st.Version && w.Equal(wake) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("daemon never idle on state %d until %v; last: state %v until %v", st.Version, wake, cur, w)
		}
	}
}

func (r *daemonRig) count(command, result string) uint64 {
	return r.commands[[2]string{command, result}].Load()
}

// readPause returns the state file's pause, or nil if there is none.
func (r *daemonRig) readPause(t *testing.T) *daemonPause {
	t.Helper()
	b, err := os.ReadFile(r.stateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var p daemonPause
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("state file %q: %v", b, err)
	}
	return &p
}

// checkOwned asserts what linkgate remembers and exports about its pause.
func (r *daemonRig) checkOwned(t *testing.T, owned bool) {
	t.Helper()
	p := r.readPause(t)
	if (p != nil) != owned || r.paused.Load() != owned {
		t.Fatalf("owned: state file %+v, paused_by_linkgate %v; want %v", p, r.paused.Load(), owned)
	}
	if p == nil {
		return
	}
	id, err := statSocket(r.opts.Socket)
	if err != nil || p.Socket != r.opts.Socket || p.id() != id || p.PausedAt.IsZero() || p.Unconfirmed {
		t.Fatalf("state file %+v; socket %+v (%v)", p, id, err)
	}
	fi, err := os.Stat(r.stateFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", fi.Mode(), err)
	}
}

// daemonStable is the gate's stable-for in these tests.
const daemonStable = 10 * time.Second

// carrierGate is a real gate over a collector requiring va (paired with
// vb in b) on clk, with the vcenter check when vc is set; it returns once
// va is up. vb going down takes va's carrier.
func carrierGate(t *testing.T, clk *fakeclock.Clock, vc *fakeVCenter) (*Gate, *netnstest.NS) {
	t.Helper()
	a, b := pair(t)
	c := startCollector(t, a, "va")
	opts := GateOptions{Snapshots: c, Checks: []Check{LinksCheck()}, StableFor: daemonStable, Clock: clk}
	if vc != nil {
		opts.VCenter = vc
		opts.Checks = append(opts.Checks, VCenterCheck(0))
	}
	g := startGate(t, opts)
	waitState(t, g, "va up", linksOK)
	return g, b
}

func linksOK(st *State) bool {
	c, ok := st.Check(CheckLinks)
	return ok && c.OK
}

// carrierLoss takes va's carrier and returns the gate's state then.
func carrierLoss(t *testing.T, g *Gate, b *netnstest.NS) *State {
	t.Helper()
	b.IP(t, "link", "set", "vb", "down")
	return waitState(t, g, "va lost carrier", checkFails(CheckLinks, "va: no carrier"))
}

// carrierBack restores it and returns the state then (damping).
func carrierBack(t *testing.T, g *Gate, b *netnstest.NS) *State {
	t.Helper()
	b.IP(t, "link", "set", "vb", "up")
	return waitState(t, g, "va up again", linksOK)
}

// linksStable moves the clock to the end of the links check's damping
// (the gate's and the daemon's timers are due then).
func linksStable(t *testing.T, clk *fakeclock.Clock, st *State) time.Time {
	t.Helper()
	c, _ := st.Check(CheckLinks)
	at := c.Since.Add(daemonStable)
	clk.WaitTimer(t, at, hang)
	clk.Advance(at.Sub(clk.Now()))
	return at
}

// birthTime reports whether the file system keeps path's birth time.
func birthTime(t *testing.T, path string) bool {
	t.Helper()
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_BTIME, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mask&unix.STATX_BTIME == 0 {
		t.Logf("%s: no birth time on this file system", path)
		return false
	}
	return true
}

func daemonLogger(buf *testkit.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestDaemonPausesOnCarrierLossAndResumes(t *testing.T) {
	clk := newFakeClock()
	g, b := carrierGate(t, clk, nil)
	srv := newControlServer(t, daemonSocket(t), false)
	var logs testkit.Buffer
	rig := startDaemon(t, g, DaemonOptions{Socket: srv.path, Clock: clk, Logger: daemonLogger(&logs)})
	srv.expect(t, "status") // at start: is it there?
	st := g.State()
	rig.idle(t, st, st.ReadyAt) // the gate's first verdict is damped: nothing to do
	srv.none(t)
	if !rig.reachable.Load() {
		t.Error("daemon_reachable 0 after an answer")
	}

	st = carrierLoss(t, g, b)
	srv.expect(t, "status", "pause")
	rig.idle(t, st, clk.Now().Add(15*time.Second)) // default Recheck
	if !srv.isPaused() {
		t.Fatal("daemon not paused")
	}
	rig.checkOwned(t, true)
	if !strings.Contains(logs.String(), `msg="paused hyper2kvm's daemon: the gate is closed"`) ||
		!strings.Contains(logs.String(), `failing="[links: va: no carrier`) {
		t.Errorf("log:\n%s", logs.String())
	}

	// A chmod of the socket is no restart: the pause stays linkgate's.
	if birthTime(t, srv.path) {
		if err := os.Chmod(srv.path, 0o660); err != nil {
			t.Fatal(err)
		}
	}

	// The link is back: nothing until the links held for stable-for.
	st = carrierBack(t, g, b)
	rig.idle(t, st, st.ReadyAt)
	srv.none(t)
	if !srv.isPaused() {
		t.Fatal("resumed during the damping")
	}
	linksStable(t, clk, st)
	waitState(t, g, "ready", isReady)
	srv.expect(t, "status", "resume")
	rig.idle(t, g.State(), time.Time{})
	if srv.isPaused() {
		t.Fatal("daemon still paused")
	}
	rig.checkOwned(t, false)
	if !strings.Contains(logs.String(), `msg="resumed hyper2kvm's daemon: the gate is open"`) {
		t.Errorf("log:\n%s", logs.String())
	}
	for _, c := range []string{"status", "pause", "resume"} {
		want := uint64(1)
		if c == "status" {
			want = 3
		}
		if got := rig.count(c, daemonOK); got != want {
			t.Errorf("%s ok: %d, want %d", c, got, want)
		}
	}
}

func TestDaemonNeverResumesAnOperatorsPause(t *testing.T) {
	clk := newFakeClock()
	g, b := carrierGate(t, clk, nil)
	srv := newControlServer(t, daemonSocket(t), true) // paused by an operator
	rig := startDaemon(t, g, DaemonOptions{Socket: srv.path, Clock: clk})
	srv.expect(t, "status")

	st := carrierLoss(t, g, b)
	srv.expect(t, "status") // paused already: not linkgate's
	recheck := clk.Now().Add(15 * time.Second)
	rig.idle(t, st, recheck)
	srv.none(t)
	rig.checkOwned(t, false)
	clk.Advance(15 * time.Second)
	srv.expect(t, "status") // still watched: a restart would drop that pause
	rig.idle(t, st, recheck.Add(15*time.Second))
	srv.none(t)

	st = carrierBack(t, g, b)
	linksStable(t, clk, st)
	st = waitState(t, g, "ready", isReady)
	rig.idle(t, st, time.Time{})
	srv.none(t)
	if !srv.isPaused() {
		t.Fatal("linkgate resumed an operator's pause")
	}
	rig.checkOwned(t, false)
}

func TestDaemonRespectsAHumanResume(t *testing.T) {
	clk := newFakeClock()
	g, b := carrierGate(t, clk, nil)
	srv := newControlServer(t, daemonSocket(t), false)
	var logs testkit.Buffer
	rig := startDaemon(t, g, DaemonOptions{Socket: srv.path, Clock: clk, Logger: daemonLogger(&logs)})
	srv.expect(t, "status")

	st := carrierLoss(t, g, b)
	srv.expect(t, "status", "pause")
	rig.idle(t, st, clk.Now().Add(15*time.Second))
	human(t, srv, "resume") // `hyper2kvm daemon resume` during the outage
	clk.Advance(15 * time.Second)
	srv.expect(t, "status")
	rig.idle(t, st, time.Time{}) // nothing more to do in this outage
	srv.none(t)
	rig.checkOwned(t, false)
	if srv.isPaused() {
		t.Fatal("paused again against a human's resume")
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"hyper2kvm's daemon was resumed by someone else while the gate is closed") {
		t.Errorf("log:\n%s", logs.String())
	}
	clk.Advance(time.Hour)
	rig.idle(t, st, time.Time{})
	srv.none(t)

	// The outage ends (nothing to resume) and a new one begins: paused.
	st = carrierBack(t, g, b)
	linksStable(t, clk, st)
	st = waitState(t, g, "ready", isReady)
	rig.idle(t, st, time.Time{})
	srv.none(t)
	carrierLoss(t, g, b)
	srv.expect(t, "status", "pause")
}

func TestDaemonRepausesARestartedDaemon(t *testing.T) {
	clk := newFakeClock()
	g, b := carrierGate(t, clk, nil)
	srv := newControlServer(t, daemonSocket(t), false)
	var logs testkit.Buffer
	const recheck = 7 * time.Second
	rig := startDaemon(t, g, DaemonOptions{Socket: srv.path, Clock: clk, Logger: daemonLogger(&logs), Recheck: recheck})
	srv.expect(t, "status")

	st := carrierLoss(t, g, b)
	srv.expect(t, "status", "pause")
	rig.idle(t, st, clk.Now().Add(recheck))
	first := rig.readPause(t)
	srv.restart() // same path, new socket, not paused
	clk.Advance(recheck)
	srv.expect(t, "status", "pause")
	rig.idle(t, st, clk.Now().Add(recheck))
	if !srv.isPaused() {
		t.Fatal("restarted daemon not paused again")
	}
	rig.checkOwned(t, true) // the new socket's identity
	if p := rig.readPause(t); p.id() == first.id() || !p.PausedAt.Equal(first.PausedAt) {
		t.Errorf("after the restart: %+v, before: %+v", p, first)
	}
	if !strings.Contains(logs.String(), "restarted while the gate is closed; paused it again") {
		t.Errorf("log:\n%s", logs.String())
	}

	// Gone for a while: retried, and found again as a restart.
	srv.stop()
	clk.Advance(recheck)
	rig.idle(t, st, clk.Now().Add(time.Second)) // backoff
	if rig.count("status", daemonUnreachable) != 1 || rig.reachable.Load() {
		t.Errorf("missing socket: unreachable %d, reachable %v", rig.count("status", daemonUnreachable), rig.reachable.Load())
	}
	srv.start(false)
	clk.Advance(time.Second)
	srv.expect(t, "status", "pause")
	rig.idle(t, st, clk.Now().Add(recheck))
	rig.checkOwned(t, true)

	st = carrierBack(t, g, b) // stable at +10s, after the next recheck
	// The daemon must have taken in the new state before time moves: under
	// load it may not have yet (a CI run failed here once).
	rig.idle(t, st, clk.Now().Add(recheck))
	clk.Advance(recheck)
	srv.expect(t, "status")
	rig.idle(t, st, st.ReadyAt) // before the recheck after it
	linksStable(t, clk, st)
	srv.expect(t, "status", "resume")
	rig.idle(t, g.State(), time.Time{})
	rig.checkOwned(t, false)
	if srv.isPaused() {
		t.Fatal("not resumed")
	}
}

func TestDaemonResumesAfterLinkgateRestart(t *testing.T) {
	clk := newFakeClock()
	g, b := carrierGate(t, clk, nil)
	srv := newControlServer(t, daemonSocket(t), false)
	stateDir := t.TempDir()
	o := DaemonOptions{Socket: srv.path, StateDir: stateDir, Clock: clk}
	rig := startDaemon(t, g, o)
	srv.expect(t, "status")
	st := carrierLoss(t, g, b)
	srv.expect(t, "status", "pause")
	rig.idle(t, st, clk.Now().Add(15*time.Second))
	rig.checkOwned(t, true)
	if dir := filepath.Dir(rig.stateFile); dir != stateDir || !regexp.MustCompile(`^linkgate-paused-[0-9a-f]{8}\.json$`).MatchString(filepath.Base(rig.stateFile)) {
		t.Errorf("state file %s", rig.stateFile)
	}
	rig.stop() // linkgate stops mid-outage

	var logs testkit.Buffer
	o.Logger = daemonLogger(&logs)
	rig = startDaemon(t, g, o)
	srv.expect(t, "status") // still paused, still linkgate's
	rig.idle(t, st, clk.Now().Add(15*time.Second))
	rig.checkOwned(t, true)
	if !strings.Contains(logs.String(), "linkgate paused hyper2kvm's daemon before it restarted") {
		t.Errorf("log:\n%s", logs.String())
	}
	st = carrierBack(t, g, b)
	linksStable(t, clk, st)
	srv.expect(t, "status", "resume")
	rig.idle(t, g.State(), time.Time{})
	rig.checkOwned(t, false)
	if srv.isPaused() {
		t.Fatal("not resumed after a linkgate restart")
	}
}

// A daemon that restarted after linkgate paused it and was paused again
// by someone else holds their pause, not linkgate's: never resumed by it,
// whether a recheck or the gate's opening finds it.
func TestDaemonLeavesAPauseMadeAfterARestart(t *testing.T) {
	clk := newFakeClock()
	vc := newFakeVCenter(vcUp(time.Now()))
	g := vcenterGate(t, GateOptions{Clock: clk}, vc)
	waitState(t, g, "ready", isReady)
	srv := newControlServer(t, daemonSocket(t), false)
	rig := startDaemon(t, g, DaemonOptions{Socket: srv.path, Clock: clk})
	srv.expect(t, "status")

	for _, atRecheck := range []bool{true, false} {
		vc.set(vcRefused())
		st := waitState(t, g, "not ready", isNotReady)
		srv.expect(t, "status", "pause")
		rig.idle(t, st, clk.Now().Add(15*time.Second))
		rig.checkOwned(t, true)
		srv.restart()
		human(t, srv, "pause")
		if atRecheck {
			clk.Advance(15 * time.Second)
			srv.expect(t, "status")
			rig.idle(t, st, clk.Now().Add(15*time.Second)) // watched as someone else's
			rig.checkOwned(t, false)
		}
		vc.set(vcUp(clk.Now()))
		st = waitState(t, g, "ready", isReady)
		if !atRecheck {
			srv.expect(t, "status") // and no resume
		}
		rig.idle(t, st, time.Time{})
		srv.none(t)
		rig.checkOwned(t, false)
		if !srv.isPaused() {
			t.Fatalf("atRecheck=%v: linkgate resumed a pause made after a restart", atRecheck)
		}
		human(t, srv, "resume")
	}
}

// A failing check that does not count neither pauses the daemon nor keeps
// it paused; the daemon wakes by itself when the counted checks have held
// for stable-for (the gate, still not ready, publishes nothing then).
func TestDaemonCountsOnlyItsChecks(t *testing.T) {
	clk := newFakeClock()
	vc := newFakeVCenter(vcUp(time.Now()))
	g, b := carrierGate(t, clk, vc)
	srv := newControlServer(t, daemonSocket(t), false)
	rig := startDaemon(t, g, DaemonOptions{Socket: srv.path, Clock: clk, Checks: []string{CheckLinks}})
	srv.expect(t, "status")

	vc.set(vcRefused())
	st := waitState(t, g, "vcenter failing", checkFails(CheckVCenter, "refused"))
	c, _ := st.Check(CheckLinks)
	rig.idle(t, st, c.Since.Add(daemonStable))
	srv.none(t)

	st = carrierLoss(t, g, b)
	srv.expect(t, "status", "pause")
	rig.idle(t, st, clk.Now().Add(15*time.Second))
	st = carrierBack(t, g, b)
	if !st.ReadyAt.IsZero() {
		t.Fatalf("gate damping with vcenter failing: %v", st)
	}
	at := linksStable(t, clk, st) // the daemon's own timer
	srv.expect(t, "status", "resume")
	rig.idle(t, st, time.Time{})
	if st := g.State(); st.Ready {
		t.Errorf("gate ready with vcenter failing: %v", st)
	}
	if !clk.Now().Equal(at) {
		t.Errorf("resumed at %v, want %v", clk.Now(), at)
	}
}

func TestDaemonFailuresAreCountedAndRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   string // "absent": no socket
		result string
		reason string
	}{
		{"absent", "absent", daemonUnreachable, "no such file or directory"},
		{"slow", modeSlow, daemonTimeout, "i/o timeout"},
		{"error", modeError, daemonError, "the daemon answered error: [Errno 5] Input/output error"},
		{"garbage", modeGarbage, daemonInvalid, "not a JSON answer (28 bytes)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			g, b := carrierGate(t, clk, nil)
			srv := newControlServer(t, daemonSocket(t), false)
			var logs testkit.Buffer
			rig := startDaemon(t, g, DaemonOptions{
				Socket: srv.path, Clock: clk, Logger: daemonLogger(&logs),
				Timeout: 100 * time.Millisecond, Backoff: time.Second, MaxBackoff: 4 * time.Second,
			})
			srv.expect(t, "status")
			rig.idle(t, g.State(), g.State().ReadyAt)
			if tc.mode == "absent" {
				srv.stop()
			} else {
				srv.setMode(tc.mode)
			}

			// The gate changes on time; the daemon fails, counted, and
			// retries at 1s, 2s, 4s, 4s.
			st := carrierLoss(t, g, b)
			wantTries := 0
			for _, delay := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
				if tc.mode != "absent" && (tc.mode != modeSlow || wantTries == 0) {
					srv.expect(t, "status") // a slow server reads the next only once it answers
				}
				wantTries++
				rig.idle(t, st, clk.Now().Add(delay))
				if got := rig.count("status", tc.result); got != uint64(wantTries) {
					t.Fatalf("status %s: %d, want %d", tc.result, got, wantTries)
				}
				if rig.reachable.Load() != (tc.result == daemonError) {
					t.Errorf("daemon_reachable %v after %s", rig.reachable.Load(), tc.result)
				}
				if delay == 2*time.Second {
					// Meanwhile the gate follows the link as ever.
					carrierBack(t, g, b)
					st = carrierLoss(t, g, b)
					rig.idle(t, st, clk.Now().Add(delay))
				}
				clk.Advance(delay)
			}
			if tc.mode != "absent" && tc.mode != modeSlow {
				srv.expect(t, "status")
			}
			rig.idle(t, st, clk.Now().Add(4*time.Second))
			if got := strings.Count(logs.String(), "level=WARN"); got != 1 {
				t.Errorf("%d warnings, want 1 (then debug):\n%s", got, logs.String())
			}
			if !strings.Contains(logs.String(), "level=WARN msg=\"hyper2kvm's daemon control socket failed; retrying with backoff\"") ||
				!strings.Contains(logs.String(), "result="+tc.result) || !strings.Contains(logs.String(), tc.reason) ||
				!strings.Contains(logs.String(), "level=DEBUG msg=\"hyper2kvm's daemon control socket failed again\"") {
				t.Errorf("log:\n%s", logs.String())
			}

			// It works again: one line, and the pause goes out.
			if tc.mode == "absent" {
				srv.start(false)
			} else {
				srv.setMode("") // a slow server now answers the held requests, to no one
			}
			clk.Advance(4 * time.Second)
			expectPause(t, srv)
			rig.idle(t, st, clk.Now().Add(15*time.Second))
			rig.checkOwned(t, true)
			if !rig.reachable.Load() {
				t.Error("daemon_reachable 0 after it answered")
			}
			if !strings.Contains(logs.String(), "level=INFO msg=\"hyper2kvm's daemon control socket works again\" socket="+srv.path+" command=status failures=5") {
				t.Errorf("log:\n%s", logs.String())
			}
		})
	}
}

// expectPause receives commands until a pause: statuses held by a slow
// server are counted by the server as they are finally read.
func expectPause(t *testing.T, srv *controlServer) {
	t.Helper()
	for {
		switch c := recv(t, srv.got, "pause"); c {
		case "pause":
			return
		case "status":
		default:
			t.Fatalf("daemon received %q, want status or pause", c)
		}
	}
}

// A command that hangs holds neither the gate nor the metrics.
func TestDaemonHungCommandBlocksNothing(t *testing.T) {
	clk := newFakeClock()
	g, b := carrierGate(t, clk, nil)
	srv := newControlServer(t, daemonSocket(t), false)
	rig := startDaemon(t, g, DaemonOptions{Socket: srv.path, Clock: clk, Timeout: hang})
	srv.expect(t, "status")
	rig.idle(t, g.State(), g.State().ReadyAt)
	srv.setMode(modeSlow)

	carrierLoss(t, g, b)
	srv.expect(t, "status") // held by the daemon
	st := carrierBack(t, g, b)
	linksStable(t, clk, st)
	waitState(t, g, "ready while the daemon hangs", isReady)
	st = carrierLoss(t, g, b)
	if n := testutil.CollectAndCount(rig); n != 18 {
		t.Errorf("%d series, want 18", n)
	}
	srv.setMode("")
	// The held status is answered, the pause follows; then the daemon
	// sees that the gate opened and closed meanwhile: a new look.
	srv.expect(t, "pause", "status")
	rig.idle(t, st, clk.Now().Add(15*time.Second))
	rig.checkOwned(t, true)
}

func TestDaemonCommandAnswers(t *testing.T) {
	srv := newControlServer(t, daemonSocket(t), false)
	srv.unknown["pause"] = true // an older daemon
	d, err := NewDaemon(&Gate{}, DaemonOptions{Socket: srv.path, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r, result, err := d.send(ctx, "status")
	if result != daemonOK || err != nil || r.Paused == nil || *r.Paused {
		t.Errorf("status: %+v %s %v", r, result, err)
	}
	r, result, err = d.send(ctx, "pause")
	if result != daemonError || err == nil || err.Error() != "the daemon answered error: Unknown command: pause" {
		t.Errorf("unknown command: %+v %s %v", r, result, err)
	}
	srv.expect(t, "status", "pause")

	// A socket nobody listens on: refused.
	stale := filepath.Join(filepath.Dir(srv.path), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	d.opts.Socket = stale
	if _, result, err := d.send(ctx, "status"); result != daemonUnreachable || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("refused: %s %v", result, err)
	}
	// Not a socket at all.
	d.opts.Socket = filepath.Dir(srv.path)
	if _, result, _ := d.send(ctx, "status"); result != daemonUnreachable {
		t.Errorf("a directory: %s", result)
	}

	// Shutting down mid-command: returns at once.
	srv.setMode(modeSlow)
	d.opts.Socket, d.opts.Timeout = srv.path, hang
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, _, err := d.send(cctx, "status"); done <- err }()
	srv.expect(t, "status")
	cancel()
	if err := recv(t, done, "send after cancel"); err == nil {
		t.Error("cancelled command succeeded")
	}
}

func TestNewDaemonValidates(t *testing.T) {
	g, err := NewGate(GateOptions{Snapshots: healthySnapshot(), Checks: []Check{LinksCheck(), VCenterCheck(0)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		o    DaemonOptions
		want string
	}{
		{DaemonOptions{}, "hyper2kvm daemon: no control socket"},
		{DaemonOptions{Socket: "/run/x.sock", Checks: []string{"links", "path"}}, `hyper2kvm daemon: check "path" is not one of the gate's checks (links, vcenter)`},
		{DaemonOptions{Socket: "/" + strings.Repeat("s", 107)}, "hyper2kvm daemon: control socket /" + strings.Repeat("s", 107) + ": longer than the 107 bytes a Unix socket path may have"},
	} {
		if _, err := NewDaemon(g, tc.o); err == nil || err.Error() != tc.want {
			t.Errorf("%+v: %v, want %s", tc.o, err, tc.want)
		}
	}
	d, err := NewDaemon(g, DaemonOptions{Socket: "/srv/out/.daemon/control.sock", Checks: []string{CheckVCenter}})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.excluded) != 1 || !d.excluded[CheckLinks] || d.opts.Timeout != 5*time.Second || d.opts.Recheck != 15*time.Second ||
		d.opts.Backoff != time.Second || d.opts.MaxBackoff != 30*time.Second {
		t.Errorf("excluded %v, options %+v", d.excluded, d.opts)
	}
	if !regexp.MustCompile(`^/srv/out/\.daemon/linkgate-paused-[0-9a-f]{8}\.json$`).MatchString(d.stateFile) {
		t.Errorf("state file %s", d.stateFile)
	}
	if d, _ := NewDaemon(g, DaemonOptions{Socket: "/s"}); d.excluded != nil {
		t.Errorf("no Checks: excluded %v, want none", d.excluded)
	}

	// Every series exists from the start.
	var want strings.Builder
	want.WriteString(`# HELP linkgate_hyper2kvm_commands_total Commands linkgate sent to hyper2kvm's daemon control socket, by command (status, pause, resume) and result: ok, error (the daemon answered error), unreachable (no socket, connection refused), timeout, invalid (not a JSON reply).
# TYPE linkgate_hyper2kvm_commands_total counter
`)
	for _, c := range []string{"pause", "resume", "status"} {
		for _, r := range []string{"error", "invalid", "ok", "timeout", "unreachable"} {
			fmt.Fprintf(&want, "linkgate_hyper2kvm_commands_total{command=%q,result=%q,socket=\"/srv/out/.daemon/control.sock\"} 0\n", c, r)
		}
	}
	want.WriteString(`# HELP linkgate_hyper2kvm_daemon_reachable Whether the last command to hyper2kvm's daemon got the protocol's answer, ok or error (1), or not: no socket, refused, timeout, not JSON (0). 0 before the first command.
# TYPE linkgate_hyper2kvm_daemon_reachable gauge
linkgate_hyper2kvm_daemon_reachable{socket="/srv/out/.daemon/control.sock"} 0
# HELP linkgate_hyper2kvm_paused_by_linkgate Whether linkgate holds a pause of hyper2kvm's daemon that it will resume when the gate opens (1), or none (0).
# TYPE linkgate_hyper2kvm_paused_by_linkgate gauge
linkgate_hyper2kvm_paused_by_linkgate{socket="/srv/out/.daemon/control.sock"} 0
# HELP linkgate_hyper2kvm_state_file_errors_total Failures of the file where linkgate remembers that it paused hyper2kvm's daemon: unreadable or corrupt at start (the pause is then not taken as linkgate's), or not written or removed.
# TYPE linkgate_hyper2kvm_state_file_errors_total counter
linkgate_hyper2kvm_state_file_errors_total{socket="/srv/out/.daemon/control.sock"} 0
`)
	if err := testutil.CollectAndCompare(d, strings.NewReader(want.String())); err != nil {
		t.Error(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(d)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&text, mf); err != nil {
			t.Fatal(err)
		}
	}
	promtooltest.CheckMetrics(t, text.String())
}

// A state file that cannot be read or parsed is logged and counted, and
// the daemon's pause is then not linkgate's: never resumed by it.
func TestDaemonBadStateFile(t *testing.T) {
	for _, tc := range []struct {
		name, content, log string
		readError          bool
	}{
		{"corrupt", `{"socket": "/x", "paus`, "corrupt state file", false},
		{"another socket's", `{"socket": "/elsewhere/control.sock", "paused_at": "2030-01-02T03:04:05Z", "inode": 12, "born_ns": 1}`, "state file is not this socket's", false},
		{"too large", strings.Repeat(" ", boundedfile.Hyper2kvmStateLimit+1), "cannot read the state file", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vc := newFakeVCenter(vcRefused())
			clk := newFakeClock()
			g := vcenterGate(t, GateOptions{Clock: clk}, vc)
			waitState(t, g, "not ready", isNotReady)
			srv := newControlServer(t, daemonSocket(t), true)
			d, err := NewDaemon(g, DaemonOptions{Socket: srv.path})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(d.stateFile, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			before := boundedfile.Hyper2kvmState.Failures()
			var logs testkit.Buffer
			rig := startDaemon(t, g, DaemonOptions{Socket: srv.path, Clock: clk, Logger: daemonLogger(&logs)})
			srv.expect(t, "status")
			rig.idle(t, g.State(), clk.Now().Add(15*time.Second)) // watched, not owned
			if rig.paused.Load() || rig.stateErrors.Load() != 1 || !strings.Contains(logs.String(), "level=WARN msg=\""+tc.log) {
				t.Errorf("paused_by_linkgate %v, state errors %d, log:\n%s", rig.paused.Load(), rig.stateErrors.Load(), logs.String())
			}
			if got := boundedfile.Hyper2kvmState.Failures() - before; (got == 1) != tc.readError {
				t.Errorf("file read errors counted: %d", got)
			}
			vc.set(vcUp(time.Now()))
			st := waitState(t, g, "ready", isReady)
			rig.idle(t, st, time.Time{})
			srv.none(t)
			if !srv.isPaused() {
				t.Error("a pause not known to be linkgate's was resumed")
			}
		})
	}
}

// The state file is replaced atomically: mode 0600, no temporary file
// left, and the directory is created if needed.
func TestDaemonStateFileWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "linkgate-paused-00000000.json")
	p := &daemonPause{Socket: "/s", PausedAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Inode: 7, Born: 8}
	for range 2 {
		if err := writeFileAtomic(path, p); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != `{"socket":"/s","paused_at":"2030-01-02T03:04:05Z","inode":7,"born_ns":8}`+"\n" {
		t.Errorf("%q %v", b, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if fi, _ := os.Stat(path); len(entries) != 1 || fi.Mode().Perm() != 0o600 {
		t.Errorf("entries %v, mode %v", entries, fi.Mode())
	}
	if err := writeFileAtomic(filepath.Join(path, "under-a-file"), p); err == nil {
		t.Error("write under a regular file succeeded")
	}
}

// TestDaemonPauseReplyLost: a pause whose reply never comes back may or
// may not have taken. linkgate records it, unconfirmed, before sending,
// and the next status decides: paused on that socket, the pause is
// linkgate's (and resumed when the gate opens); running, it never took,
// and is sent again, not taken for a human's resume. Found in review: a
// pause carried out with its reply lost was taken for someone else's and
// never resumed.
func TestDaemonPauseReplyLost(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		after []string // the commands of the recheck after the failed pause
	}{
		{modeLosePauseReply, []string{"status"}},
		{modeDropPause, []string{"status", "pause"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			clk := newFakeClock()
			g, b := carrierGate(t, clk, nil)
			srv := newControlServer(t, daemonSocket(t), false)
			rig := startDaemon(t, g, DaemonOptions{Socket: srv.path, Clock: clk})
			srv.expect(t, "status")
			srv.setMode(tc.mode)
			st := carrierLoss(t, g, b)
			srv.expect(t, "status", "pause")
			rig.idle(t, st, clk.Now().Add(time.Second)) // a failed command: retried after Backoff
			if p := rig.readPause(t); p == nil || !p.Unconfirmed || !rig.paused.Load() {
				t.Fatalf("after the lost reply: state file %+v, paused_by_linkgate %v; want an unconfirmed pause", p, rig.paused.Load())
			}
			srv.setMode("")
			clk.Advance(time.Second)
			srv.expect(t, tc.after...)
			rig.idle(t, st, clk.Now().Add(15*time.Second))
			rig.checkOwned(t, true)
			if !srv.isPaused() {
				t.Fatal("the daemon runs through the outage")
			}
			st = carrierBack(t, g, b)
			linksStable(t, clk, st)
			srv.expect(t, "status", "resume")
			rig.idle(t, g.State(), time.Time{})
			rig.checkOwned(t, false)
			if srv.isPaused() {
				t.Fatal("not resumed: linkgate's pause was taken for someone else's")
			}
		})
	}
}
