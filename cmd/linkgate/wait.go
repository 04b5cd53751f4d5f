package main

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/linkgate/linkgate/internal/redact"
	"github.com/linkgate/linkgate/sidecar"
)

// waitCmd blocks until ready, as a container entrypoint prefix:
// `linkgate wait --url http://localhost:9977/ready && exec migrate ...`.
// Exit codes as nm-online: 0 ready, 1 timed out, 2 error.
type waitCmd struct {
	commonFlags `embed:""`
	URL         string        `name:"url" placeholder:"URL" help:"Long-poll a running sidecar's /ready (e.g. http://localhost:9977/ready)."`
	Timeout     time.Duration `name:"timeout" help:"Give up after this long (default: --network.max-wait, i.e. max_network_wait_s)."`
	Interface   []string      `name:"interface" short:"i" placeholder:"IF[:STATE]" help:"Local mode: wait until IF reaches operstate STATE (notpresent<down<lowerlayerdown<testing<dormant<up; default up); repeatable. None: any non-loopback link up."`
	Any         bool          `name:"any" help:"Local mode: one of the interfaces is enough."`
	IPv4        bool          `name:"ipv4" short:"4" env:"LINKGATE_IPV4" help:"Local mode: also require a global IPv4 address."`
	IPv6        bool          `name:"ipv6" short:"6" env:"LINKGATE_IPV6" help:"Local mode: also require a global IPv6 address."`
	NetNS       string        `name:"netns" placeholder:"PATH" help:"Local mode: namespace to watch."`
	AuthUser    string        `name:"basic-auth.user" placeholder:"USER" help:"--url behind basic auth (the sidecar's --web.config.file): the user name."`
	AuthFile    string        `name:"basic-auth.password-file" placeholder:"FILE" help:"--url behind basic auth: file holding the password (read at each request). User info in --url is refused."`
	CAFile      string        `name:"tls.ca-file" placeholder:"FILE" help:"--url over https: PEM CA bundle to verify the sidecar (when its --web.config.file enables TLS with a private CA)."`
	MaxWait     time.Duration `name:"network.max-wait" default:"300s" help:"Default for --timeout (max_network_wait_s)."`
}

func (w *waitCmd) Run(env *runEnv) error {
	timeout, timeoutFlag := w.Timeout, "timeout"
	if !env.isSet("timeout") {
		timeout, timeoutFlag = w.MaxWait, "network.max-wait"
	}
	if timeout < 0 {
		return env.invalid(timeoutFlag, "want a duration of 0 (look once) or more like 30s, got %s", timeout)
	}
	local := sidecar.LocalWait{Any: w.Any, IPv4: w.IPv4, IPv6: w.IPv6}
	for _, s := range w.Interface {
		r, err := sidecar.ParseLinkRequirement(s)
		if err != nil {
			return env.invalid("interface", "%v", err)
		}
		local.Links = append(local.Links, r)
	}
	if w.URL != "" && (len(w.Interface) > 0 || w.Any || w.IPv4 || w.IPv6 || w.NetNS != "") {
		return configErrorf("--url waits on a sidecar; --interface, --any, -4, -6 and --netns are for local mode")
	}
	if w.URL == "" && (w.AuthUser != "" || w.CAFile != "") {
		return configErrorf("--basic-auth.* and --tls.ca-file are for --url")
	}
	if (w.AuthUser == "") != (w.AuthFile == "") {
		return configErrorf("--basic-auth.user and --basic-auth.password-file go together")
	}
	if w.AuthFile != "" {
		if _, err := boundedfile.ReadPassword(w.AuthFile); err != nil {
			return env.invalid("basic-auth.password-file", "%v", err)
		}
	}
	client, err := waitClient(w.CAFile)
	if err != nil {
		return env.invalid("tls.ca-file", "%v", err)
	}
	if env.configChecked() {
		return nil
	}
	ctx, stop := signalContext()
	defer stop()

	// Say what is awaited, then every 10s why it is not there yet: an
	// entrypoint prefix must not look hung.
	progress := func(waited time.Duration, why string) {
		env.logger.Info("still waiting", "waited", waited, "timeout", timeout, "why", why)
	}
	if w.URL != "" {
		env.logger.Info("waiting for the readiness gate", "url", redact.URL(w.URL), "timeout", timeout)
		err = sidecar.WaitURL(ctx, w.URL, sidecar.WaitOptions{Client: client, Timeout: timeout,
			User: w.AuthUser, PasswordFile: w.AuthFile, Progress: progress})
	} else {
		env.logger.Info("waiting for local links", "interfaces", w.Interface, "timeout", timeout)
		err = w.waitLocal(ctx, env, local, timeout, progress)
	}
	if err != nil && ctx.Err() != nil {
		err = errors.New("wait interrupted")
	}
	return waitExit(err)
}

func (w *waitCmd) waitLocal(ctx context.Context, env *runEnv, local sidecar.LocalWait, timeout time.Duration, progress func(time.Duration, string)) error {
	col, err := collector.New(collector.Options{NetNS: w.NetNS, Logger: env.logger.With("component", "collector")})
	if err != nil {
		return err
	}
	// Judge real state, even with --timeout 0: Start returns after the
	// first kernel dump, not with the empty initial snapshot.
	stop, err := col.Start(ctx)
	if err != nil {
		return err
	}
	err = sidecar.WaitLocal(ctx, col, local, timeout, progress)
	if serr := stop(); serr != nil {
		return serr
	}
	return err
}

// waitClient is for `wait --url`: the sidecar is local (same pod or
// host), so HTTP_PROXY from the environment must not apply.
func waitClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if caFile != "" {
		pool, err := boundedfile.CertPool(caFile)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}
