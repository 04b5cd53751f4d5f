package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/probe"
	"github.com/linkgate/linkgate/sidecar"
)

// checkCmd evaluates every check once and prints a table or JSON.
type checkCmd struct {
	commonFlags    `embed:""`
	collectorFlags `embed:""`
	networkFlags   `embed:""`
	vcenterFlags   `embed:""`
	gateFlags      `embed:""`
	vsphereFlags   `embed:""`
	Host           string        `name:"host" placeholder:"NAME" help:"Also judge this ESXi host (the name vCenter knows it by) as /ready/host/NAME does: its vCenter's inventory, its state, its reachability from this node, its datastores."`
	VM             string        `name:"vm" placeholder:"NAME" help:"Also judge this VM (name or instance UUID) as /ready/vm/NAME does: the host it runs on, as --host, and its datastores."`
	Output         string        `name:"output" short:"o" default:"table" enum:"table,json" help:"Output format: ${enum}."`
	CheckTimeout   time.Duration `name:"check.timeout" default:"30s" help:"Bound on the whole check."`
}

func (c *checkCmd) validate(env *runEnv) error {
	if err := c.collectorFlags.validate(env); err != nil {
		return err
	}
	if err := c.networkFlags.validate(env, true, len(c.URL) > 0); err != nil {
		return err
	}
	if err := c.vsphereFlags.validate(env); err != nil {
		return err
	}
	if err := c.vcenterFlags.validate(env, &c.networkFlags, &c.vsphereFlags); err != nil {
		return err
	}
	for _, f := range []struct{ flag, value string }{{"host", c.Host}, {"vm", c.VM}} {
		switch {
		case f.value == "":
		case len(c.URL) == 0:
			return env.invalid(f.flag, "needs --vcenter.url: it is judged from vCenter's inventory")
		case !c.Inventory:
			return env.invalid(f.flag, "needs the inventory; drop --no-vsphere.inventory")
		}
	}
	if c.Host != "" && c.VM != "" {
		return env.invalid("vm", "judge a host or a VM, not both (the VM's host is judged with it)")
	}
	return c.gateFlags.validate(env)
}

func (c *checkCmd) Run(env *runEnv) error {
	if err := c.validate(env); err != nil {
		return &exitError{exitInvalid, err}
	}
	if env.configChecked() {
		return nil
	}
	ctx, stop := signalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.CheckTimeout)
	defer cancel()
	report, err := c.evaluate(ctx, env)
	if err != nil {
		return &exitError{exitInvalid, fmt.Errorf("check: %w", err)}
	}
	if c.Output == "json" {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(report)
	} else {
		err = report.WriteTable(env.stdout)
	}
	switch {
	case err != nil:
		return &exitError{exitInvalid, err}
	case !report.Ready:
		return &exitError{exitFailure, nil}
	}
	return nil
}

// evaluate takes one snapshot of the kernel and probes vCenter once.
func (c *checkCmd) evaluate(ctx context.Context, env *runEnv) (sidecar.Report, error) {
	// With required_interfaces: auto the path check covers the route to
	// vCenter.
	opts, err := c.options(env, c.required())
	if err != nil {
		return sidecar.Report{}, err
	}
	static, err := collector.NewStatic(ctx, opts)
	if err != nil {
		return sidecar.Report{}, err
	}
	defer static.Close()
	in := &sidecar.Input{Snapshot: static.Snapshot()}
	var host hostFacts
	if c.Host != "" || c.VM != "" {
		if host, err = c.hostFacts(ctx, env); err != nil {
			return sidecar.Report{}, err
		}
		in.VCenter = host.statuses
	} else {
		prober, err := c.newProber(env, &c.networkFlags, &c.vsphereFlags, nil)
		if err != nil {
			return sidecar.Report{}, err
		}
		if prober != nil {
			in.VCenter = prober.ProbeOnce(ctx)
		}
	}
	in.Now = time.Now()
	checks, err := c.checks(env, &c.vcenterFlags, &c.networkFlags, static)
	if err != nil {
		return sidecar.Report{}, err
	}
	report := sidecar.Evaluate(ctx, checks, in)
	var extra []sidecar.CheckStatus
	switch {
	case c.Host != "":
		extra, _ = sidecar.HostChecks(c.Host, host.invs, host.statuses, host.reach, in.Now)
	case c.VM != "":
		extra = sidecar.VMChecks(host.vm, host.vmErr, host.invs, host.statuses, host.reach, in.Now)
	}
	for _, h := range extra {
		report.Checks = append(report.Checks, h.CheckResult)
		report.Ready = report.Ready && h.OK
	}
	return report, nil
}

