package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/linkgate/linkgate/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
)

// ExpositionWriter writes metric families in the text format: the
// collector formats its own series (see metricsHandler).
type ExpositionWriter interface{ WriteText(w io.Writer) error }

// NewRegistry returns a registry holding the process-wide collectors every
// linkgate server exports (build info, process, Go runtime, file reads)
// and cs.
func NewRegistry(cs ...prometheus.Collector) *prometheus.Registry {
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

// ServerOptions configure the HTTP server of the exporter and the sidecar.
type ServerOptions struct {
	// ListenAddresses, WebConfigFile: as --web.listen-address and
	// --web.config.file (exporter-toolkit: TLS, basic auth).
	ListenAddresses []string
	WebConfigFile   string
	// SystemdSocket takes the listeners from systemd socket activation
	// (LISTEN_FDS) instead of ListenAddresses, as node_exporter's
	// --web.systemd-socket.
	SystemdSocket bool
	// HealthListenAddresses also serve /healthz and, with a gate, /ready
	// and /ready/NAME, over plain HTTP without WebConfigFile's TLS and
	// auth: for kubelet probes when the main listener needs credentials.
	// Not /ready/host/ nor /ready/vm/ (probeOnly): those look things up
	// in vCenter for the asker and name its hosts.
	HealthListenAddresses []string
	// MaxConnections bounds the connections open per listen address (see
	// limitedListener); 0: no limit.
	MaxConnections int
	// TelemetryPath serves Gatherer's families, then each Fast writer's.
	TelemetryPath string
	Gatherer      prometheus.Gatherer
	Fast          []ExpositionWriter
	// Health is the liveness behind /healthz.
	Health func() collector.Health
	// Ready is the gate's handler (/ready, /events); nil for the exporter.
	Ready  *Handler
	Logger *slog.Logger
}

// Server is linkgate's HTTP server: landing page, metrics, /healthz and,
// with a gate, /ready and /events.
type Server struct {
	opts      ServerOptions
	srv       *http.Server
	listeners []net.Listener
	health    *http.Server // nil without HealthListenAddresses
	healthLs  []net.Listener
}

// NewServer builds the server; Listen opens its sockets, Serve serves.
func NewServer(o ServerOptions) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	links := []web.LandingLinks{{Address: o.TelemetryPath, Text: "Metrics"}, {Address: "/healthz?verbose", Text: "Health"}}
	if o.Ready != nil {
		o.Ready.Register(mux)
		links = append(links,
			web.LandingLinks{Address: "/ready?verbose", Text: "Readiness gate", Description: "every check, [+] ok or [-] failed: reason"},
			web.LandingLinks{Address: "/events", Text: "Gate transitions", Description: "Server-Sent Events"})
	}
	mux.Handle(o.TelemetryPath, newMetricsHandler(o.Gatherer, o.Logger, o.Fast...))
	mux.Handle("/healthz", HealthzHandler(o.Health, clock.System))
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "linkgate",
		Description: "Kernel network state and vCenter reachability for VM migrations",
		Version:     version.Info(),
		Links:       links,
		Profiling:   "false", // no /debug/pprof here: its links would be 404s
	})
	if err == nil {
		mux.Handle("/", landing)
	}
	s := &Server{opts: o, srv: newHTTPServer(mux, o.MaxConnections)}
	if len(o.HealthListenAddresses) > 0 {
		hmux := http.NewServeMux()
		hmux.Handle("/healthz", HealthzHandler(o.Health, clock.System))
		if o.Ready != nil {
			hmux.Handle("/ready", o.Ready)
			hmux.Handle("/ready/", probeOnly(o.Ready))
		}
		s.health = newHTTPServer(hmux, o.MaxConnections)
	}
	return s
}

func newHTTPServer(h http.Handler, maxConns int) *http.Server {
	// No WriteTimeout: long-polls and event streams set their own write
	// deadlines, as /metrics does. An idle keep-alive connection costs
	// about 20 KB: it is dropped after 30s (Prometheus reconnects at its
	// next scrape), and Listen bounds how many stay open.
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	if maxConns > 0 {
		srv.ConnState = trackConnState
	}
	return srv
}

// Listen opens every listen address (or takes systemd's sockets), each
// bounded to MaxConnections.
func (s *Server) Listen() error {
	var err error
	if s.opts.SystemdSocket {
		s.listeners, err = systemdListeners()
	} else {
		s.listeners, err = listenAll(s.opts.ListenAddresses)
	}
	if err == nil && s.health != nil {
		if s.healthLs, err = listenAll(s.opts.HealthListenAddresses); err != nil {
			closeAll(s.listeners)
		}
	}
	if err != nil {
		s.listeners, s.healthLs = nil, nil
		return err
	}
	if s.opts.MaxConnections > 0 {
		for _, ls := range [][]net.Listener{s.listeners, s.healthLs} {
			for i, l := range ls {
				ls[i] = limitConnections(l, s.opts.MaxConnections, s.opts.Logger)
			}
		}
	}
	return nil
}

func listenAll(addrs []string) ([]net.Listener, error) {
	var out []net.Listener
	for _, addr := range addrs {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("listen: %w", err)
		}
		out = append(out, l)
	}
	return out, nil
}

// systemdListeners are the sockets systemd passed (LISTEN_FDS), as
// node_exporter takes them for --web.systemd-socket.
func systemdListeners() ([]net.Listener, error) {
	ls, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("systemd socket activation: %w", err)
	}
	var out []net.Listener
	for _, l := range ls {
		if l != nil { // a passed fd that is not a listening socket
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("systemd socket activation: systemd passed no listening socket (LISTEN_FDS unset or empty; is the .socket unit active?)")
	}
	return out, nil
}

func closeAll(ls []net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// Addrs are the addresses the main listeners listen on (after Listen).
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Serve serves on the listeners Listen opened until Shutdown; it returns
// nil after Shutdown.
func (s *Server) Serve() error {
	errc := make(chan error, 1+len(s.healthLs))
	for _, l := range s.healthLs {
		go func() { errc <- s.health.Serve(l) }()
	}
	addrs := make([]string, len(s.listeners))
	for i, l := range s.listeners {
		addrs[i] = l.Addr().String()
	}
	file := s.opts.WebConfigFile
	go func() {
		errc <- web.ServeMultiple(s.listeners, s.srv, &web.FlagConfig{WebListenAddresses: &addrs, WebConfigFile: &file}, s.opts.Logger)
	}()
	var first error
	for range 1 + len(s.healthLs) {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && first == nil {
			first = err
			// One listener failing ends linkgate: stop the others.
			_ = s.srv.Close()
			if s.health != nil {
				_ = s.health.Close()
			}
		}
	}
	return first
}

// Shutdown answers waiting long-polls (503) and ends event streams, then
// stops the server, waiting for its handlers until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.opts.Ready != nil {
		s.opts.Ready.Close()
	}
	if s.health != nil {
		_ = s.health.Shutdown(ctx)
	}
	return s.srv.Shutdown(ctx)
}

// Handler is the server's handler, to serve it elsewhere (tests).
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// probeOnly serves h's /ready/NAME but not /ready/host/ or /ready/vm/:
// the health listener has no TLS and no auth, and those would have
// linkgate look VMs up in vCenter, and show its hosts and datastores, to
// whoever reaches it.
func probeOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; strings.HasPrefix(p, "/ready/host/") || strings.HasPrefix(p, "/ready/vm/") {
			http.Error(w, "not served on the health listener: /ready/host/ and /ready/vm/ are on the main listener, behind --web.config.file", http.StatusNotFound)
			return
		}
		h.ServeHTTP(w, r)
	})
}
