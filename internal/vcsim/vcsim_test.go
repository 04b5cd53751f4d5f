package vcsim

import (
	"context"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// guard bounds every wait here: a failure guard, not a timing assertion.
const guard = 10 * time.Second

func startSim(t *testing.T) *Sim {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// client logs in to s as its user, verifying its certificate with
// CAFile.
func client(t *testing.T, s *Sim) *vim25.Client {
	t.Helper()
	c := dial(t, s)
	if err := login(c, s); err != nil {
		t.Fatal(err)
	}
	return c
}

func login(c *vim25.Client, s *Sim) error {
	return session.NewManager(c).Login(context.Background(), url.UserPassword(s.User, s.Password))
}

// dial connects to s, verifying its certificate with CAFile.
func dial(t *testing.T, s *Sim) *vim25.Client {
	t.Helper()
	ctx := context.Background()
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	sc := soap.NewClient(u, false)
	if err := sc.SetRootCAs(s.CAFile); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.CloseIdleConnections)
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// maintenance is whether vCenter says host is in maintenance mode.
func maintenance(t *testing.T, c *vim25.Client, s *Sim, host string) bool {
	t.Helper()
	ref, err := s.Ref("HostSystem", host)
	if err != nil {
		t.Fatal(err)
	}
	var h mo.HostSystem
	if err := property.DefaultCollector(c).RetrieveOne(context.Background(), ref, []string{"runtime.inMaintenanceMode"}, &h); err != nil {
		t.Fatal(err)
	}
	return h.Runtime.InMaintenanceMode
}

func isNotAuthenticated(err error) bool {
	if !soap.IsSoapFault(err) {
		return false
	}
	_, ok := soap.ToSoapFault(err).VimFault().(types.NotAuthenticated)
	return ok
}

// wait holds a WaitForUpdatesEx on a collector of c's session (after
// the full retrieve) and returns its result.
func wait(t *testing.T, c *vim25.Client) <-chan error {
	t.Helper()
	ctx := context.Background()
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"HostSystem"}, true)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := property.DefaultCollector(c).Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.CreateFilter(ctx, types.CreateFilter{Spec: types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{Obj: v.Reference(), Skip: types.NewBool(true),
			SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{Type: "ContainerView", Path: "view"}}}},
		PropSet: []types.PropertySpec{{Type: "HostSystem", PathSet: []string{"name"}}},
	}}); err != nil {
		t.Fatal(err)
	}
	maxWait := int32(60)
	req := types.WaitForUpdatesEx{This: pc.Reference(), Options: &types.WaitOptions{MaxWaitSeconds: &maxWait}}
	res, err := methods.WaitForUpdatesEx(ctx, c, &req)
	if err != nil {
		t.Fatal(err)
	}
	req.Version = res.Returnval.Version
	done := make(chan error, 1)
	go func() {
		_, err := methods.WaitForUpdatesEx(ctx, c, &req)
		done <- err
	}()
	return done
}

func TestExpireSessions(t *testing.T) {
	s := startSim(t)
	c := client(t, s)
	held := wait(t, c)
	time.Sleep(50 * time.Millisecond) // let the wait reach the simulator (either way it must end)
	n, err := s.ExpireSessions()
	if err != nil || n != 1 {
		t.Fatalf("ExpireSessions() = %d, %v, want 1 session", n, err)
	}
	select {
	case err := <-held:
		if err == nil {
			t.Error("the held wait returned no error after its session ended")
		}
	case <-time.After(guard):
		t.Fatal("the held wait did not end with its session")
	}
	if _, err := methods.GetCurrentTime(context.Background(), c); !isNotAuthenticated(err) {
		t.Errorf("a call over the ended session: %v, want NotAuthenticated", err)
	}
	if n, err := s.ExpireSessions(); err != nil || n != 0 {
		t.Errorf("ExpireSessions() again = %d, %v, want none left", n, err)
	}
}

func TestHoldLogins(t *testing.T) {
	s := startSim(t)
	c := dial(t, s)
	release := s.HoldLogins()
	logged := make(chan error, 1)
	go func() { logged <- login(c, s) }()
	select {
	case err := <-logged:
		t.Fatalf("a login went through while held: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	release() // twice is fine
	select {
	case err := <-logged:
		if err != nil {
			t.Fatal(err)
		}
		if _, err := methods.GetCurrentTime(context.Background(), c); err != nil {
			t.Errorf("after the release: %v", err)
		}
	case <-time.After(guard):
		t.Fatal("the login did not go through once released")
	}
}

func TestRestart(t *testing.T) {
	s := startSim(t)
	addr, url := s.Addr(), s.URL
	c := client(t, s)
	if err := s.Update("HostSystem", "DC0_H0", types.PropertyChange{Name: "runtime.inMaintenanceMode", Val: true}); err != nil {
		t.Fatal(err)
	}
	if !maintenance(t, c, s, "DC0_H0") {
		t.Fatal("Update did not put DC0_H0 in maintenance mode")
	}

	held := wait(t, c)
	time.Sleep(50 * time.Millisecond)
	stopped := make(chan struct{})
	go func() { s.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(guard):
		t.Fatal("Stop waited for the held WaitForUpdatesEx")
	}
	select {
	case err := <-held:
		if err == nil {
			t.Error("the held wait returned no error when vCenter stopped")
		}
	case <-time.After(guard):
		t.Fatal("the held wait did not end when vCenter stopped")
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Fatalf("%s accepts connections while stopped", addr)
	}
	if err := s.Update("HostSystem", "DC0_H0"); err == nil {
		t.Error("Update while stopped: no error")
	}
	s.Stop() // twice is fine

	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr || s.URL != url {
		t.Fatalf("restarted at %s (%s), want %s (%s)", s.Addr(), s.URL, addr, url)
	}
	if _, err := methods.GetCurrentTime(context.Background(), c); !isNotAuthenticated(err) {
		t.Errorf("the old session after the restart: %v, want NotAuthenticated", err)
	}
	// The same credentials and CA file; a fresh model.
	c = client(t, s)
	if maintenance(t, c, s, "DC0_H0") {
		t.Error("the restarted vCenter kept the old one's change")
	}
	if err := s.Restart(); err != nil { // while running: stop, start
		t.Fatal(err)
	}
	if _, err := methods.GetCurrentTime(context.Background(), client(t, s)); err != nil {
		t.Error(err)
	}
}

func TestStoppedErrors(t *testing.T) {
	s := startSim(t)
	s.Stop()
	if _, err := s.ExpireSessions(); err == nil {
		t.Error("ExpireSessions while stopped: no error")
	}
	if _, err := s.Ref("HostSystem", "DC0_H0"); err == nil {
		t.Error("Ref while stopped: no error")
	}
}
