package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/linkgate/linkgate/probe"
	"github.com/linkgate/linkgate/sidecar"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
)

type exporterCmd struct {
	webFlags       `embed:""`
	collectorFlags `embed:""`
	networkFlags   `embed:""`
	vcenterFlags   `embed:""`
}

// validateVCenter checks the probe's settings, naming the flag, variable
// or file:line that set a bad one.
func (e *runEnv) validateVCenter(v *vcenterFlags, n *networkFlags) error {
	for _, raw := range v.URL {
		// The probe parses the forms it accepts (https://host[:port]/sdk
		// or a bare host[:port]); here only credentials are refused.
		if strings.Contains(raw, "@") {
			return e.invalid("vcenter.url", "%s: credentials in the URL are not accepted; use --vcenter.user and --vcenter.password-file", redactURL(raw))
		}
	}
	// Read as the probe will, so that a file the probe would refuse
	// fails here with exit code 2, not at the first login.
	if v.PasswordFile != "" {
		b, err := boundedfile.Read(v.PasswordFile, boundedfile.Password)
		if err != nil {
			return e.invalid("vcenter.password-file", "%v", err)
		}
		if strings.TrimRight(string(b), "\r\n") == "" {
			return e.invalid("vcenter.password-file", "%s is empty; want a file holding the vCenter password", v.PasswordFile)
		}
	}
	if v.CAFile != "" {
		if _, err := readCABundle(v.CAFile); err != nil {
			return e.invalid("vcenter.ca-file", "%v", err)
		}
	}
	switch {
	case v.Interval <= 0:
		return e.invalid("vcenter.interval", "want a positive duration like 15s, got %s", v.Interval)
	case v.Timeout <= 0:
		return e.invalid("vcenter.timeout", "want a positive duration like 10s, got %s", v.Timeout)
	case v.MaxRetries < 0:
		return e.invalid("vcenter.max-retries", "want 0 or more, got %d", v.MaxRetries)
	case v.BaseBackoff <= 0:
		return e.invalid("vcenter.base-backoff", "want a positive duration like 2s, got %s", v.BaseBackoff)
	case v.MaxBackoff < v.BaseBackoff:
		return e.invalid("vcenter.max-backoff", "want at least --vcenter.base-backoff (%s), got %s", v.BaseBackoff, v.MaxBackoff)
	}
	if len(v.URL) > 0 {
		if v.PasswordFile == "" && os.Getenv(passwordEnv) == "" {
			return e.invalid("vcenter.password-file", "a vCenter password is needed: set --vcenter.password-file or %s", passwordEnv)
		}
		if err := probeConfig(v, n).Validate(); err != nil {
			return e.vcenterConfigError(v, err)
		}
	}
	return nil
}

// vcenterConfigError names the flag for a probe.ConfigError whose field
// probeFlagOf cannot map: one URL of several (URLs[1]), shown without
// user info, query or fragment.
func (e *runEnv) vcenterConfigError(v *vcenterFlags, err error) error {
	var ce *probe.ConfigError
	if !errors.As(err, &ce) {
		return e.probeConfigError(err)
	}
	var i int
	if _, serr := fmt.Sscanf(ce.Field, "URLs[%d]", &i); serr == nil && i >= 0 && i < len(v.URL) {
		return e.invalid("vcenter.url", "%s: %v (want https://host[:port][/sdk] or host[:port], each once)", redactURL(v.URL[i]), ce.Err)
	}
	switch ce.Field {
	case "User":
		return e.invalid("vcenter.user", "required with --vcenter.url")
	case "Insecure":
		return e.invalid("vcenter.insecure", "contradicts --vcenter.ca-file and --vcenter.thumbprint; pick one way to trust vCenter")
	}
	return e.probeConfigError(err)
}

