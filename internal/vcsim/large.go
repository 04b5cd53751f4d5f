package vcsim

import (
	"fmt"
	"os"
	"strconv"

	"github.com/vmware/govmomi/simulator"
)

// The large model of the inventory benchmarks (issue 11's scale): 20
// datacenters of 5 clusters of 5 hosts (500 hosts) and 100 datastores per
// datacenter (2,000; the simulator mounts each on every host of its
// datacenter, so each host has 100).
const (
	LargeDatacenters  = 20
	LargeClusters     = 5 // per datacenter
	LargeClusterHosts = 5 // per cluster
	LargeDatastores   = 100
	LargeHosts        = LargeDatacenters * LargeClusters * LargeClusterHosts
)

// Large adjusts a model to the large one with about vms virtual machines
// (a multiple of the 100 clusters, rounded down): for StartModel, or a
// test's own simulator.
func Large(vms int) func(*simulator.Model) {
	return func(m *simulator.Model) {
		m.Datacenter, m.Cluster, m.ClusterHost, m.Host = LargeDatacenters, LargeClusters, LargeClusterHosts, 0
		m.Datastore, m.Machine = LargeDatastores, vms/(LargeDatacenters*LargeClusters)
	}
}

// LargeHostName is the name the simulator gives host h of cluster c of
// datacenter dc in the large model.
func LargeHostName(dc, c, h int) string { return fmt.Sprintf("DC%d_C%d_H%d", dc, c, h) }

// BenchVMs is the VM count of a benchmark's large model:
// LINKGATE_BENCH_VMS, or def. The simulator takes about 35 s per 1,000
// VMs to create them, and VMs are not part of the inventory watch.
func BenchVMs(def int) (int, error) {
	v := os.Getenv("LINKGATE_BENCH_VMS")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("LINKGATE_BENCH_VMS=%q: want a count", v)
	}
	return n, nil
}
