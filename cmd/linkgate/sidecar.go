package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/linkgate/linkgate/probe"
	"github.com/linkgate/linkgate/sidecar"
	"github.com/prometheus/client_golang/prometheus"
)

// gateFlags choose the readiness checks and their damping.
type gateFlags struct {
	StableFor    time.Duration `name:"gate.stable-for" default:"2s" help:"Turn ready only after every check held this long (flap damping; 0 allowed)."`
	Addresses    string        `name:"gate.addresses" placeholder:"FAMILY" help:"Also require a global address on each required interface: inet, inet6 or both."`
	DefaultRoute string        `name:"gate.default-route" placeholder:"FAMILY" help:"Also require a default route: inet, inet6 or both."`
}

// notifyFlags configure webhooks on gate transitions.
type notifyFlags struct {
	WebhookURL []string `name:"notify.webhook-url" placeholder:"URL" help:"POST a JSON document on every gate transition; repeatable. Prefer the config file or environment for URLs with tokens."`
	// Checked in validate, not a kong enum: kong's enum error echoes the
	// value, and a misplaced webhook URL lands here.
	WebhookFormat string `name:"notify.webhook-format" default:"generic" help:"Webhook payload: generic, slack or discord."`
}

type sidecarCmd struct {
	webFlags       `embed:""`
	collectorFlags `embed:""`
	networkFlags   `embed:""`
	vcenterFlags   `embed:""`
	gateFlags      `embed:""`
	notifyFlags    `embed:""`

	// exporter: these are an exporter's settings (no gate, so no
	// required_interfaces: auto).
	exporter bool
}

func (s *sidecarCmd) autoRequired() bool {
	return len(s.RequiredInterfaces) == 1 && s.RequiredInterfaces[0] == "auto"
}

// validate checks every setting of the sidecar (and of check and demo).
func (s *sidecarCmd) validate(env *runEnv) (func(string) bool, error) {
	filter, err := env.deviceFilter(&s.collectorFlags)
	if err != nil {
		return nil, err
	}
	if err := env.validateWeb(&s.webFlags); err != nil {
		return nil, err
	}
	if err := env.validateNetwork(&s.networkFlags, &s.collectorFlags, !s.exporter, len(s.URL) > 0); err != nil {
		return nil, err
	}
	if err := env.validateVCenter(&s.vcenterFlags, &s.networkFlags); err != nil {
		return nil, err
	}
	for _, f := range []struct{ flag, value string }{{"gate.addresses", s.Addresses}, {"gate.default-route", s.DefaultRoute}} {
		if f.value == "" {
			continue
		}
		if _, err := sidecar.ParseFamilies(f.value); err != nil {
			return nil, env.invalid(f.flag, "%v", err)
		}
	}
	if _, err := s.checksConfig(nil); err != nil {
		return nil, err
	}
	if s.StableFor < 0 {
		return nil, env.invalid("gate.stable-for", "want a duration of 0 or more like 2s, got %s", s.StableFor)
	}
	for _, raw := range s.WebhookURL {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, env.invalid("notify.webhook-url", "want an http(s) URL, got %s (the rest is not shown: a webhook URL holds a token)", redactWebhook(raw))
		}
	}
	switch sidecar.WebhookFormat(s.WebhookFormat) {
	case "", sidecar.WebhookGeneric, sidecar.WebhookSlack, sidecar.WebhookDiscord: // "": no notifications (check)
	default:
		return nil, env.invalid("notify.webhook-format", "want generic, slack or discord (the value is not shown: it may hold a webhook URL)")
	}
	return filter, nil
}

// checksConfig is the gate's composition from flags. routes may be nil
// while only validating.
func (s *sidecarCmd) checksConfig(routes sidecar.RouteLookup) (sidecar.Config, error) {
	cfg := sidecar.Config{VCenter: len(s.URL) > 0, ProbeInterval: s.Interval}
	var err error
	if s.Addresses != "" {
		if cfg.Addresses, err = sidecar.ParseFamilies(s.Addresses); err != nil {
			return cfg, configErrorf("--gate.addresses: %v", err)
		}
	}
	if s.DefaultRoute != "" {
		if cfg.DefaultRoute, err = sidecar.ParseFamilies(s.DefaultRoute); err != nil {
			return cfg, configErrorf("--gate.default-route: %v", err)
		}
	}
	if len(s.URL) > 0 && routes != nil {
		cfg.Path = sidecar.PathOptions{Targets: s.URL, Routes: routes}
	}
	return cfg, nil
}

