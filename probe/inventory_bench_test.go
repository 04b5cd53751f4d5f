package probe

import (
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/vcsim"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// The large model of the inventory benchmarks (vcsim.Large), with
// LINKGATE_BENCH_VMS virtual machines (default 1,000).
const (
	benchDatacenters = vcsim.LargeDatacenters
	benchClusters    = vcsim.LargeClusters
	benchClusterHost = vcsim.LargeClusterHosts
	benchDatastores  = vcsim.LargeDatastores
	benchHosts       = vcsim.LargeHosts
)

func benchVMs(b *testing.B) int {
	vms, err := vcsim.BenchVMs(1000)
	if err != nil {
		b.Fatal(err)
	}
	return vms
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkInventorySim runs the watch against the large model in the
// simulator, over HTTPS on loopback: the time to the first verified
// inventory (a login and the full retrieve, in the simulator's pages of
// 100 objects), the heap that adds, and the time a change in vCenter
// takes to reach the inventory. The simulator runs in the same process:
// its share of the work and of the heap is in the figures.
func BenchmarkInventorySim(b *testing.B) {
	vms := benchVMs(b)
	start := time.Now()
	s := startSim(b, simOptions{model: vcsim.Large(vms)})
	c := s.model.Count()
	b.Logf("simulator model: %d hosts, %d datastores, %d VMs, built in %v",
		c.Host+c.ClusterHost, c.Datastore, c.Machine, time.Since(start).Round(time.Second))
	cfg := s.inventoryConfig()
	cfg.MaxHosts, cfg.MaxDatastores = DefaultMaxHosts, DefaultMaxDatastores
	quiet := WithLogger(slog.New(slog.DiscardHandler))

	b.Run("FirstVerified", func(b *testing.B) {
		var added uint64
		for b.Loop() {
			b.StopTimer()
			before := heapInUse()
			b.StartTimer()
			p := newProber(b, cfg, nil, quiet)
			stop := running(b, p)
			inv := waitInventory(b, p, 0, "first verified inventory", isVerified)
			b.StopTimer()
			if len(inv.Hosts) != benchHosts || len(inv.Datastores) != benchDatacenters*benchDatastores {
				b.Fatalf("inventory %s", inv)
			}
			if after := heapInUse(); after > before {
				added = max(added, after-before)
			}
			stop()
			b.StartTimer()
		}
		b.ReportMetric(float64(added)/(1<<20), "MiB-heap-added")
	})

	b.Run("Update", func(b *testing.B) {
		p := newProber(b, cfg, nil, quiet)
		running(b, p)
		waitInventory(b, p, 0, "first verified inventory", isVerified)
		var hosts []mo.Reference
		for _, e := range s.model.Map().All("HostSystem") {
			hosts = append(hosts, e)
		}
		i := 0
		for b.Loop() {
			h := hosts[i%len(hosts)]
			on := (i/len(hosts))%2 == 0
			i++
			s.update(h, types.PropertyChange{Name: propMaintenance, Val: on})
			id := h.Reference().Value
			waitInventory(b, p, 0, "the change", func(inv *Inventory) bool {
				for _, x := range inv.Hosts {
					if x.ID == id {
						return x.InMaintenance == on
					}
				}
				return false
			})
		}
	})
}

// benchRetrieve is the full retrieve of the large model as records get
// it: every host enters with its 100 datastores, every datastore enters.
func benchRetrieve() []types.ObjectUpdate {
	var updates []types.ObjectUpdate
	for dc := range benchDatacenters {
		var dss []string
		for d := range benchDatastores {
			id := fmt.Sprintf("datastore-%d", dc*benchDatastores+d)
			dss = append(dss, id)
			updates = append(updates, dsEnter(id, fmt.Sprintf("LocalDS_%d", d), true))
		}
		for h := range benchClusters * benchClusterHost {
			n := dc*benchClusters*benchClusterHost + h
			// Each host's list decoded on its own, as from the wire.
			own := make([]string, len(dss))
			for i, d := range dss {
				own[i] = strings.Clone(d)
			}
			updates = append(updates, hostEnter(fmt.Sprintf("host-%d", n), vcsim.LargeHostName(dc, h/benchClusterHost, h%benchClusterHost), own...))
		}
	}
	return updates
}

// BenchmarkInventoryRecords is linkgate's own share, without vCenter or
// the wire: applying updates and making the snapshot the watch publishes,
// for the large model; and a scrape of the inventory's series.
func BenchmarkInventoryRecords(b *testing.B) {
	retrieve := benchRetrieve()
	newFull := func() *records {
		r := newRecords(hostFilter{}, DefaultMaxHosts, DefaultMaxDatastores)
		r.apply(retrieve)
		r.snapshot()
		return r
	}

	b.Run("Retrieve", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			newFull()
		}
		// The heap the records and the snapshot keep, the strings they
		// hold included (built afresh, as the wire's decoding does).
		before := heapInUse()
		updates := benchRetrieve()
		r := newRecords(hostFilter{}, DefaultMaxHosts, DefaultMaxDatastores)
		r.apply(updates)
		hosts, dss, _ := r.snapshot()
		updates = nil
		added := heapInUse() - before
		runtime.KeepAlive(r)
		if len(hosts) != benchHosts || len(dss) != benchDatacenters*benchDatastores {
			b.Fatalf("%d hosts, %d datastores", len(hosts), len(dss))
		}
		b.ReportMetric(float64(added)/(1<<20), "MiB-kept")
	})

	for _, tc := range []struct {
		name   string
		update func(i int) types.ObjectUpdate
	}{
		{"HostChange", func(i int) types.ObjectUpdate {
			return modifyUpdate("HostSystem", fmt.Sprintf("host-%d", i%benchHosts), assign(propMaintenance, i%2 == 0))
		}},
		{"DatastoreChange", func(i int) types.ObjectUpdate {
			return modifyUpdate("Datastore", fmt.Sprintf("datastore-%d", i%(benchDatacenters*benchDatastores)), assign(propAccessible, i%2 == 0))
		}},
		{"HostMountsChange", func(i int) types.ObjectUpdate {
			// Structural: the lists are rebuilt.
			var refs []types.ManagedObjectReference
			for d := range benchDatastores - i%2 {
				refs = append(refs, moRef("Datastore", fmt.Sprintf("datastore-%d", d)))
			}
			return modifyUpdate("HostSystem", "host-0", assign(propDatastores, types.ArrayOfManagedObjectReference{ManagedObjectReference: refs}))
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r := newFull()
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				r.apply([]types.ObjectUpdate{tc.update(i)})
				r.snapshot()
				i++
			}
		})
	}

	b.Run("Collect", func(b *testing.B) {
		cfg := configFor("vc.example:443")
		cfg.Inventory = true
		p := newProber(b, cfg, nil, WithLogger(slog.New(slog.DiscardHandler)))
		r := newFull()
		hosts, dss, _ := r.snapshot()
		p.publishInventory(p.targets[0], func(inv *Inventory) {
			inv.Hosts, inv.Datastores = hosts, dss
			inv.setDoubt("", time.Now())
		})
		reg := prometheus.NewRegistry()
		reg.MustRegister(p)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := reg.Gather(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
