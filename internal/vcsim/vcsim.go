// Package vcsim runs govmomi's vCenter simulator in-process over HTTPS on
// loopback with its own credentials and CA file: the vCenter of
// `linkgate demo` and of the tests that need one.
package vcsim

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Sim is a running simulator.
type Sim struct {
	URL      string // https://127.0.0.1:PORT/sdk, without credentials
	User     string
	Password string
	CAFile   string // the simulator's certificate, to verify it
	dir      string
	model    *simulator.Model
	server   *simulator.Server
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
	s := &Sim{User: user, Password: password}
	m := simulator.VPX()
	m.ClusterHost, m.Machine = 1, 1 // one VM per host and cluster: /ready/vm
	if adjust != nil {
		adjust(m)
	}
	if err := m.Create(); err != nil {
		return nil, fmt.Errorf("vCenter simulator: %w", err)
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(s.User, s.Password)}
	m.Service.Context.Map.SessionManager().ValidLogin = func(req *types.Login) bool {
		return req.UserName == s.User && req.Password == s.Password
	}
	s.model = m
	s.server = m.Service.NewServer()
	s.URL = "https://" + s.server.URL.Host + "/sdk"
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

// Ref is the reference of the simulator's object of kind (HostSystem,
// Datastore, VirtualMachine, ...) named name.
func (s *Sim) Ref(kind, name string) (types.ManagedObjectReference, error) {
	for _, e := range s.model.Map().All(kind) {
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
	ref, err := s.Ref(kind, name)
	if err != nil {
		return err
	}
	m := s.model.Map()
	obj := m.Get(ref)
	if obj == nil {
		return fmt.Errorf("vCenter simulator: %s %q vanished", kind, name)
	}
	m.AtomicUpdate(s.model.Service.Context, obj, changes)
	return nil
}

// Addr is the simulator's host:port.
func (s *Sim) Addr() string { return s.server.URL.Host }

// PasswordFile writes the password to a private file and returns its path.
func (s *Sim) PasswordFile() (string, error) {
	p := filepath.Join(s.dir, "password")
	return p, os.WriteFile(p, []byte(s.Password+"\n"), 0o600)
}

func (s *Sim) Close() {
	if s.server != nil {
		s.server.Close()
	}
	if s.model != nil {
		s.model.Remove()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}
