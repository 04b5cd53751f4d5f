package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/sidecar"
)

// waitCmd blocks until ready, as a container entrypoint prefix:
// `linkgate wait --url http://localhost:9977/ready && exec migrate ...`.
// Exit codes as nm-online: 0 ready, 1 timed out, 2 error.
type waitCmd struct {
	URL       string        `name:"url" placeholder:"URL" help:"Long-poll a running sidecar's /ready (e.g. http://localhost:9977/ready)."`
	Timeout   time.Duration `name:"timeout" help:"Give up after this long (default: --network.max-wait, i.e. max_network_wait_s)."`
	Interface []string      `name:"interface" short:"i" placeholder:"IF[:STATE]" help:"Local mode: wait until IF reaches operstate STATE (notpresent<down<lowerlayerdown<testing<dormant<up; default up); repeatable. None: any non-loopback link up."`
	Any       bool          `name:"any" help:"Local mode: one of the interfaces is enough."`
	IPv4      bool          `name:"ipv4" short:"4" help:"Local mode: also require a global IPv4 address."`
	IPv6      bool          `name:"ipv6" short:"6" help:"Local mode: also require a global IPv6 address."`
	NetNS     string        `name:"netns" placeholder:"PATH" help:"Local mode: namespace to watch."`
	CAFile    string        `name:"tls.ca-file" placeholder:"FILE" help:"--url over https: PEM CA bundle to verify the sidecar (when its --web.config.file enables TLS with a private CA)."`
	MaxWait   time.Duration `name:"network.max-wait" default:"300s" help:"Default for --timeout (max_network_wait_s)."`
}

func (w *waitCmd) Run(env *runEnv) error {
	timeout, timeoutFlag := w.Timeout, "timeout"
	if !env.isSet("timeout") {
		timeout, timeoutFlag = w.MaxWait, "network.max-wait"
	}
	if timeout < 0 {
		return &exitError{sidecar.ExitError, env.invalid(timeoutFlag, "want a duration of 0 (look once) or more like 30s, got %s", timeout)}
	}
	local := sidecar.LocalWait{Any: w.Any, IPv4: w.IPv4, IPv6: w.IPv6}
	for _, s := range w.Interface {
		r, err := sidecar.ParseLinkRequirement(s)
		if err != nil {
			return &exitError{sidecar.ExitError, env.invalid("interface", "%v", err)}
		}
		local.Links = append(local.Links, r)
	}
	if w.URL != "" && (len(w.Interface) > 0 || w.Any || w.IPv4 || w.IPv6 || w.NetNS != "") {
		return &exitError{sidecar.ExitError, configErrorf("--url waits on a sidecar; --interface, --any, -4, -6 and --netns are for local mode")}
	}
	client, err := waitClient(w.CAFile)
	if err != nil {
		return &exitError{sidecar.ExitError, env.invalid("tls.ca-file", "%v", err)}
	}
	if env.configChecked() {
		return nil
	}
	ctx, stop := signalContext()
	defer stop()

	if w.URL != "" {
		err = sidecar.WaitURL(ctx, client, w.URL, timeout)
	} else {
		err = w.waitLocal(ctx, env, local, timeout)
	}
	code := sidecar.ExitCode(err)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("wait interrupted")
	}
	return &exitError{code, err}
}

// syncTimeout bounds the wait for the collector's first dump.
const syncTimeout = 10 * time.Second

func (w *waitCmd) waitLocal(ctx context.Context, env *runEnv, local sidecar.LocalWait, timeout time.Duration) error {
	col, err := collector.New(collector.Options{NetNS: w.NetNS, Logger: env.logger.With("component", "collector")})
	if err != nil {
		return err
	}
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	var runErr error
	go func() { defer wg.Done(); runErr = col.Run(cctx) }()
	// The first kernel dump takes milliseconds; wait for it so that even
	// --timeout 0 judges real state, not the empty initial snapshot.
	select {
	case <-col.Synced():
		err = sidecar.WaitLocal(cctx, col, local, timeout)
	case <-time.After(syncTimeout):
		err = fmt.Errorf("no kernel network state after %s", syncTimeout)
	case <-cctx.Done():
		err = cctx.Err()
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		return runErr
	}
	return err
}

// checkCmd evaluates every check once and prints a table or JSON.
type checkCmd struct {
	collectorFlags `embed:""`
	networkFlags   `embed:""`
	vcenterFlags   `embed:""`
	gateFlags      `embed:""`
	Output         string        `name:"output" short:"o" default:"table" enum:"table,json" help:"Output format: ${enum}."`
	CheckTimeout   time.Duration `name:"check.timeout" default:"30s" help:"Bound on the whole check."`
}

func (c *checkCmd) Run(env *runEnv) error {
	s := &sidecarCmd{
		webFlags:       webFlags{ListenAddress: []string{":0"}, TelemetryPath: "/metrics"},
		collectorFlags: c.collectorFlags, networkFlags: c.networkFlags, vcenterFlags: c.vcenterFlags, gateFlags: c.gateFlags,
	}
	if _, err := s.validate(env); err != nil {
		return &exitError{2, err}
	}
	if env.configChecked() {
		return nil
	}
	ctx, stop := signalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.CheckTimeout)
	defer cancel()
	report, err := c.evaluate(ctx, env, s)
	if err != nil {
		return &exitError{2, fmt.Errorf("check: %w", err)}
	}
	if c.Output == "json" {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return &exitError{2, err}
		}
	} else if err := report.WriteTable(env.stdout); err != nil {
		return &exitError{2, err}
	}
	if !report.Ready {
		return &exitError{1, nil}
	}
	return nil
}

// evaluate takes one snapshot of the kernel and probes vCenter once.
func (c *checkCmd) evaluate(ctx context.Context, env *runEnv, s *sidecarCmd) (sidecar.Report, error) {
	required := s.RequiredInterfaces
	if s.autoRequired() {
		required = nil // the path check covers the route to vCenter
	}
	col, err := collector.New(collector.Options{NetNS: s.NetNS, Required: required, Logger: env.logger.With("component", "collector")})
	if err != nil {
		return sidecar.Report{}, err
	}
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	var runErr error
	go func() { defer wg.Done(); runErr = col.Run(cctx) }()
	defer func() { cancel(); wg.Wait() }()
	select {
	case <-col.Synced():
	case <-ctx.Done():
		cancel()
		wg.Wait()
		if runErr != nil {
			return sidecar.Report{}, runErr
		}
		return sidecar.Report{}, fmt.Errorf("no kernel state: %w", ctx.Err())
	}
	in := &sidecar.Input{Snapshot: col.Snapshot()}
	prober, err := env.newProber(&s.vcenterFlags, &s.networkFlags, nil)
	if err != nil {
		return sidecar.Report{}, err
	}
	if prober != nil {
		in.VCenter = toVCenterStatus(prober.ProbeOnce(ctx))
	}
	in.Now = time.Now()
	checks, err := s.checks(col)
	if err != nil {
		return sidecar.Report{}, err
	}
	return sidecar.Evaluate(ctx, checks, in), nil
}
