package sidecar

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/linkgate/linkgate/internal/clock"
	"golang.org/x/sys/unix"
)

// DaemonOptions configure Daemon.
type DaemonOptions struct {
	// Socket is hyper2kvm's control socket,
	// {output_dir}/.daemon/control.sock (required).
	Socket string
	// StateDir is where linkgate remembers that it paused the daemon, so
	// that a linkgate restarted during an outage still resumes it
	// afterwards ("": the socket's directory).
	StateDir string
	// Checks are the gate's checks that count for pausing (nil or empty:
	// all of them). A failing check not listed neither pauses the daemon
	// nor keeps it paused.
	Checks []string
	// Timeout bounds one command: connect, write and read (default 5s).
	Timeout time.Duration
	// Recheck: while linkgate wants the daemon paused and it is paused,
	// `status` is asked this often, to catch a daemon restart (which
	// comes back unpaused) or a human's resume (default 15s).
	Recheck time.Duration
	// Backoff is the first retry delay after a failed command, doubling
	// up to MaxBackoff (defaults 1s and 30s).
	Backoff, MaxBackoff time.Duration
	Logger              *slog.Logger
	// Clock times the rechecks, the retries and the damping.
	Clock clock.Clock
}

// Commands of hyper2kvm's control socket that linkgate sends.
const (
	cmdStatus = "status"
	cmdPause  = "pause"
	cmdResume = "resume"
)

// Results for linkgate_hyper2kvm_commands_total.
const (
	daemonOK          = "ok"          // the daemon answered {"status":"ok"}
	daemonError       = "error"       // the daemon answered {"status":"error"}
	daemonUnreachable = "unreachable" // no socket, connection refused or reset
	daemonTimeout     = "timeout"     // no answer within Timeout
	daemonInvalid     = "invalid"     // an answer that is not the protocol's JSON
)

var (
	daemonCommands = []string{cmdStatus, cmdPause, cmdResume}
	daemonResults  = []string{daemonOK, daemonError, daemonUnreachable, daemonTimeout, daemonInvalid}
)

// maxDaemonReply bounds a reply: the daemon's are a few dozen bytes.
const maxDaemonReply = 64 << 10

// Daemon pauses hyper2kvm's daemon through its control socket while the
// gate is closed and resumes it when the gate opens, without ever taking
// over a human's decision.
//
// "Open" is the gate's verdict over the counted checks (Checks), judged by
// Gate.decide as /ready?exclude= judges it: a failing counted check closes
// at once; opening waits until every counted check has held for
// stable-for. While they hold but the damping runs, Daemon keeps what it
// wanted before (so a linkgate start, whose first verdict is damped, never
// pauses a daemon).
//
// Ownership: linkgate only resumes a pause it made. When the gate closes
// it asks `status`; a daemon paused already is someone else's: linkgate
// leaves it and never resumes it (it pauses it only if it restarts during
// the outage, which drops that pause). Otherwise it sends `pause` and
// records the pause in a state file, with the socket's identity (inode and
// birth time: a restarted daemon binds a new socket and comes back
// unpaused). While the gate stays closed it asks `status` every Recheck: found
// running with a new socket, the daemon restarted and is paused again;
// found running with the same socket, a human resumed it, and linkgate
// forgets its pause and leaves the daemon alone until the gate has opened
// and closed again. When the gate opens it resumes its own pause only,
// and only if the socket is still the one it paused (after a restart the
// pause is someone else's).
//
// The state file lets a linkgate restarted during an outage resume the
// daemon afterwards. A failed command is counted, logged once (WARN, then
// DEBUG until a command works again, then INFO) and retried with
// exponential backoff. Run's goroutine does all socket and file I/O: the
// gate, the metrics and other notifiers never wait on it.
type Daemon struct {
	gate      *Gate
	opts      DaemonOptions
	log       *slog.Logger
	clock     clock.Clock
	excluded  map[string]bool // gate checks that do not count; nil: all count
	stateFile string
	running   atomic.Bool

	commands    map[[2]string]*atomic.Uint64 // {command, result}; read-only after NewDaemon
	paused      atomic.Bool                  // linkgate owns a pause
	reachable   atomic.Bool
	stateErrors atomic.Uint64

	// onIdle, if set, is called each time Run waits, with the state it
	// acted on and when it wakes by itself (zero: on a gate change only)
	// (tests).
	onIdle func(st *State, wake time.Time)
}

