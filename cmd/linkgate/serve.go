package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/probe"
	"github.com/linkgate/linkgate/sidecar"
	"github.com/prometheus/client_golang/prometheus"
)

// serveFlags are the settings of both long-running commands.
type serveFlags struct {
	commonFlags    `embed:""`
	webFlags       `embed:""`
	collectorFlags `embed:""`
	networkFlags   `embed:""`
	vcenterFlags   `embed:""`
	vsphereFlags   `embed:""`
}

// validate checks the settings; withGate allows required_interfaces: auto.
func (s *serveFlags) validate(e *runEnv, withGate bool) error {
	if err := s.collectorFlags.validate(e); err != nil {
		return err
	}
	if err := s.webFlags.validate(e); err != nil {
		return err
	}
	if err := s.networkFlags.validate(e, withGate, len(s.URL) > 0); err != nil {
		return err
	}
	if err := s.vsphereFlags.validate(e); err != nil {
		return err
	}
	return s.vcenterFlags.validate(e, &s.networkFlags, &s.vsphereFlags)
}

// exporterCmd serves metrics: the collector and, with a vCenter target,
// the probe. No gate.
type exporterCmd struct {
	serveFlags `embed:""`
}

func (x *exporterCmd) validate(env *runEnv) error { return x.serveFlags.validate(env, false) }

func (x *exporterCmd) Run(env *runEnv) error { return runServing(env, x) }

func (x *exporterCmd) run(ctx context.Context, env *runEnv) error {
	w, err := x.watch(env)
	if err != nil {
		return err
	}
	return serve(ctx, env, w.server(env, &x.webFlags, nil), parts{
		loops:       w.loops,
		afterListen: []func(context.Context) error{w.notifySystemd(env, sidecar.SnapshotStatus(w.col))},
		reload:      func() { reload(env, w.col, x, func(c *cli) reloadable { return &c.Exporter }) },
	})
}

// watchers are the sources of every serving command: the collector and,
// with a vCenter target, the probe and the reachability of its hosts,
// which start after the collector's first dump so that they do not take
// the empty initial snapshot for an outage.
type watchers struct {
	col     *collector.Collector
	prober  *probe.Prober // nil without a vCenter target
	reaches reaches       // one per target, in target order; nil without probing
	reg     *prometheus.Registry
	loops   []func(context.Context) error
}

func (s *serveFlags) watch(env *runEnv) (*watchers, error) {
	opts, err := s.options(env, s.required())
	if err != nil {
		return nil, err
	}
	col, err := collector.New(opts)
	if err != nil {
		return nil, configErrorf("%s: %v", env.origin("netns"), err)
	}
	prober, err := s.newProber(env, &s.networkFlags, &s.vsphereFlags, col)
	if err != nil {
		return nil, err
	}
	w := &watchers{col: col, prober: prober, reg: sidecar.NewRegistry(), loops: []func(context.Context) error{col.Run}}
	if prober == nil {
		return w, nil
	}
	w.reg.MustRegister(prober)
	afterSync := func(run func(context.Context) error) func(context.Context) error {
		return func(ctx context.Context) error {
			select {
			case <-col.Synced():
				return run(ctx)
			case <-ctx.Done():
				return nil
			}
		}
	}
	w.loops = append(w.loops, afterSync(prober.Run))
	var network probe.Network
	if s.Monitor {
		network = col
	}
	statuses, _ := prober.Status()
	for _, st := range statuses {
		o, err := s.reachOptions(env, st.Target)
		if err != nil {
			return nil, err
		}
		if o == nil {
			break // no probing: the same for every target
		}
		r, err := probe.NewReach(*o, network)
		if err != nil {
			return nil, env.invalid("vsphere.host-ports", "%v", err)
		}
		w.reaches = append(w.reaches, r)
		w.loops = append(w.loops, afterSync(r.Run))
	}
	if len(w.reaches) > 0 {
		w.reg.MustRegister(w.reaches)
		w.loops = append(w.loops, w.reaches.follow(prober))
	}
	return w, nil
}

// reaches are the reachability probes of every target, in the prober's
// target order, exported as one collector: each describes the same
// families, with a target label.
type reaches []*probe.Reach

func (rs reaches) Describe(ch chan<- *prometheus.Desc) { rs[0].Describe(ch) }

func (rs reaches) Collect(ch chan<- prometheus.Metric) {
	for _, r := range rs {
		r.Collect(ch)
	}
}