// hostFacts are what check --host judges the host from.
type hostFacts struct {
	statuses []probe.Status
	invs     []*probe.Inventory
	reach    func(target string) *probe.Reachability
	// With --vm: where it runs, or why that is not known.
	vm    probe.VMPlacement
	vmErr error
}

// hostFacts runs the probe with its inventory watch until every target
// has answered and its inventory is verified (or its probe failed),
// resolves the VM (--vm) to its host, then probes the host's ports once,
// as the sidecar does. It gives up waiting
// at ctx's deadline (--check.timeout) and judges what it has: an
// unverified inventory fails closed.
func (c *checkCmd) hostFacts(ctx context.Context, env *runEnv) (hostFacts, error) {
	var f hostFacts
	prober, err := c.newProber(env, &c.networkFlags, &c.vsphereFlags, nil)
	if err != nil {
		return f, err
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = prober.Run(runCtx) }()
	defer func() { stop(); <-done }() // logs out
	settled := func() bool {
		sts, _ := prober.Status()
		invs, _ := prober.Inventory()
		for i, st := range sts {
			switch {
			case st.LastAttempt.IsZero():
				return false
			case !st.Up || st.Class != "":
				continue // failed: the inventory will not come
			case i >= len(invs) || !invs[i].Verified:
				return false
			}
		}
		return true
	}
	for !settled() {
		_, stChanged := prober.Status()
		_, invChanged := prober.Inventory()
		if settled() {
			break
		}
		select {
		case <-stChanged:
		case <-invChanged:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	f.statuses, _ = prober.Status()
	f.invs, _ = prober.Inventory()

	if c.VM != "" {
		f.vm, f.vmErr = prober.LookupVM(ctx, c.VM)
	}
	// The hosts to judge, per target: the VM's own (by its vCenter and
	// ID, as VMChecks judges it), or every host of the name.
	judged := map[string]probe.Host{}
	for _, inv := range f.invs {
		switch {
		case c.VM != "":
			if f.vm.Target == inv.Target {
				if h, ok := inv.HostByID(f.vm.HostID); ok {
					judged[inv.Target] = h
				}
			}
		default:
			if hs := inv.HostsNamed(c.Host); len(hs) > 0 {
				judged[inv.Target] = hs[0]
			}
		}
	}

	// The host's ports, once, if its inventory says it is connected.
	reaches := map[string]*probe.Reachability{}
	for target, h := range judged {
		o, err := c.reachOptions(env, target)
		if err != nil || o == nil {
			return f, err
		}
		r, err := probe.NewReach(*o, nil)
		if err != nil {
			return f, env.invalid("vsphere.host-ports", "%v", err)
		}
		var hosts []string
		if h.IsConnected() {
			hosts = []string{h.Name}
		}
		reaches[target] = probeReachOnce(ctx, r, hosts)
	}
	f.reach = func(target string) *probe.Reachability { return reaches[target] }
	return f, nil
}

// probeReachOnce runs r on hosts until every port of each has been
// probed once (or ctx ends) and returns that snapshot.
func probeReachOnce(ctx context.Context, r *probe.Reach, hosts []string) *probe.Reachability {
	if len(hosts) == 0 {
		return r.Snapshot()
	}
	r.SetHosts(hosts)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(runCtx) }()
	defer func() { stop(); <-done }()
	for {
		snap := r.Snapshot()
		probed := len(snap.Hosts) == len(hosts)
		for _, h := range snap.Hosts {
			for _, p := range h.Ports {
				probed = probed && p.Checked
			}
		}
		if probed {
			return snap
		}
		select {
		case <-snap.Changed():
		case <-ctx.Done():
			return r.Snapshot()
		}
	}
}