// NewDaemon validates o and returns a Daemon following g; start it with Run.
func NewDaemon(g *Gate, o DaemonOptions) (*Daemon, error) {
	if o.Socket == "" {
		return nil, errors.New("hyper2kvm daemon: no control socket")
	}
	o.Socket = filepath.Clean(o.Socket)
	if n := len(syscall.RawSockaddrUnix{}.Path); len(o.Socket) >= n {
		return nil, fmt.Errorf("hyper2kvm daemon: control socket %s: longer than the %d bytes a Unix socket path may have", o.Socket, n-1)
	}
	if o.StateDir == "" {
		o.StateDir = filepath.Dir(o.Socket)
	}
	names := g.CheckNames()
	d := &Daemon{gate: g, opts: o, log: o.Logger, clock: clock.Or(o.Clock), commands: map[[2]string]*atomic.Uint64{}}
	if len(o.Checks) > 0 {
		d.excluded = map[string]bool{}
		for _, n := range names {
			d.excluded[n] = true
		}
		for _, c := range o.Checks {
			if !slices.Contains(names, c) {
				return nil, fmt.Errorf("hyper2kvm daemon: check %q is not one of the gate's checks (%s)", c, strings.Join(names, ", "))
			}
			delete(d.excluded, c)
		}
	}
	if d.opts.Timeout <= 0 {
		d.opts.Timeout = 5 * time.Second
	}
	if d.opts.Recheck <= 0 {
		d.opts.Recheck = 15 * time.Second
	}
	if d.opts.Backoff <= 0 {
		d.opts.Backoff = time.Second
	}
	if d.opts.MaxBackoff <= 0 {
		d.opts.MaxBackoff = 30 * time.Second
	}
	d.opts.MaxBackoff = max(d.opts.MaxBackoff, d.opts.Backoff)
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.log = d.log.With("socket", o.Socket)
	sum := sha256.Sum256([]byte(o.Socket))
	d.stateFile = filepath.Join(o.StateDir, "linkgate-paused-"+hex.EncodeToString(sum[:])[:8]+".json")
	for _, c := range daemonCommands {
		for _, r := range daemonResults {
			d.commands[[2]string{c, r}] = new(atomic.Uint64)
		}
	}
	return d, nil
}

// daemonWant is what the gate asks of the daemon.
type daemonWant int

const (
	wantNothing daemonWant = iota // not evaluated yet, or damping since the start
	wantRunning
	wantPaused
)

// Within one closed episode (wantPaused), what linkgate knows of the pause.
type daemonPhase int

const (
	phaseLook    daemonPhase = iota // not asked yet (or linkgate owns the pause: see own)
	phaseForeign                    // paused by someone else: watched, never resumed
	phaseLeft                       // a human resumed it: left alone until the next episode
)

// daemonPause is linkgate's pause, as the state file holds it.
type daemonPause struct {
	Socket   string    `json:"socket"`
	PausedAt time.Time `json:"paused_at"`
	Inode    uint64    `json:"inode"`
	Born     int64     `json:"born_ns"` // when the socket was bound, Unix nanoseconds: see socketID
	// Unconfirmed: pause was sent but its reply did not come back (a
	// timeout, linkgate stopping, the socket changing under it). The
	// daemon may or may not have paused: the next status decides. Found
	// paused on that socket, the pause is linkgate's; found running, it
	// never took, and is sent again (not taken for a human's resume).
	Unconfirmed bool `json:"unconfirmed,omitempty"`
}

func (p *daemonPause) id() socketID { return socketID{p.Inode, p.Born} }

