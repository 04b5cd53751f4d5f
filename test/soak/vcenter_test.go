package soak

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// vcenter is govmomi's vCenter simulator behind an HTTPS server the test
// owns, so that it can be stopped, restarted on the same port (a fresh
// inventory with every session gone, as a real restart), and slowed down;
// and so that every Login is seen as vCenter's SSO would see it.
type vcenter struct {
	t        *testing.T
	user     string
	password string // the one SSO accepts
	addr     string // 127.0.0.1:port, the same for every restart
	caFile   string
	cert     tls.Certificate

	delay atomic.Int64 // before serving each request, in nanoseconds

	mu       sync.Mutex
	server   *http.Server
	model    *simulator.Model
	inflight *handlers
	stopping chan struct{} // closed when the running instance stops
	logins   []loginCall
	requests int
	starts   int
}

// loginCall is one Login request and what became of it.
type loginCall struct {
	at      time.Time // when it was answered or dropped
	outcome string    // loginOK, loginFailed, loginDropped
}

const (
	loginOK      = "ok"
	loginFailed  = "failed"  // answered with a fault: SSO counts it
	loginDropped = "dropped" // the client gave up while the request was delayed: never reached SSO
)

// loginRequest matches the SOAP body of SessionManager.Login (not
// LoginByToken or LoginExtension...).
var loginRequest = regexp.MustCompile(`<(?:\w+:)?Login[\s>]`)

func startVCenter(t *testing.T, user, password string) *vcenter {
	t.Helper()
	v := &vcenter{t: t, user: user, password: password, addr: "127.0.0.1:0"}
	if err := v.start(); err != nil {
		t.Fatal(err)
	}
	v.caFile = filepath.Join(t.TempDir(), "vcenter-ca.pem")
	cert := v.cert.Leaf
	if err := os.WriteFile(v.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.stop)
	return v
}

func (v *vcenter) url() string { return "https://" + v.addr + "/sdk" }

// start brings up a fresh simulator on v.addr. It is a no-op when one runs.
func (v *vcenter) start() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.server != nil {
		return nil
	}
	m := simulator.VPX()
	m.ClusterHost, m.Machine = 1, 0 // the probe needs no inventory
	if err := m.Create(); err != nil {
		return err
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(v.user, "checked by ValidLogin")}
	m.Service.Context.Map.SessionManager().ValidLogin = func(req *types.Login) bool {
		return req.UserName == v.user && req.Password == v.password
	}
	// NewServer registers the SDK handlers and starts a server of its
	// own on another port; that one is closed at once and the mux is
	// served below, wrapped, on v.addr.
	inner := m.Service.NewServer()
	if v.cert.Leaf == nil {
		v.cert = inner.TLS.Certificates[0]
		v.cert.Leaf = inner.Certificate()
	}
	inner.Close()
	if v.addr == "127.0.0.1:0" {
		v.addr = inner.Listener.Addr().String() // free again: the first start keeps it
	}
	m.Service.Context.Map.SessionManager().ServiceHostName = v.addr

	ln, err := listenRetry(v.addr)
	if err != nil {
		m.Remove()
		return err
	}
	stopping := make(chan struct{})
	inflight := newHandlers()
	srv := &http.Server{
		Handler:           v.wrap(m.Service.ServeMux, stopping, inflight),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{v.cert}, NextProtos: []string{"http/1.1"}},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // TLS errors of connections cut by a stop
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	v.server, v.model, v.stopping, v.inflight = srv, m, stopping, inflight
	v.starts++
	return nil
}

// listenRetry listens on addr, retrying briefly: the port was just freed.
func listenRetry(addr string) (net.Listener, error) {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

// stop closes the listener and every connection; afterwards connections
// are refused. The inventory and its sessions are gone.
func (v *vcenter) stop() {
	v.mu.Lock()
	srv, m, stopping, inflight := v.server, v.model, v.stopping, v.inflight
	v.server, v.model = nil, nil
	v.mu.Unlock()
	if srv == nil {
		return
	}
	close(stopping)
	_ = srv.Close()
	inflight.closeAndWait()
	m.Remove()
}

func (v *vcenter) restart() error {
	v.stop()
	return v.start()
}

func (v *vcenter) running() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.server != nil
}

func (v *vcenter) setDelay(d time.Duration) { v.delay.Store(int64(d)) }

// wrap delays requests and records Logins. A delayed request whose client
// went away meanwhile is dropped: it never reaches the simulator, as a
// request lost in a slow network never reaches SSO.
func (v *vcenter) wrap(h http.Handler, stopping <-chan struct{}, inflight *handlers) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !inflight.enter() {
			return // the instance is stopping: its model is about to go
		}
		defer inflight.leave()
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		login := loginRequest.Match(body)
		if d := time.Duration(v.delay.Load()); d > 0 {
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
			case <-r.Context().Done():
			case <-stopping:
			}
			timer.Stop()
			if r.Context().Err() != nil || isClosed(stopping) {
				if login {
					v.record(loginDropped)
				}
				return
			}
		}
		if !login {
			v.mu.Lock()
			v.requests++
			v.mu.Unlock()
			h.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusOK {
			v.record(loginOK)
		} else {
			v.record(loginFailed)
		}
	})
}

// handlers counts the handlers running in one simulator instance, so
// that stop can wait for them before removing the model under them.
// Unlike a WaitGroup it refuses newcomers once closed.
type handlers struct {
	mu     sync.Mutex
	idle   *sync.Cond
	n      int
	closed bool
}

func newHandlers() *handlers {
	h := &handlers{}
	h.idle = sync.NewCond(&h.mu)
	return h
}

func (h *handlers) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.n++
	return true
}

func (h *handlers) leave() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n--
	if h.n == 0 {
		h.idle.Broadcast()
	}
}

func (h *handlers) closeAndWait() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for h.n > 0 {
		h.idle.Wait()
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (v *vcenter) record(outcome string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.requests++
	v.logins = append(v.logins, loginCall{at: time.Now(), outcome: outcome})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// served returns how many requests the simulator answered, plus the
// Logins dropped while delayed.
func (v *vcenter) served() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.requests
}

// loginTimes returns when Logins with the outcome were answered.
func (v *vcenter) loginTimes(outcome string) []time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []time.Time
	for _, l := range v.logins {
		if l.outcome == outcome {
			out = append(out, l.at)
		}
	}
	return out
}

// sessions counts the sessions the running simulator holds (0 when it is
// stopped), through the same per-session view of the SessionManager that
// answers a property read of sessionList.
func (v *vcenter) sessions() (int, error) {
	v.mu.Lock()
	m := v.model
	v.mu.Unlock()
	if m == nil {
		return 0, nil
	}
	reg := m.Service.Context.Map
	view := &simulator.Session{Registry: simulator.NewRegistry(), Map: reg}
	sm, ok := view.Get(reg.SessionManager().Reference()).(*simulator.SessionManager)
	if !ok {
		return 0, errors.New("simulator: no SessionManager view")
	}
	return len(sm.SessionList), nil
}

// mostInWindow returns the largest number of times within any window
// [t, t+w).
func mostInWindow(times []time.Time, w time.Duration) int {
	most := 0
	for i, from := range times {
		n := 0
		for _, at := range times[i:] {
			if at.Sub(from) < w {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}
