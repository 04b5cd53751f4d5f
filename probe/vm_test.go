package probe

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// TestLookupVM resolves a VM by name and by instance UUID to its host and
// datastores, follows it to another host once the cache has expired, and
// says when there is no such VM.
func TestLookupVM(t *testing.T) {
	s := startSim(t, simOptions{model: func(m *simulator.Model) {
		m.ClusterHost, m.Host, m.Datastore, m.Machine = 2, 1, 1, 1
	}})
	p := runInventory(t, s.inventoryConfig(), nil)
	waitInventory(t, p, 0, "verified", isVerified)
	ctx := context.Background()

	pl, err := p.LookupVM(ctx, "DC0_H0_VM0")
	if err != nil {
		t.Fatal(err)
	}
	if pl.Host != "DC0_H0" || pl.HostID == "" || len(pl.Datastores) != 1 || pl.InstanceUUID == "" || pl.Name != "DC0_H0_VM0" || pl.Target == "" {
		t.Fatalf("placement %+v", pl)
	}
	byUUID, err := p.LookupVM(ctx, pl.InstanceUUID)
	if err != nil || byUUID.ID != pl.ID {
		t.Fatalf("by instance UUID: %+v, %v; want %s", byUUID, err, pl.ID)
	}
	if _, err := p.LookupVM(ctx, "nosuch"); !errors.Is(err, ErrNoSuchVM) {
		t.Errorf("nosuch: %v, want ErrNoSuchVM", err)
	}

	// Moved (vMotion): the cached placement holds until it expires.
	vm := s.entity(t, "VirtualMachine", "DC0_H0_VM0")
	other := s.entity(t, "HostSystem", "DC0_C0_H0").Reference()
	s.update(vm, types.PropertyChange{Name: "runtime.host", Op: types.PropertyChangeOpAssign, Val: &other})
	if again, err := p.LookupVM(ctx, "DC0_H0_VM0"); err != nil || again.Host != "DC0_H0" {
		t.Errorf("within the cache's life: %+v, %v; want the cached DC0_H0", again, err)
	}
	p.vmTTL = 0
	if moved, err := p.LookupVM(ctx, "DC0_H0_VM0"); err != nil || moved.Host != "DC0_C0_H0" || moved.HostID != other.Value {
		t.Errorf("after the move: %+v, %v; want DC0_C0_H0", moved, err)
	}

	// Names are scanned at most once per vmScanMin: a VM that is gone is
	// not found again without a scan.
	p.vmScanMin = time.Hour
	s.removeEntity(vm)
	if _, err := p.LookupVM(ctx, "DC0_H0_VM0"); !errors.Is(err, ErrNoSuchVM) {
		t.Errorf("removed VM: %v, want ErrNoSuchVM", err)
	}
}

// TestLookupVMWithoutSession fails closed: no session is not "no such VM".
func TestLookupVMWithoutSession(t *testing.T) {
	s := startSim(t, simOptions{})
	p := newProber(t, s.inventoryConfig(), nil)
	if _, err := p.LookupVM(context.Background(), "DC0_H0_VM0"); err == nil || errors.Is(err, ErrNoSuchVM) {
		t.Errorf("without a session: %v, want an error that is not ErrNoSuchVM", err)
	}
}