// socketID tells one bound socket from the next at the same path: a
// restarted daemon binds a new one, and comes back unpaused. The inode
// alone does not tell them apart: ext4 gives the new socket the inode the
// old one just freed. So the socket's birth time goes with it (statx
// btime; the ctime where the file system keeps none, which a chmod of
// the socket also changes).
type socketID struct {
	ino  uint64
	born int64
}

func statSocket(path string) (socketID, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_INO|unix.STATX_BTIME|unix.STATX_CTIME, &st); err != nil {
		return socketID{}, &fs.PathError{Op: "statx", Path: path, Err: err}
	}
	t := st.Ctime
	if st.Mask&unix.STATX_BTIME != 0 {
		t = st.Btime
	}
	return socketID{st.Ino, t.Sec*1e9 + int64(t.Nsec)}, nil
}

// daemonLoop is Run's state, touched by Run's goroutine only.
type daemonLoop struct {
	d         *Daemon
	want      daemonWant
	phase     daemonPhase
	own       *daemonPause // linkgate's pause; nil: none
	foreign   socketID     // the socket someone else's pause was seen on
	contacted bool         // a command has worked since Run started
	due       time.Time    // when the pending command is due (zero: now)
	delay     time.Duration
	failures  int // consecutive failed commands
	st        *State
}

// Run follows the gate and drives the daemon until ctx ends; it returns
// nil then.
func (d *Daemon) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("hyper2kvm daemon: already running")
	}
	defer d.running.Store(false)
	l := &daemonLoop{d: d, st: d.gate.State()}
	l.setOwn(d.loadState(), false)
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		// Keep only the newest state; note an opening that came and went
		// since the last look (exact without exclusions; with them an
		// opening shorter than a command can be missed).
		sawOpen := false
		for n := l.st.Next(); n != nil; n = n.Next() {
			l.st = n
			sawOpen = sawOpen || n.Ready
		}
		now := d.clock.Now()
		readyAt := l.update(sawOpen, now)
		if l.pending() && !now.Before(l.due) {
			l.act(ctx)
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		wake := readyAt
		if l.pending() && (wake.IsZero() || l.due.Before(wake)) {
			wake = l.due
		}
		if timer != nil {
			timer.Stop()
			timer = nil
		}
		var fire <-chan time.Time
		if !wake.IsZero() {
			timer = d.clock.NewTimer(max(wake.Sub(now), 0))
			fire = timer.C()
		}
		if d.onIdle != nil {
			d.onIdle(l.st, wake)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-l.st.Changed():
		case <-fire:
		}
	}
}

// update judges the newest state and returns when the damping of the
// counted checks ends, if it runs.
func (l *daemonLoop) update(sawOpen bool, now time.Time) time.Time {
	if l.st.Version == 0 {
		return time.Time{}
	}
	if sawOpen {
		l.setWant(wantRunning) // the episode ended, even if another began
	}
	v := l.d.gate.judge(l.st, "", l.d.excluded, now)
	switch {
	case v.ready:
		l.setWant(wantRunning)
	case v.readyAt.IsZero():
		l.setWant(wantPaused)
	default:
		return v.readyAt // damping: keep wanting what was wanted
	}
	return time.Time{}
}

func (l *daemonLoop) setWant(w daemonWant) {
	if l.want == w {
		return
	}
	l.want, l.phase, l.due = w, phaseLook, time.Time{}
}

// pending reports whether a command is to be sent (at l.due).
func (l *daemonLoop) pending() bool {
	switch l.want {
	case wantPaused:
		if l.own != nil || l.phase != phaseLeft {
			return true
		}
	case wantRunning:
		if l.own != nil {
			return true
		}
	}
	return !l.contacted // one status at start: reachability, and a wrong path shows at once
}

