package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/linkgate/linkgate/internal/vcsim"
	"github.com/linkgate/linkgate/probe"
)

// demoCmd is the newcomer's command: the sidecar against govmomi's vCenter
// simulator running in-process on loopback, watching this machine's
// interfaces. Nothing to configure.
type demoCmd struct {
	logFlags      `embed:""`
	ListenAddress string `name:"web.listen-address" default:"127.0.0.1:9977" help:"Address to serve on."`
}

func (d *demoCmd) Run(env *runEnv) error {
	sim, err := vcsim.Start()
	if err != nil {
		return err
	}
	defer sim.Close()
	pwFile, err := sim.PasswordFile()
	if err != nil {
		return err
	}
	hosts, err := newStandIns(probe.DefaultReachPorts())
	if err != nil {
		return err
	}
	defer hosts.close()
	// Parse a sidecar command line so the demo has exactly the sidecar's
	// defaults. The password stays in a private file, out of argv.
	args := []string{"sidecar",
		"--web.listen-address", d.ListenAddress,
		"--vcenter.url", sim.URL,
		"--vcenter.user", sim.User,
		"--vcenter.password-file", pwFile,
		"--vcenter.ca-file", sim.CAFile,
		"--vcenter.interval", "5s",
		"--log.level", d.LogLevel,
		"--log.format", d.LogFormat,
	}
	p, code := parse(args, env.stdout, env.stderr)
	if code >= 0 {
		return &exitError{code, nil}
	}
	s := p.cli.Sidecar
	denv := *env
	denv.kctx, denv.res, denv.args, denv.demo = p.kctx, p.res, args, true
	denv.reachHook = func(o *probe.ReachOptions) { o.Dialer = hosts.dial }
	if err := s.validate(&denv); err != nil {
		return err
	}
	base := "http://" + displayAddr(d.ListenAddress)
	// Printed once listening: with the port taken, only the error shows.
	denv.listening = func() {
		fmt.Fprintf(env.stdout, `linkgate demo: a vCenter simulator runs in-process at %[1]s
(user %[2]s; password in %[3]s, its CA certificate in %[4]s),
and the sidecar watches this machine's interfaces.

  %[5]s/ready?verbose   the readiness gate, check by check
  %[5]s/metrics         Prometheus metrics (linkgate_link_*, linkgate_vcenter_*, linkgate_vsphere_*, linkgate_ready)
  %[5]s/events          gate transitions as Server-Sent Events
  %[5]s/ready/host/DC0_H0?verbose      an ESXi host of the simulator: its state, datastores, reachability
  %[5]s/ready/vm/DC0_H0_VM0?verbose    a VM: the host it runs on, its datastores
  linkgate wait --url %[5]s/ready   blocks until ready (exit 0), as a migration container would
  linkgate check --vcenter.url %[1]s --vcenter.user %[2]s \
    --vcenter.password-file %[3]s --vcenter.ca-file %[4]s   one-shot diagnosis

(The commands above need the binary: make build, or go install ./cmd/linkgate.)
The simulated ESXi hosts have no ports of their own: the reachability probes
of their ports %[6]s dial stand-ins on 127.0.0.1 (%[7]s).
Take a link down (ip link set DEV down) to watch the gate close. Ctrl-C stops.
`, sim.URL, sim.User, pwFile, sim.CAFile, base, hosts.ports(), hosts.addrs())
	}
	ctx, stop := signalContext()
	defer stop()
	return s.run(ctx, &denv)
}

// displayAddr turns a listen address into one a browser can open.
func displayAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + port
}

// standIns are loopback listeners that stand in for the simulated ESXi
// hosts' ports in the demo: the simulator's host names resolve nowhere,
// and the demo sends nothing off the machine. Each accepts and closes.
type standIns struct {
	by  map[string]net.Listener // ESXi port → its stand-in
	wg  sync.WaitGroup
	ord []string // the ports, in order
}

func newStandIns(ports []int) (*standIns, error) {
	s := &standIns{by: map[string]net.Listener{}}
	for _, p := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			s.close()
			return nil, err
		}
		port := strconv.Itoa(p)
		s.by[port], s.ord = ln, append(s.ord, port)
		s.wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		})
	}
	return s, nil
}

// dial connects to the stand-in of addr's port, whatever its host.
func (s *standIns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ln, ok := s.by[port]
	if !ok {
		return nil, fmt.Errorf("demo: no stand-in for port %s", port)
	}
	return new(net.Dialer).DialContext(ctx, network, ln.Addr().String())
}

func (s *standIns) ports() string { return strings.Join(s.ord, " and ") }

func (s *standIns) addrs() string {
	var out []string
	for _, p := range s.ord {
		out = append(out, p+" → "+s.by[p].Addr().String())
	}
	return strings.Join(out, ", ")
}

func (s *standIns) close() {
	for _, ln := range s.by {
		ln.Close()
	}
	s.wg.Wait()
}
