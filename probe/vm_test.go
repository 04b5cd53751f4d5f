package probe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock/fakeclock"
	"github.com/prometheus/client_golang/prometheus/testutil"
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

// TestLookupVMRateLimited: lookups that would ask vCenter are bounded per
// target (a flood of distinct names costs vCenter at most the limit), the
// ones over it fail closed without asking, and every outcome is counted.
// The clock does not move, so the bucket does not refill.
func TestLookupVMRateLimited(t *testing.T) {
	s := startSim(t, simOptions{})
	clk := fakeclock.New(time.Unix(1_700_000_000, 0))
	p := runInventory(t, s.inventoryConfig(), nil, WithClock(clk))
	waitInventory(t, p, 0, "verified", isVerified)
	target := p.targets[0].name
	ctx := context.Background()

	limited := 0
	for i := range vmLookupBurst + 5 {
		_, err := p.LookupVM(ctx, fmt.Sprintf("nosuch-%d", i))
		switch {
		case errors.Is(err, errVMLookupsLimited):
			limited++
		case !errors.Is(err, ErrNoSuchVM):
			t.Fatalf("lookup %d: %v", i, err)
		}
	}
	if limited != 5 {
		t.Errorf("%d lookups limited, want the 5 over the burst of %d", limited, vmLookupBurst)
	}
	// A name already answered is answered from the cache, limit or not.
	if _, err := p.LookupVM(ctx, "nosuch-0"); !errors.Is(err, ErrNoSuchVM) {
		t.Errorf("cached answer: %v, want ErrNoSuchVM", err)
	}
	for result, want := range map[string]float64{lookupNotFound: vmLookupBurst, lookupLimited: 5, lookupFound: 0, lookupError: 0} {
		if got := testutil.ToFloat64(p.metrics.vmLookups.WithLabelValues(target, result)); got != want {
			t.Errorf("vm_lookups_total{result=%q} = %v, want %v", result, got, want)
		}
	}
	if got := testutil.ToFloat64(p.metrics.vmScans.WithLabelValues(target)); got != 1 {
		t.Errorf("vm_name_scans_total = %v, want 1: one scan, then the names are known for vmScanMin", got)
	}
}

// TestLookupVMRenamed: a VM found by a name from the last scan must
// still have that name. Renamed since, with another VM given its old
// name, the lookup finds the other one (a scan at once), not the VM that
// no longer has the name. Found in review.
func TestLookupVMRenamed(t *testing.T) {
	s := startSim(t, simOptions{model: func(m *simulator.Model) {
		m.ClusterHost, m.Host, m.Datastore, m.Machine = 2, 1, 1, 1
	}})
	p := runInventory(t, s.inventoryConfig(), nil)
	waitInventory(t, p, 0, "verified", isVerified)
	ctx := context.Background()
	old, err := p.LookupVM(ctx, "DC0_H0_VM0")
	if err != nil {
		t.Fatal(err)
	}
	s.update(s.entity(t, "VirtualMachine", "DC0_H0_VM0"), types.PropertyChange{Name: "name", Op: types.PropertyChangeOpAssign, Val: "DC0_H0_VM0-retired"})
	other := s.entity(t, "VirtualMachine", "DC0_C0_RP0_VM0")
	s.update(other, types.PropertyChange{Name: "name", Op: types.PropertyChangeOpAssign, Val: "DC0_H0_VM0"})
	p.vmTTL, p.vmScanMin = 0, time.Hour // no scan but the one the rename forces
	pl, err := p.LookupVM(ctx, "DC0_H0_VM0")
	if err != nil || pl.ID != other.Reference().Value || pl.ID == old.ID || pl.Name != "DC0_H0_VM0" {
		t.Errorf("after the rename: %+v, %v; want %s (was %s)", pl, err, other.Reference().Value, old.ID)
	}
	if _, err := p.LookupVM(ctx, strings.Repeat("x", vmNameMax+1)); !errors.Is(err, ErrNoSuchVM) {
		t.Errorf("an over-long name: %v, want ErrNoSuchVM without a lookup", err)
	}
}