// follow is the part that feeds each target's reachability probe the
// connected hosts of its inventory. An unverified inventory changes
// nothing: the last verified set stays probed (the gate does not trust
// the inventory then anyway, and the probes show whether the hosts are
// still reachable).
func (rs reaches) follow(prober *probe.Prober) func(context.Context) error {
	return func(ctx context.Context) error {
		for {
			invs, changed := prober.Inventory()
			for i, inv := range invs {
				if i < len(rs) && inv.Verified {
					rs[i].SetConnected(connectedHosts(inv))
				}
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// connectedHosts are inv's hosts vCenter has connected (the ones a
// migration may read from), with the stamps of their connections: a
// host that reconnected between two looks is probed anew.
func connectedHosts(inv *probe.Inventory) map[string]uint64 {
	hosts := map[string]uint64{}
	for _, h := range inv.Hosts {
		if h.IsConnected() {
			hosts[h.Name] = h.Connected
		}
	}
	return hosts
}

// notifySystemd is the part that, once listening and holding the first
// kernel dump, tells systemd (Type=notify) it is ready and what status,
// and feeds its watchdog while the collector's event loop turns.
func (w *watchers) notifySystemd(env *runEnv, status func() (string, <-chan struct{})) func(context.Context) error {
	return func(ctx context.Context) error {
		// READY=1 means the metrics and the gate judge real kernel state.
		select {
		case <-w.col.Synced():
		case <-ctx.Done():
			return nil
		}
		return sidecar.NotifySystemd(ctx, sidecar.SystemdOptions{Status: status, Alive: w.col.Alive, Logger: env.logger.With("component", "systemd")})
	}
}

// server is the HTTP server over the watchers (and the gate's handler).
func (w *watchers) server(env *runEnv, f *webFlags, ready *sidecar.Handler) *sidecar.Server {
	o := f.serverOptions()
	o.Gatherer, o.Fast, o.Health, o.Ready, o.Logger = w.reg, []sidecar.ExpositionWriter{w.col}, w.col.Health, ready, env.logger
	return sidecar.NewServer(o)
}

// sidecarCmd is the exporter plus the readiness gate and its notifiers.
type sidecarCmd struct {
	serveFlags     `embed:""`
	gateFlags      `embed:""`
	notifyFlags    `embed:""`
	hyper2kvmFlags `embed:""`
}

func (s *sidecarCmd) validate(env *runEnv) error {
	if err := s.serveFlags.validate(env, true); err != nil {
		return err
	}
	if err := s.gateFlags.validate(env); err != nil {
		return err
	}
	if err := s.notifyFlags.validate(env); err != nil {
		return err
	}
	cfg, err := s.gateFlags.checksConfig(env, &s.vcenterFlags, &s.networkFlags, nil)
	if err != nil {
		return err
	}
	return s.hyper2kvmFlags.validate(env, sidecar.CheckNames(cfg))
}

func (s *sidecarCmd) Run(env *runEnv) error { return runServing(env, s) }

// run starts the collector, probe, gate, notifications and HTTP server and
// blocks until ctx ends (SIGTERM) or one of them fails.
func (s *sidecarCmd) run(ctx context.Context, env *runEnv) error {
	w, err := s.watch(env)
	if err != nil {
		return err
	}
	checks, err := s.checks(env, &s.vcenterFlags, &s.networkFlags, w.col)
	if err != nil {
		return err
	}
	gopts := sidecar.GateOptions{Snapshots: w.col, Checks: checks, StableFor: s.StableFor, Logger: env.logger.With("component", "gate")}
	if w.prober != nil {
		gopts.VCenter = w.prober
	}
	gate, err := sidecar.NewGate(gopts)
	if err != nil {
		return configErrorf("gate: %v", err)
	}
	hopts := sidecar.HandlerOptions{}
	if w.prober != nil && s.Inventory {
		hopts.Inventory, hopts.VMs = w.prober, w.prober
		for _, r := range w.reaches {
			hopts.Reach = append(hopts.Reach, r)
		}
	}
	handler := sidecar.NewHandler(gate, hopts)
	w.reg.MustRegister(gate, handler)
	loops := append(w.loops, gate.Run)
	if len(s.WebhookURL) > 0 {
		wh, err := sidecar.NewWebhooks(gate, sidecar.WebhookOptions{Hooks: s.hooks(), Logger: env.logger.With("component", "webhook")})
		if err != nil {
			return env.invalid("notify.webhook-url", "%v", err)
		}
		w.reg.MustRegister(wh)
		loops = append(loops, wh.Run)
	}
	if s.EmailServer != "" {
		em, err := sidecar.NewEmail(gate, s.emailOptions(env, env.logger.With("component", "email")))
		if err != nil {
			return s.emailError(env, err)
		}
		w.reg.MustRegister(em)
		loops = append(loops, em.Run)
	}
	if len(s.ControlSocket) > 0 {
		var ds daemons
		for _, sock := range s.ControlSocket {
			d, err := sidecar.NewDaemon(gate, sidecar.DaemonOptions{Socket: sock, StateDir: s.StateDir, Checks: s.PauseOn,
				Logger: env.logger.With("component", "hyper2kvm")})
			if err != nil {
				return env.invalid("hyper2kvm.pause-on", "%v", err)
			}
			ds = append(ds, d)
			loops = append(loops, d.Run)
		}
		w.reg.MustRegister(ds)
	}
	if s.autoRequired() {
		auto, err := sidecar.NewAutoRequired(sidecar.PathOptions{Targets: s.URL, Routes: w.col}, w.col, w.col, env.logger.With("component", "auto-required"))
		if err != nil {
			return configErrorf("required_interfaces auto: %v", err)
		}
		loops = append(loops, auto.Run)
	}
	return serve(ctx, env, w.server(env, &s.webFlags, handler), parts{
		loops:       loops,
		afterListen: []func(context.Context) error{w.notifySystemd(env, sidecar.GateStatus(gate))},
		reload:      func() { reload(env, w.col, s, func(c *cli) reloadable { return &c.Sidecar }) },
	})
}

// runServing validates a serving command and runs it until SIGINT or
// SIGTERM.
func runServing(env *runEnv, c interface {
	validate(*runEnv) error
	run(context.Context, *runEnv) error
}) error {
	if err := c.validate(env); err != nil {
		return err
	}
	if env.configChecked() {
		return nil
	}
	ctx, stop := signalContext()
	defer stop()
	return c.run(ctx, env)
}

// signalContext ends on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// shutdownGrace bounds how long SIGTERM waits for the parts to stop,
// well inside Kubernetes' default 30s grace period.
const shutdownGrace = 8 * time.Second

// parts are what a long-running command runs besides the HTTP server.
type parts struct {
	loops       []func(context.Context) error // run until ctx ends
	afterListen []func(context.Context) error // started once the listeners are open
	reload      func()                        // on SIGHUP
}

// serve opens the listeners, runs the HTTP server and the parts until ctx
// ends or one of them fails, then shuts everything down and waits for it.
func serve(ctx context.Context, env *runEnv, srv *sidecar.Server, p parts) error {
	if err := srv.Listen(); err != nil {
		return err
	}
	if env.listening != nil {
		env.listening()
	}
	// Registered before serving: once /ready answers, SIGHUP reloads.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	all := append(append([]func(context.Context) error{}, p.loops...), p.afterListen...)
	errc := make(chan error, len(all)+1)
	for _, loop := range all {
		go func() { errc <- loop(ctx) }()
	}
	go func() { errc <- srv.Serve() }()
	var first error
	pending := len(all) + 1
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err := <-errc:
			pending--
			if err == nil {
				continue // a part with nothing to do (no NOTIFY_SOCKET)
			}
			first = err
			break wait
		case <-hup:
			env.logger.Info("SIGHUP: reloading configuration")
			p.reload()
		}
	}
	env.logger.Info("shutting down")
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = srv.Shutdown(shutdownCtx) // waiters get 503 before the server stops accepting
	cancel()
	// Every part stops on cancel; the bound only guards against one that
	// hangs (a vCenter logout is itself bounded well below it).
	giveUp := time.After(shutdownGrace)
	for range pending {
		select {
		case err := <-errc:
			if err != nil && first == nil {
				first = err
			}
		case <-giveUp:
			env.logger.Error("shutdown: parts still running; exiting anyway", "after", shutdownGrace)
			return first
		}
	}
	if first != nil {
		return first
	}
	env.logger.Info("stopped")
	return nil
}

// daemons export the metrics of every controlled hyper2kvm daemon as one
// collector: each describes the same families, with a socket label.
type daemons []*sidecar.Daemon

func (ds daemons) Describe(ch chan<- *prometheus.Desc) { ds[0].Describe(ch) }

func (ds daemons) Collect(ch chan<- prometheus.Metric) {
	for _, d := range ds {
		d.Collect(ch)
	}
}
