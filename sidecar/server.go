package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

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
	// No WriteTimeout: long-polls and event streams set their own write
	// deadlines, as /metrics does. An idle keep-alive connection costs
	// about 20 KB: it is dropped after 30s (Prometheus reconnects at its
	// next scrape), and Listen bounds how many stay open.
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	if o.MaxConnections > 0 {
		srv.ConnState = trackConnState
	}
	return &Server{opts: o, srv: srv}
}

// Listen opens every listen address, each bounded to MaxConnections.
func (s *Server) Listen() error {
	for _, addr := range s.opts.ListenAddresses {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range s.listeners {
				l.Close()
			}
			s.listeners = nil
			return fmt.Errorf("listen: %w", err)
		}
		if s.opts.MaxConnections > 0 {
			l = limitConnections(l, s.opts.MaxConnections, s.opts.Logger)
		}
		s.listeners = append(s.listeners, l)
	}
	return nil
}

// Serve serves on the listeners Listen opened until Shutdown; it returns
// nil after Shutdown.
func (s *Server) Serve() error {
	addrs, file := s.opts.ListenAddresses, s.opts.WebConfigFile
	err := web.ServeMultiple(s.listeners, s.srv, &web.FlagConfig{WebListenAddresses: &addrs, WebConfigFile: &file}, s.opts.Logger)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown answers waiting long-polls (503) and ends event streams, then
// stops the server, waiting for its handlers until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.opts.Ready != nil {
		s.opts.Ready.Close()
	}
	return s.srv.Shutdown(ctx)
}

// Handler is the server's handler, to serve it elsewhere (tests).
func (s *Server) Handler() http.Handler { return s.srv.Handler }