// act sends the pending command(s) and schedules the next.
func (l *daemonLoop) act(ctx context.Context) {
	var ok bool
	switch {
	case l.want == wantPaused && l.own != nil:
		ok = l.recheckOwn(ctx)
	case l.want == wantPaused && l.phase == phaseForeign:
		ok = l.recheckForeign(ctx)
	case l.want == wantPaused && l.phase == phaseLook:
		ok = l.look(ctx)
	case l.want == wantRunning && l.own != nil:
		ok = l.release(ctx)
	default:
		_, ok = l.do(ctx, cmdStatus)
	}
	now := l.d.clock.Now()
	if ok {
		l.delay = 0
		l.due = now.Add(l.d.opts.Recheck)
		return
	}
	if l.delay == 0 {
		l.delay = l.d.opts.Backoff
	} else {
		l.delay = min(2*l.delay, l.d.opts.MaxBackoff)
	}
	l.due = now.Add(l.delay)
}

// look starts an episode: pause the daemon unless someone else has.
func (l *daemonLoop) look(ctx context.Context) bool {
	r, id, ok := l.statusAndIdentity(ctx)
	if !ok {
		return false
	}
	if *r.Paused {
		l.phase, l.foreign = phaseForeign, id
		l.d.log.Info("hyper2kvm's daemon is already paused, not by linkgate; leaving the pause to whoever made it",
			"failing", l.failing())
		return true
	}
	return l.pause(ctx, nil, "paused hyper2kvm's daemon: the gate is closed")
}

// pause sends pause and owns it. prev is the pause it renews, if any.
//
// The pause is recorded, unconfirmed, before it is sent: a reply lost
// (a timeout, linkgate stopping mid-command) must not leave a pause
// that linkgate made but would take for someone else's, and never
// resume. It is confirmed when the reply comes back and the socket is
// the one it was sent to; else the next status decides (recheckOwn).
func (l *daemonLoop) pause(ctx context.Context, prev *daemonPause, msg string) bool {
	before, ok := l.identity()
	if !ok {
		return false
	}
	p := &daemonPause{Socket: l.d.opts.Socket, PausedAt: l.d.clock.Now().UTC().Truncate(time.Second),
		Inode: before.ino, Born: before.born, Unconfirmed: true}
	if prev != nil {
		p.PausedAt = prev.PausedAt
	}
	l.setOwn(p, true)
	_, sent := l.do(ctx, cmdPause)
	after, ok := l.identity()
	if !sent || !ok || after != before {
		if ok && after != before {
			// A restart in between: the pause went to one of the two.
			// Watch the socket that is there now.
			confirmedLater := *p
			confirmedLater.Inode, confirmedLater.Born = after.ino, after.born
			l.setOwn(&confirmedLater, true)
		}
		return false
	}
	confirmed := *p
	confirmed.Unconfirmed = false
	l.setOwn(&confirmed, true)
	l.d.log.Info(msg, "failing", l.failing())
	return true
}

// recheckOwn: while the gate is closed, is linkgate's pause still there?
func (l *daemonLoop) recheckOwn(ctx context.Context) bool {
	r, id, ok := l.statusAndIdentity(ctx)
	if !ok {
		return false
	}
	same := id == l.own.id()
	if l.own.Unconfirmed {
		switch {
		case *r.Paused && same:
			confirmed := *l.own
			confirmed.Unconfirmed = false
			l.setOwn(&confirmed, true)
			l.d.log.Info("paused hyper2kvm's daemon: the gate is closed (the pause's reply had been lost)", "failing", l.failing())
			return true
		case !*r.Paused:
			return l.pause(ctx, l.own, "paused hyper2kvm's daemon: the gate is closed (the pause sent before had not taken)")
		}
		// Paused, on another socket: a restart, then someone's pause.
	}
	switch {
	case *r.Paused && same:
		return true
	case *r.Paused:
		// A restart drops every pause: this one is someone else's.
		l.setOwn(nil, true)
		l.phase, l.foreign = phaseForeign, id
		l.d.log.Info("hyper2kvm's daemon restarted and was paused again, not by linkgate; leaving that pause to whoever made it")
		return true
	case same:
		l.setOwn(nil, true)
		l.phase = phaseLeft
		l.d.log.Warn("hyper2kvm's daemon was resumed by someone else while the gate is closed; leaving it running until the gate has opened and closed again",
			"failing", l.failing())
		return true
	}
	return l.pause(ctx, l.own, "hyper2kvm's daemon restarted while the gate is closed; paused it again")
}

