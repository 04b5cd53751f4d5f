package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/sidecar"
)

// checkCmd evaluates every check once and prints a table or JSON.
type checkCmd struct {
	commonFlags    `embed:""`
	collectorFlags `embed:""`
	networkFlags   `embed:""`
	vcenterFlags   `embed:""`
	gateFlags      `embed:""`
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
	if err := c.vcenterFlags.validate(env, &c.networkFlags, nil); err != nil {
		return err
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
	prober, err := c.newProber(env, &c.networkFlags, nil, nil)
	if err != nil {
		return sidecar.Report{}, err
	}
	if prober != nil {
		in.VCenter = prober.ProbeOnce(ctx)
	}
	in.Now = time.Now()
	checks, err := c.checks(env, &c.vcenterFlags, &c.networkFlags, static)
	if err != nil {
		return sidecar.Report{}, err
	}
	return sidecar.Evaluate(ctx, checks, in), nil
}
