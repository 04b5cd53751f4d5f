package main

import (
	"context"
	"errors"
	"os"

	"github.com/linkgate/linkgate/probe"
)

// passwordEnv is the only other place a vCenter password may come from
// besides --vcenter.password-file: never a flag, so never in argv.
const passwordEnv = "LINKGATE_VCENTER_PASSWORD"

// probeFlagOf maps probe.Config fields to the flags that set them.
var probeFlagOf = map[string]string{
	"URLs":         "vcenter.url",
	"User":         "vcenter.user",
	"PasswordFile": "vcenter.password-file",
	"CAFile":       "vcenter.ca-file",
	"Thumbprint":   "vcenter.thumbprint",
	"Insecure":     "vcenter.insecure",
	"Interval":     "vcenter.interval",
	"Timeout":      "vcenter.timeout",
	"MaxRetries":   "vcenter.max-retries",
	"BaseBackoff":  "vcenter.base-backoff",
	"MaxBackoff":   "vcenter.max-backoff",

	"MaxFailedLogins":   "vcenter.max-failed-logins",
	"FailedLoginWindow": "vcenter.failed-login-window",
}

// probeConfig turns flags into the probe's configuration.
func probeConfig(v *vcenterFlags, n *networkFlags) probe.Config {
	cfg := probe.DefaultConfig()
	cfg.URLs = v.URL
	cfg.User = v.User
	cfg.PasswordFile = v.PasswordFile
	cfg.Password = os.Getenv(passwordEnv)
	cfg.CAFile = v.CAFile
	cfg.Thumbprint = v.Thumbprint
	cfg.Insecure = v.Insecure
	cfg.Interval = v.Interval
	cfg.Timeout = v.Timeout
	cfg.MaxRetries = v.MaxRetries
	cfg.BaseBackoff = v.BaseBackoff
	cfg.MaxBackoff = v.MaxBackoff
	cfg.DisableJitter = !v.Jitter
	cfg.MaxFailedLogins = v.MaxFailedLogins
	cfg.FailedLoginWindow = v.FailedLoginWindow
	cfg.MaxNetworkWait = n.MaxWait
	cfg.PauseOnNetworkDown = n.PauseOnDown && n.Monitor
	return cfg
}

// newProber builds the vCenter probe, or returns nil without targets.
// network is nil when network monitoring is off.
func (e *runEnv) newProber(v *vcenterFlags, n *networkFlags, network probe.Network, opts ...probe.Option) (*probe.Prober, error) {
	if len(v.URL) == 0 {
		return nil, nil
	}
	cfg := probeConfig(v, n)
	if err := cfg.Validate(); err != nil {
		return nil, e.probeConfigError(err)
	}
	if !n.Monitor {
		network = nil
	}
	opts = append([]probe.Option{probe.WithLogger(e.logger.With("component", "probe"))}, opts...)
	p, err := probe.New(cfg, network, opts...)
	if err != nil {
		return nil, e.probeConfigError(err)
	}
	return p, nil
}

func (e *runEnv) probeConfigError(err error) error {
	var ce *probe.ConfigError
	if errors.As(err, &ce) {
		if flag, ok := probeFlagOf[ce.Field]; ok {
			return e.invalid(flag, "%v", ce.Err)
		}
	}
	return configErrorf("vcenter: %v", err)
}

// afterSync starts run once the collector has its first kernel dump, so
// the probe does not mistake the empty initial snapshot for an outage.
func afterSync(col interface{ Synced() <-chan struct{} }, run func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		select {
		case <-col.Synced():
			return run(ctx)
		case <-ctx.Done():
			return nil
		}
	}
}