// recheckForeign: someone else's pause, watched for a restart.
func (l *daemonLoop) recheckForeign(ctx context.Context) bool {
	r, id, ok := l.statusAndIdentity(ctx)
	if !ok {
		return false
	}
	same := id == l.foreign
	switch {
	case *r.Paused:
		l.foreign = id
		return true
	case same:
		l.phase = phaseLeft
		l.d.log.Info("hyper2kvm's daemon was resumed by whoever paused it; leaving it running until the gate has opened and closed again")
		return true
	}
	return l.pause(ctx, nil, "hyper2kvm's daemon restarted while the gate is closed (the pause it had is gone); paused it")
}

// release resumes linkgate's own pause now that the gate is open.
func (l *daemonLoop) release(ctx context.Context) bool {
	r, id, ok := l.statusAndIdentity(ctx)
	if !ok {
		return false
	}
	switch {
	case !*r.Paused:
		l.d.log.Info("hyper2kvm's daemon is running already; linkgate's pause is over")
	case id != l.own.id():
		l.d.log.Info("hyper2kvm's daemon restarted since linkgate paused it and is paused again, not by linkgate; leaving it paused")
	default:
		if _, ok := l.do(ctx, cmdResume); !ok {
			return false
		}
		l.d.log.Info("resumed hyper2kvm's daemon: the gate is open", "paused_at", l.own.PausedAt)
	}
	l.setOwn(nil, true)
	return true
}

// statusAndIdentity asks status and says which daemon answered: the
// socket's identity, read before and after the command. ok is false when
// either failed or the two differ (a restart in between: which one
// answered?), to be retried like a failed command.
func (l *daemonLoop) statusAndIdentity(ctx context.Context) (daemonReply, socketID, bool) {
	before, err := statSocket(l.d.opts.Socket) // missing: the command says how
	r, ok := l.do(ctx, cmdStatus)
	if !ok {
		return r, socketID{}, false
	}
	after, ok := l.identity()
	if ok && (err != nil || after != before) {
		l.d.log.Debug("hyper2kvm's daemon control socket changed as it answered (a restart); asking again")
		return r, socketID{}, false
	}
	return r, after, ok
}

// identity is the socket's. A socket gone (the daemon stopping) decides
// nothing: the round is retried like a failed command.
func (l *daemonLoop) identity() (socketID, bool) {
	id, err := statSocket(l.d.opts.Socket)
	if err != nil {
		l.d.log.Debug("hyper2kvm's daemon control socket vanished as it answered; asking again", "err", err)
		return socketID{}, false
	}
	return id, true
}

// setOwn records (p) or forgets (nil) linkgate's pause, in the state file
// too when persist is set.
func (l *daemonLoop) setOwn(p *daemonPause, persist bool) {
	l.own = p
	l.d.paused.Store(p != nil)
	if !persist {
		return
	}
	if p == nil {
		if err := os.Remove(l.d.stateFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			l.d.stateFileError("cannot remove the state file; a linkgate restart would take the daemon's next pause for its own", err)
		}
		return
	}
	if err := writeFileAtomic(l.d.stateFile, p); err != nil {
		l.d.stateFileError("cannot record linkgate's pause in the state file; a linkgate restart before the gate opens would leave the daemon paused", err)
	}
}

// failing lists the counted checks that fail, for the log.
func (l *daemonLoop) failing() []string {
	var out []string
	for _, c := range l.st.Checks {
		if !c.OK && !l.d.excluded[c.Name] {
			out = append(out, c.Name+": "+c.Reason)
		}
	}
	return out
}

