// Package vcsim runs govmomi's vCenter simulator in-process over HTTPS on
// loopback with its own credentials and CA file: the vCenter of
// `linkgate demo` and of the tests that need one.
package vcsim

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// Sim is a simulator: running from Start, down after Stop, up again
// (fresh, on the same address) after Restart.
type Sim struct {
	URL      string // https://127.0.0.1:PORT/sdk, without credentials
	User     string
	Password string
	CAFile   string // the simulator's certificate, to verify it
	dir      string
	adjust   func(*simulator.Model)
	addr     string          // host:port, kept across Stop and Restart
	cert     tls.Certificate // the server's, kept across restarts

	mu     sync.Mutex
	model  *simulator.Model
	server *simulator.Server
	// The sessions that made calls, by key (Logout forgets one), and
	// the property collectors each waited on: ExpireSessions and Stop
	// end them.
	sessions map[string]*simSession
	// expired are the sessions ExpireSessions ended: a call of theirs
	// that raced with it is refused as it would have been after.
	expired map[string]bool
	// hold, when not nil, holds every Login until it is closed
	// (HoldLogins).
	hold chan struct{}
}

type simSession struct {
	user       string
	collectors map[*simulator.PropertyCollector]bool
}

// Start runs a simulator with a generated password for the user
// linkgate-demo@vsphere.local.
func Start() (*Sim, error) {
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	return StartWith("linkgate-demo@vsphere.local", hex.EncodeToString(secret))
}

// StartWith runs a simulator that accepts only user and password.
func StartWith(user, password string) (*Sim, error) {
	return start(user, password, nil)
}

// StartModel runs a simulator as Start does, with the VPX model changed
// by adjust (more hosts, say) before it is created.
func StartModel(adjust func(*simulator.Model)) (*Sim, error) {
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	return start("linkgate-demo@vsphere.local", hex.EncodeToString(secret), adjust)
}

func start(user, password string, adjust func(*simulator.Model)) (*Sim, error) {
	s := &Sim{User: user, Password: password, adjust: adjust, addr: "127.0.0.1:0"}
	if err := s.serve(nil); err != nil {
		return nil, err
	}
	s.addr = s.server.URL.Host
	s.cert = s.server.TLS.Certificates[0]
	s.URL = "https://" + s.addr + "/sdk"
	dir, err := os.MkdirTemp("", "linkgate-vcsim-")
	if err != nil {
		s.Close()
		return nil, err
	}
	s.dir = dir
	s.CAFile = filepath.Join(dir, "ca.pem")
	cert := s.server.Certificate()
	if err := os.WriteFile(s.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// serve creates a fresh model and serves it at s.addr, with cert when
// given (else the simulator's own).
func (s *Sim) serve(cert *tls.Certificate) (err error) {
	m := simulator.VPX()
	m.ClusterHost, m.Machine = 1, 1 // one VM per host and cluster: /ready/vm
	if s.adjust != nil {
		s.adjust(m)
	}
	if err := m.Create(); err != nil {
		return fmt.Errorf("vCenter simulator: %w", err)
	}
	m.Service.TLS = new(tls.Config)
	if cert != nil {
		m.Service.TLS.Certificates = []tls.Certificate{*cert}
	}
	m.Service.Listen = &url.URL{Host: s.addr, User: url.UserPassword(s.User, s.Password)}
	reg := m.Service.Context.Map
	reg.SessionManager().ValidLogin = s.validLogin
	reg.Handler = s.record
	defer func() {
		// The simulator panics when it cannot listen.
		if r := recover(); r != nil {
			m.Remove()
			err = fmt.Errorf("vCenter simulator: listening on %s: %v", s.addr, r)
		}
	}()
	srv := m.Service.NewServer()
	s.mu.Lock()
	s.model, s.server = m, srv
	s.mu.Unlock()
	return nil
}

func (s *Sim) validLogin(req *types.Login) bool {
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		<-hold
	}
	return req.UserName == s.User && req.Password == s.Password
}

// record notes the sessions that make calls and the property collectors
// they wait on.
func (s *Sim) record(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	if ctx.Session == nil {
		return nil, nil
	}
	key := ctx.Session.Key
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expired[key] {
		return nil, &types.NotAuthenticated{NoPermission: types.NoPermission{Object: &m.This, PrivilegeId: "System.View"}}
	}
	if s.sessions == nil {
		s.sessions = map[string]*simSession{}
	}
	if m.Name == "Logout" {
		delete(s.sessions, key)
		return nil, nil
	}
	sess := s.sessions[key]
	if sess == nil {
		sess = &simSession{user: ctx.Session.UserName, collectors: map[*simulator.PropertyCollector]bool{}}
		s.sessions[key] = sess
	}
	switch m.Name {
	case "WaitForUpdatesEx", "WaitForUpdates":
		if pc, ok := ctx.Session.Get(m.This).(*simulator.PropertyCollector); ok {
			sess.collectors[pc] = true
		}
	case "DestroyPropertyCollector":
		if pc, ok := ctx.Session.Get(m.This).(*simulator.PropertyCollector); ok {
			delete(sess.collectors, pc)
		}
	}
	return nil, nil
}

// cancelWaits ends every WaitForUpdatesEx held on a collector of the
// sessions keys (all when nil).
func (s *Sim) cancelWaits(keys map[string]bool) {
	s.mu.Lock()
	var pcs []*simulator.PropertyCollector
	for key, sess := range s.sessions {
		if keys == nil || keys[key] {
			for pc := range sess.collectors {
				pcs = append(pcs, pc)
			}
		}
	}
	s.mu.Unlock()
	for _, pc := range pcs {
		pc.CancelWaitForUpdates(&types.CancelWaitForUpdates{This: pc.Reference()})
	}
}

// ExpireSessions ends every session of s.User, as vCenter does when a
// session expires or an administrator terminates it: the session is
// gone (its next call is NotAuthenticated) and so are its property
// collectors, so that a WaitForUpdatesEx held on one returns at once
// (RequestCanceled). It returns how many sessions it ended.
func (s *Sim) ExpireSessions() (int, error) {
	s.mu.Lock()
	model := s.model
	keys := map[string]bool{}
	for key, sess := range s.sessions {
		if sess.user == s.User {
			keys[key] = true
			if s.expired == nil {
				s.expired = map[string]bool{}
			}
			s.expired[key] = true
		}
	}
	s.mu.Unlock()
	if model == nil {
		return 0, errors.New("vCenter simulator: stopped")
	}
	reg := model.Service.Context.Map
	// TerminateSession refuses the caller's own session: this caller's
	// is none of those.
	ctx := &simulator.Context{Context: context.Background(), Map: reg,
		Session: &simulator.Session{UserSession: types.UserSession{Key: "vcsim-expire-sessions"}, Map: reg}}
	n := 0
	for key := range keys {
		res := reg.SessionManager().TerminateSession(ctx, &types.TerminateSession{SessionId: []string{key}})
		if f := res.Fault(); f != nil {
			if _, gone := f.Detail.Fault.(*types.NotFound); gone {
				continue // ended already (expired, or logged out without a Logout seen)
			}
			return n, fmt.Errorf("vCenter simulator: terminating session: %s", f.String)
		}
		n++
	}
	s.cancelWaits(keys)
	// A wait that was on its way when the session ended may have set
	// itself up only after that: end it too.
	time.Sleep(50 * time.Millisecond)
	s.cancelWaits(keys)
	s.mu.Lock()
	for key := range keys {
		delete(s.sessions, key)
	}
	s.mu.Unlock()
	return n, nil
}

// HoldLogins makes every Login wait until release is called (or the
// simulator stops), as an SSO service that does not answer: the time
// between losing a session and the next one is then the test's to
// choose. release may be called more than once.
func (s *Sim) HoldLogins() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		s.hold = make(chan struct{})
	}
	hold := s.hold
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.hold == hold {
			close(hold)
			s.hold = nil
		}
	}
}

