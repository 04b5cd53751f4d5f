package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/linkgate/linkgate/internal/vcsim"
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
  %[5]s/metrics         Prometheus metrics (linkgate_link_*, linkgate_vcenter_*, linkgate_ready)
  %[5]s/events          gate transitions as Server-Sent Events
  linkgate wait --url %[5]s/ready   blocks until ready (exit 0), as a migration container would
  linkgate check --vcenter.url %[1]s --vcenter.user %[2]s \
    --vcenter.password-file %[3]s --vcenter.ca-file %[4]s   one-shot diagnosis

(The commands above need the binary: make build, or go install ./cmd/linkgate.)
Take a link down (ip link set DEV down) to watch the gate close. Ctrl-C stops.
`, sim.URL, sim.User, pwFile, sim.CAFile, base)
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