// do sends one command, counts it and logs a failure once per streak.
func (l *daemonLoop) do(ctx context.Context, command string) (daemonReply, bool) {
	r, result, err := l.d.send(ctx, command)
	if ctx.Err() != nil {
		return r, false // shutting down: not the daemon's failure
	}
	l.d.commands[[2]string{command, result}].Add(1)
	l.d.reachable.Store(result == daemonOK || result == daemonError)
	if err != nil {
		l.failures++
		if l.failures == 1 {
			l.d.log.Warn("hyper2kvm's daemon control socket failed; retrying with backoff", "command", command, "result", result, "err", err)
		} else {
			l.d.log.Debug("hyper2kvm's daemon control socket failed again", "command", command, "result", result, "err", err, "failures", l.failures)
		}
		return r, false
	}
	if l.failures > 0 {
		l.d.log.Info("hyper2kvm's daemon control socket works again", "command", command, "failures", l.failures)
		l.failures = 0
	}
	l.contacted = true
	return r, true
}

// daemonReply is the part of the daemon's answers linkgate reads.
type daemonReply struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Paused  *bool  `json:"paused"` // status only
}

// send runs one command as the protocol has it: connect, one JSON object
// in one write, read the one JSON reply until the daemon closes.
func (d *Daemon) send(ctx context.Context, command string) (daemonReply, string, error) {
	var r daemonReply
	cctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	var dialer net.Dialer
	conn, err := dialer.DialContext(cctx, "unix", d.opts.Socket)
	if err != nil {
		return r, failResult(err), err
	}
	defer conn.Close()
	deadline, _ := cctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req, _ := json.Marshal(map[string]string{"command": command})
	if _, err := conn.Write(req); err != nil {
		return r, failResult(err), err
	}
	b, err := io.ReadAll(io.LimitReader(conn, maxDaemonReply+1))
	if err != nil {
		return r, failResult(err), err
	}
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		return r, daemonInvalid, errors.New("the daemon closed the connection without an answer")
	case len(b) > maxDaemonReply:
		return r, daemonInvalid, fmt.Errorf("an answer over %s", boundedfile.Size(maxDaemonReply))
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, daemonInvalid, fmt.Errorf("not a JSON answer (%d bytes)", len(b))
	}
	switch r.Status {
	case "ok":
		if command == cmdStatus && r.Paused == nil {
			return r, daemonInvalid, errors.New(`a status answer without "paused"`)
		}
		return r, daemonOK, nil
	case "error":
		return r, daemonError, fmt.Errorf("the daemon answered error: %s", truncate(oneLine(r.Message), 200))
	}
	return r, daemonInvalid, fmt.Errorf("an answer with status %q", truncate(oneLine(r.Status), 40))
}

// failResult classifies a connection failure.
func failResult(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return daemonTimeout
	}
	return daemonUnreachable
}

// loadState reads linkgate's pause from a previous run, if any.
func (d *Daemon) loadState() *daemonPause {
	if _, err := os.Stat(d.stateFile); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	b, err := boundedfile.Read(d.stateFile, boundedfile.Hyper2kvmState)
	if err != nil {
		d.stateFileError("cannot read the state file; not taking the daemon's pause as linkgate's", err)
		return nil
	}
	var p daemonPause
	if err := json.Unmarshal(b, &p); err != nil {
		d.stateFileError("corrupt state file; not taking the daemon's pause as linkgate's", err)
		return nil
	}
	if p.Socket != d.opts.Socket || p.Inode == 0 {
		d.stateFileError("state file is not this socket's; not taking the daemon's pause as linkgate's",
			fmt.Errorf("it names socket %q, inode %d", truncate(p.Socket, 200), p.Inode))
		return nil
	}
	d.log.Info("linkgate paused hyper2kvm's daemon before it restarted; it resumes it when the gate opens", "paused_at", p.PausedAt)
	return &p
}

func (d *Daemon) stateFileError(msg string, err error) {
	d.stateErrors.Add(1)
	d.log.Warn(msg, "file", d.stateFile, "err", err)
}

// writeFileAtomic writes v as JSON to path, mode 0600: a temporary file
// in the same directory, synced, renamed over path.
func writeFileAtomic(path string, v any) (err error) {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".linkgate-paused-*.tmp") // mode 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(append(b, '\n')); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	if dirf, derr := os.Open(dir); derr == nil { // the rename itself survives a crash
		_ = dirf.Sync()
		dirf.Close()
	}
	return nil
}