// checks builds the readiness checks. Without network monitoring the gate
// does not look at links (network_monitor.enabled: false).
func (s *sidecarCmd) checks(routes sidecar.RouteLookup) ([]sidecar.Check, error) {
	cfg, err := s.checksConfig(routes)
	if err != nil {
		return nil, err
	}
	checks, err := sidecar.Checks(cfg)
	if err != nil {
		return nil, configErrorf("checks: %v", err)
	}
	if !s.Monitor {
		checks = slices.DeleteFunc(checks, func(c sidecar.Check) bool { return c.Name() == sidecar.CheckLinks })
	}
	return checks, nil
}

// vcenterSource adapts the prober to what the gate reads.
type vcenterSource struct{ p *probe.Prober }

func (v vcenterSource) VCenterStatus() ([]sidecar.VCenterStatus, <-chan struct{}) {
	st, changed := v.p.Status()
	return toVCenterStatus(st), changed
}

func toVCenterStatus(st []probe.Status) []sidecar.VCenterStatus {
	out := make([]sidecar.VCenterStatus, len(st))
	for i, s := range st {
		out[i] = sidecar.VCenterStatus{
			Target: s.Target, Up: s.Up, LastSuccess: s.LastSuccess,
			Class: string(s.Class), Kind: s.Kind, Reason: s.Reason,
			Permanent: s.Permanent, Paused: s.Paused,
		}
	}
	return out
}

func (s *sidecarCmd) Run(env *runEnv) error {
	filter, err := s.validate(env)
	if err != nil {
		return err
	}
	if env.configChecked() {
		return nil
	}
	ctx, stop := signalContext()
	defer stop()
	return s.run(ctx, env, filter)
}

// startWatchers builds what every serving command runs: the collector and,
// with a vCenter target, the probe, which starts after the collector's
// first dump. reg gets the probe's metrics; the collector is served as a
// fast writer (see metricsHandler).
func (s *sidecarCmd) startWatchers(env *runEnv, filter func(string) bool, reg *prometheus.Registry) (*collector.Collector, *probe.Prober, []func(context.Context) error, error) {
	required := s.RequiredInterfaces
	if s.autoRequired() {
		required = nil // filled in from the route to vCenter
	}
	col, err := collector.New(collector.Options{
		NetNS:          s.NetNS,
		Required:       required,
		DeviceFilter:   filter,
		VerifyInterval: s.verifyInterval(),
		Logger:         env.logger.With("component", "collector"),
	})
	if err != nil {
		return nil, nil, nil, configErrorf("%s: %v", env.origin("netns"), err)
	}
	prober, err := env.newProber(&s.vcenterFlags, &s.networkFlags, col)
	if err != nil {
		return nil, nil, nil, err
	}
	loops := []func(context.Context) error{col.Run}
	if prober != nil {
		reg.MustRegister(prober)
		loops = append(loops, afterSync(col, prober.Run))
	}
	return col, prober, loops, nil
}

// run starts the collector, probe, gate, notifications and HTTP server and
// blocks until ctx ends (SIGTERM) or one of them fails.
func (s *sidecarCmd) run(ctx context.Context, env *runEnv, filter func(string) bool) error {
	reg := newRegistry()
	col, prober, loops, err := s.startWatchers(env, filter, reg)
	if err != nil {
		return err
	}
	checks, err := s.checks(col)
	if err != nil {
		return err
	}
	gopts := sidecar.GateOptions{
		Snapshots: col,
		Checks:    checks,
		StableFor: s.StableFor,
		Logger:    env.logger.With("component", "gate"),
	}
	if prober != nil {
		gopts.VCenter = vcenterSource{prober}
	}
	gate, err := sidecar.NewGate(gopts)
	if err != nil {
		return configErrorf("gate: %v", err)
	}
	handler := sidecar.NewHandler(gate, sidecar.HandlerOptions{})

	loops = append(loops, gate.Run)
	reg.MustRegister(gate, handler)
	if len(s.WebhookURL) > 0 {
		hooks := make([]sidecar.Webhook, len(s.WebhookURL))
		for i, u := range s.WebhookURL {
			hooks[i] = sidecar.Webhook{URL: u, Format: sidecar.WebhookFormat(s.WebhookFormat)}
		}
		wh, err := sidecar.NewWebhooks(gate, sidecar.WebhookOptions{Hooks: hooks, Logger: env.logger.With("component", "webhook")})
		if err != nil {
			return env.invalid("notify.webhook-url", "%v", err)
		}
		reg.MustRegister(wh)
		loops = append(loops, wh.Run)
	}
	if s.autoRequired() {
		auto, err := sidecar.NewAutoRequired(sidecar.PathOptions{Targets: s.URL, Routes: col}, col, col, env.logger.With("component", "auto-required"))
		if err != nil {
			return configErrorf("required_interfaces auto: %v", err)
		}
		loops = append(loops, auto.Run)
	}

	srv := newServer(env, &s.webFlags, reg, []expositionWriter{col}, col.Health, handler.Register)
	return serve(ctx, env, srv, &s.webFlags, serveOptions{
		loops: loops,
		// Once listening: tell systemd, which then watches the event loop.
		afterListen: []func(context.Context) error{func(ctx context.Context) error {
			return sidecar.NotifySystemd(ctx, sidecar.SystemdOptions{Gate: gate, Alive: col.Alive, Logger: env.logger.With("component", "systemd")})
		}},
		// Waiters get 503 before the server stops accepting.
		beforeShutdown: handler.Close,
		reload:         func() { s.reload(env, col) },
	})
}