// redactURL drops user info, query and fragment so a URL is safe to print,
// also for scheme-less "user:pass@host" forms that parse as opaque URLs.
func redactURL(raw string) string {
	// User info ends at the last @ of the authority, which ends at the
	// first / ? or # after the scheme: an @ in the path is not user info.
	start := 0
	if j := strings.Index(raw, "://"); j >= 0 {
		start = j + 3
	}
	end := len(raw)
	if k := strings.IndexAny(raw[start:], "/?#"); k >= 0 {
		end = start + k
	}
	if i := strings.LastIndex(raw[start:end], "@"); i >= 0 {
		raw = raw[:start] + raw[start+i+1:]
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// asSidecar views the exporter's settings as a sidecar's without a gate,
// for the shared configuration reload.
func (x *exporterCmd) asSidecar() sidecarCmd {
	return sidecarCmd{webFlags: x.webFlags, collectorFlags: x.collectorFlags, networkFlags: x.networkFlags, vcenterFlags: x.vcenterFlags,
		notifyFlags: notifyFlags{WebhookFormat: "generic"}, exporter: true}
}

func (x *exporterCmd) Run(env *runEnv) error {
	s := x.asSidecar()
	filter, err := s.validate(env)
	if err != nil {
		return err
	}
	if env.configChecked() {
		return nil
	}
	ctx, stop := signalContext()
	defer stop()
	reg := newRegistry()
	col, _, loops, err := s.startWatchers(env, filter, reg)
	if err != nil {
		return err
	}

	srv := newServer(env, &x.webFlags, reg, []expositionWriter{col}, col.Health)
	return serve(ctx, env, srv, &x.webFlags, serveOptions{
		loops: loops,
		reload: func() {
			cur := x.asSidecar()
			reloadConfig(env, col, &cur, func(c *cli) sidecarCmd { return c.Exporter.asSidecar() })
			x.RequiredInterfaces = cur.RequiredInterfaces
		},
	})
}

func newRegistry(cs ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		versioncollector.NewCollector("linkgate"),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		boundedfile.Collector(),
	)
	reg.MustRegister(cs...)
	return reg
}

// newServer builds the HTTP server: landing page, metrics, liveness, and
// whatever register adds. /metrics serves reg's families and then each
// fast writer's (the collector formats its own series: see metricsHandler).
func newServer(env *runEnv, w *webFlags, reg *prometheus.Registry, fast []expositionWriter, health func() collector.Health, register ...func(*http.ServeMux)) *http.Server {
	mux := http.NewServeMux()
	for _, r := range register {
		r(mux)
	}
	mux.Handle(w.TelemetryPath, newMetricsHandler(reg, env.logger, fast...))
	mux.Handle("/healthz", sidecar.HealthzHandler(health, time.Now))
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "linkgate",
		Description: "Kernel network state and vCenter reachability for VM migrations",
		Version:     version.Info(),
		Links: []web.LandingLinks{
			{Address: w.TelemetryPath, Text: "Metrics"},
			{Address: "/healthz", Text: "Health"},
		},
	})
	if err == nil {
		mux.Handle("/", landing)
	}
	// No WriteTimeout: long-polls and event streams set their own write
	// deadlines, as /metrics does. An idle keep-alive connection costs
	// about 20 KB: it is dropped after 30s (Prometheus reconnects at its
	// next scrape), and serve bounds how many stay open.
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// signalContext ends on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// shutdownGrace bounds how long SIGTERM waits for the parts to stop,
// well inside Kubernetes' default 30s grace period.
const shutdownGrace = 8 * time.Second

// serveOptions are the parts of a long-running command besides HTTP.
type serveOptions struct {
	loops          []func(context.Context) error // run until ctx ends
	afterListen    []func(context.Context) error // started once the listeners are open
	beforeShutdown func()                        // e.g. release long-poll waiters
	reload         func()                        // on SIGHUP
}

// serve opens the listeners, each bounded to --web.max-connections (see
// limitedListener), runs the HTTP server and the loops until ctx ends or
// one of them fails, then shuts everything down and waits for it.
func serve(ctx context.Context, env *runEnv, srv *http.Server, w *webFlags, o serveOptions) error {
	listeners := make([]net.Listener, 0, len(w.ListenAddress))
	for _, addr := range w.ListenAddress {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("listen: %w", err)
		}
		if w.MaxConnections > 0 {
			l = limitConnections(l, int(w.MaxConnections), env.logger)
		}
		listeners = append(listeners, l)
	}
	if w.MaxConnections > 0 {
		srv.ConnState = trackConnState
	}
	// Registered before serving: once /ready answers, SIGHUP reloads.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	all := append(slices.Clone(o.loops), o.afterListen...)
	errc := make(chan error, len(all)+1)
	for _, loop := range all {
		go func() { errc <- loop(ctx) }()
	}
	go func() {
		err := web.ServeMultiple(listeners, srv, &web.FlagConfig{WebListenAddresses: &w.ListenAddress, WebConfigFile: &w.ConfigFile}, env.logger)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
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
			if o.reload == nil {
				env.logger.Warn("SIGHUP: this command has nothing to reload")
				continue
			}
			env.logger.Info("SIGHUP: reloading configuration")
			o.reload()
		}
	}
	env.logger.Info("shutting down")
	if o.beforeShutdown != nil {
		o.beforeShutdown()
	}
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = srv.Shutdown(shutdownCtx)
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