// Stop takes the simulator down as a vCenter that stops: every
// connection is cut, the waits held on its property collectors end, and
// its address refuses connections until Restart. The model and its
// sessions are gone.
func (s *Sim) Stop() {
	s.mu.Lock()
	srv, model := s.server, s.model
	s.server, s.model = nil, nil
	if s.hold != nil {
		close(s.hold) // a held Login ends (and its connection with it)
		s.hold = nil
	}
	s.mu.Unlock()
	if srv == nil {
		return
	}
	// Close stops accepting and waits for the requests in flight; cut
	// the connections and end the held waits until it returns (a wait
	// may begin after one pass).
	done := make(chan struct{})
	go func() { srv.Close(); close(done) }()
	for {
		srv.CloseClientConnections()
		s.cancelWaits(nil)
		select {
		case <-done:
			model.Remove()
			s.mu.Lock()
			s.sessions, s.expired = nil, nil
			s.mu.Unlock()
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Restart brings up a fresh simulator, as a restarted vCenter: on the
// same address, with the same credentials and certificate (CAFile still
// verifies it), a new model (none of the changes made by Update) and no
// session. It stops the running one first, if any.
func (s *Sim) Restart() error {
	s.Stop()
	// The port was ours a moment ago; wait for another socket that may
	// hold it (none is expected on loopback) rather than fail at once.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := s.serve(&s.cert)
		if err == nil {
			if got := s.Addr(); got != s.addr {
				s.Stop()
				return fmt.Errorf("vCenter simulator: restarted on %s, want %s", got, s.addr)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// current is the running model, or an error when stopped.
func (s *Sim) current() (*simulator.Model, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.model == nil {
		return nil, errors.New("vCenter simulator: stopped")
	}
	return s.model, nil
}

// Ref is the reference of the simulator's object of kind (HostSystem,
// Datastore, VirtualMachine, ...) named name.
func (s *Sim) Ref(kind, name string) (types.ManagedObjectReference, error) {
	m, err := s.current()
	if err != nil {
		return types.ManagedObjectReference{}, err
	}
	for _, e := range m.Map().All(kind) {
		if e.Entity().Name == name {
			return e.Reference(), nil
		}
	}
	return types.ManagedObjectReference{}, fmt.Errorf("vCenter simulator: no %s named %q", kind, name)
}

// Update changes properties of the object of kind named name as vCenter
// would: the registry applies them and tells every property collector's
// waiters (a watch sees them as updates).
func (s *Sim) Update(kind, name string, changes ...types.PropertyChange) error {
	m, err := s.current()
	if err != nil {
		return err
	}
	ref, err := s.Ref(kind, name)
	if err != nil {
		return err
	}
	reg := m.Map()
	obj := reg.Get(ref)
	if obj == nil {
		return fmt.Errorf("vCenter simulator: %s %q vanished", kind, name)
	}
	reg.AtomicUpdate(m.Service.Context, obj, changes)
	return nil
}

// Addr is the simulator's host:port.
func (s *Sim) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.server != nil {
		return s.server.URL.Host
	}
	return s.addr
}

// PasswordFile writes the password to a private file and returns its path.
func (s *Sim) PasswordFile() (string, error) {
	p := filepath.Join(s.dir, "password")
	return p, os.WriteFile(p, []byte(s.Password+"\n"), 0o600)
}

// Close stops the simulator and removes its files.
func (s *Sim) Close() {
	s.Stop()
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}