// reload re-reads the configuration file on SIGHUP. An invalid file keeps
// the running configuration. What can change at run time is applied
// (required interfaces, log level); other changes are named as needing a
// restart.
func (s *sidecarCmd) reload(env *runEnv, col *collector.Collector) {
	reloadConfig(env, col, s, func(c *cli) sidecarCmd { return c.Sidecar })
}

// reloadConfig re-parses the command line (so the file and environment are
// read again) and applies what can change at run time to cur.
func reloadConfig(env *runEnv, col *collector.Collector, s *sidecarCmd, pick func(*cli) sidecarCmd) {
	p, code := parse(env.args, discard{}, &logWriter{env.logger})
	if code >= 0 {
		env.logger.Error("configuration reload failed; keeping the running configuration")
		return
	}
	next := pick(&p.cli)
	if env.demo {
		next = *s // demo's settings come from flags only
	}
	nenv := *env
	nenv.kctx, nenv.res = p.kctx, p.res
	if _, err := next.validate(&nenv); err != nil {
		env.logger.Error("configuration reload failed; keeping the running configuration", "err", err)
		return
	}
	env.level.Set(parseLevel(p.cli.LogLevel))
	if !s.autoRequired() && !next.autoRequired() {
		col.SetRequired(next.RequiredInterfaces)
		s.RequiredInterfaces = next.RequiredInterfaces
	}
	var restart []string
	if !slices.Equal(next.RequiredInterfaces, s.RequiredInterfaces) {
		restart = append(restart, "required_interfaces (auto)")
	}
	if fmt.Sprint(next.webFlags) != fmt.Sprint(s.webFlags) {
		restart = append(restart, "web")
	}
	if fmt.Sprint(next.vcenterFlags) != fmt.Sprint(s.vcenterFlags) {
		restart = append(restart, "vcenter")
	}
	if fmt.Sprint(next.gateFlags) != fmt.Sprint(s.gateFlags) || fmt.Sprint(next.notifyFlags) != fmt.Sprint(s.notifyFlags) {
		restart = append(restart, "gate/notify")
	}
	if next.NetNS != s.NetNS || next.DeviceInclude != s.DeviceInclude || next.DeviceExclude != s.DeviceExclude ||
		next.MaxWait != s.MaxWait || next.PauseOnDown != s.PauseOnDown || next.Monitor != s.Monitor {
		restart = append(restart, "collector/network")
	}
	if len(restart) > 0 {
		env.logger.Warn("configuration reloaded; some changes take effect only after a restart", "sections", restart)
		return
	}
	env.logger.Info("configuration reloaded", "required_interfaces", col.Snapshot().Network.Required)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// logWriter turns parse errors into log lines during a reload.
type logWriter struct {
	l interface{ Error(string, ...any) }
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.l.Error("configuration reload", "err", string(trimNL(p)))
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

// waitClient is for `wait --url`: the sidecar is local (same pod or
// host), so HTTP_PROXY from the environment must not apply.
func waitClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if caFile != "" {
		pool, err := readCABundle(caFile)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}

// readCABundle reads a PEM CA bundle (--vcenter.ca-file, wait
// --tls.ca-file) under the size rule of internal/boundedfile.
func readCABundle(path string) (*x509.CertPool, error) {
	pem, err := boundedfile.Read(path, boundedfile.CABundle)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", path)
	}
	return pool, nil
}

// redactWebhook shows only scheme://host: webhook paths carry tokens.
func redactWebhook(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "<webhook URL>"
	}
	return u.Scheme + "://" + u.Host
}
