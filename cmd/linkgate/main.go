// Command linkgate watches the kernel's network state over rtnetlink and a
// vCenter endpoint, exports both to Prometheus, and gates VM migrations on
// them. This package only wires the collector, probe and sidecar packages
// into a CLI.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v3"
)

// Exit codes, documented in the README.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure (cannot listen, kernel refused, ...)
	exitInvalid = 2 // invalid usage or configuration
)

// globalFlags apply to every command.
type globalFlags struct {
	Config      string `name:"config" placeholder:"FILE" help:"YAML configuration file (hyper2kvm keys network_monitor.*, vc_connection_* and linkgate's own)."`
	ConfigCheck bool   `name:"config.check" help:"Validate flags, environment and configuration file, then exit (0 valid, 2 invalid)."`
	LogLevel    string `name:"log.level" default:"info" enum:"debug,info,warn,error" help:"Log level: ${enum}."`
	LogFormat   string `name:"log.format" default:"logfmt" enum:"logfmt,json" help:"Log format: ${enum}."`
}

// webFlags follow Prometheus exporter conventions.
type webFlags struct {
	ListenAddress []string `name:"web.listen-address" default:":9977" placeholder:"ADDR" help:"Address to listen on; repeatable."`
	TelemetryPath string   `name:"web.telemetry-path" default:"/metrics" help:"Path under which to expose metrics."`
	ConfigFile    string   `name:"web.config.file" placeholder:"FILE" help:"exporter-toolkit web configuration (TLS, basic auth)."`
	// A count, so kong itself refuses a negative one.
	MaxConnections uint `name:"web.max-connections" default:"512" help:"Connections open at once per listen address; beyond it a new one replaces the longest-idle one, or is closed if none is idle. 0: no limit."`
}

// collectorFlags choose what the rtnetlink collector watches and exports.
type collectorFlags struct {
	NetNS          string        `name:"netns" placeholder:"PATH" help:"Network namespace to watch (/run/netns/NAME, /proc/PID/ns/net). Default: the process's own."`
	DeviceInclude  string        `name:"collector.device-include" placeholder:"REGEXP" help:"Export only links whose name matches (anchored)."`
	DeviceExclude  string        `name:"collector.device-exclude" placeholder:"REGEXP" help:"Do not export links whose name matches (anchored)."`
	VerifyInterval time.Duration `name:"collector.verify-interval" default:"60s" help:"Anti-entropy: compare the state with a full kernel dump this often, repairing and counting any divergence; 0 disables."`
}

// verifyInterval maps the flag to collector.Options (0 there means the default).
func (f *collectorFlags) verifyInterval() time.Duration {
	if f.VerifyInterval == 0 {
		return -1
	}
	return f.VerifyInterval
}

// networkFlags define when the network counts as up.
type networkFlags struct {
	RequiredInterfaces []string      `name:"network.required-interfaces" sep:"," placeholder:"IF,..." help:"Interfaces that must all be up; empty: any non-loopback link. 'auto' (sidecar): the egress links toward vCenter."`
	Monitor            bool          `name:"network.monitor" default:"true" negatable:"" help:"Let network state pause the vCenter probe and gate readiness (network_monitor.enabled)."`
	MaxWait            time.Duration `name:"network.max-wait" default:"300s" help:"After this long down, report the outage as network_down (max_network_wait_s)."`
	PauseOnDown        bool          `name:"network.pause-on-down" default:"true" negatable:"" help:"Park the vCenter probe while the network is down (pause_on_network_down)."`
}

// vcenterFlags configure the vCenter probe. The password is never a flag:
// it comes from --vcenter.password-file or LINKGATE_VCENTER_PASSWORD.
type vcenterFlags struct {
	URL          []string      `name:"vcenter.url" placeholder:"URL" help:"vCenter endpoint (https://host[:port]/sdk); repeatable."`
	User         string        `name:"vcenter.user" help:"vCenter user name."`
	PasswordFile string        `name:"vcenter.password-file" placeholder:"FILE" help:"File holding the vCenter password; re-read when it changes."`
	CAFile       string        `name:"vcenter.ca-file" placeholder:"FILE" help:"PEM CA bundle to verify vCenter's certificate."`
	Thumbprint   string        `name:"vcenter.thumbprint" help:"Pin vCenter's certificate: SHA-1 or SHA-256 fingerprints (AA:BB:..., colons optional), comma-separated."`
	Insecure     bool          `name:"vcenter.insecure" help:"Skip TLS verification (warned, and exported as linkgate_vcenter_tls_insecure)."`
	Interval     time.Duration `name:"vcenter.interval" default:"15s" help:"Probe period."`
	Timeout      time.Duration `name:"vcenter.timeout" default:"10s" help:"Timeout of one vCenter call (vc_connection_timeout_s)."`
	MaxRetries   int           `name:"vcenter.max-retries" default:"3" help:"Retries per connect cycle (vc_connection_max_retries)."`
	BaseBackoff  time.Duration `name:"vcenter.base-backoff" default:"2s" help:"First retry wait (vc_connection_base_backoff_s)."`
	MaxBackoff   time.Duration `name:"vcenter.max-backoff" default:"30s" help:"Retry wait cap and down-target cadence (vc_connection_max_backoff_s)."`
	Jitter       bool          `name:"vcenter.jitter" default:"true" negatable:"" help:"±25% jitter inside the cap (vc_connection_enable_jitter)."`

	// vCenter SSO locks an account after 5 failed logins in 180 s by default.
	MaxFailedLogins   int           `name:"vcenter.max-failed-logins" default:"3" help:"At most this many failed logins per target within --vcenter.failed-login-window; further logins wait. Nothing resets it."`
	FailedLoginWindow time.Duration `name:"vcenter.failed-login-window" default:"3m" help:"The window of --vcenter.max-failed-logins."`
}

type cli struct {
	globalFlags

	Exporter exporterCmd `cmd:"" help:"Serve Prometheus metrics about links, addresses, routes, neighbours and vCenter."`
	Sidecar  sidecarCmd  `cmd:"" help:"Exporter plus the /ready gate other containers wait on before they migrate."`
	Wait     waitCmd     `cmd:"" help:"Block until ready: a running sidecar (--url) or local links. Exit 0 ready, 1 timed out, 2 error."`
	Check    checkCmd    `cmd:"" help:"Evaluate every readiness check once and print why. Exit 0 ready, 1 not ready, 2 error."`
	Demo     demoCmd     `cmd:"" help:"Run the sidecar against an in-process vCenter simulator; no configuration needed."`
	Version  versionCmd  `cmd:"" help:"Print version information."`
}

type versionCmd struct{}

func (versionCmd) Run(out io.Writer) error {
	_, err := fmt.Fprintln(out, version.Print("linkgate"))
	return err
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Without -ldflags (go run, go install) take the version from the module
// and VCS information the Go toolchain embeds.
func init() {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if version.Version == "" {
		version.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision" && (version.Revision == "" || version.Revision == "unknown"):
			version.Revision = s.Value
		case s.Key == "vcs.time" && version.BuildDate == "":
			version.BuildDate = s.Value
		}
	}
}

// parsed is the outcome of parsing a command line.
type parsed struct {
	cli  cli
	kctx *kong.Context
	res  *fileResolver
}

// parse parses args with flags, environment and configuration file. It
// returns an exit code >= 0 when parsing itself ends the program (--help,
// invalid usage or configuration).
func parse(args []string, stdout, stderr io.Writer) (*parsed, int) {
	p := &parsed{res: &fileResolver{}}
	exitCode := -1
	parser, err := kong.New(&p.cli,
		kong.Name("linkgate"),
		kong.Description("Gate VM migrations on kernel network state and vCenter reachability."),
		kong.DefaultEnvars("LINKGATE"),
		kong.Resolvers(p.res),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exitCode = code }),
		kong.BindTo(stdout, (*io.Writer)(nil)),
	)
	if err != nil {
		fmt.Fprintf(stderr, "linkgate: %v\n", err)
		return nil, exitFailure
	}
	p.kctx, err = parser.Parse(joinNegativeDurations(parser.Model, args))
	if exitCode >= 0 { // --help
		return nil, exitCode
	}
	if p.res.err != nil {
		fmt.Fprintf(stderr, "linkgate: %v\n", p.res.err)
		return nil, exitInvalid
	}
	if err != nil {
		fmt.Fprintf(stderr, "linkgate: %v\n", err)
		return nil, exitInvalid
	}
	return p, -1
}

// joinNegativeDurations turns "--timeout -1s" into "--timeout=-1s" for
// every duration flag. kong reads a value starting with '-' as short flags
// and answers with a puzzle (`expected duration value but got "-1s" (short
// flag)`); joined, the value reaches validation, whose message names the
// flag, the value and what is allowed.
func joinNegativeDurations(app *kong.Application, args []string) []string {
	durations := map[string]bool{}
	var visit func(n *kong.Node)
	visit = func(n *kong.Node) {
		for _, f := range n.Flags {
			if f.Target.Type() == reflect.TypeFor[time.Duration]() {
				durations["--"+f.Name] = true
			}
		}
		for _, c := range n.Children {
			visit(c)
		}
	}
	visit(app.Node)
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if durations[a] && i+1 < len(args) && strings.HasPrefix(args[i+1], "-") {
			if _, err := time.ParseDuration(args[i+1]); err == nil {
				out = append(out, a+"="+args[i+1])
				i++
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

// run parses args and runs the selected command, returning the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	p, code := parse(args, stdout, stderr)
	if code >= 0 {
		return code
	}
	c := &p.cli
	env := &runEnv{stdout: stdout, stderr: stderr, kctx: p.kctx, res: p.res, global: &c.globalFlags, args: args}
	env.level = new(slog.LevelVar)
	env.level.Set(parseLevel(c.LogLevel))
	env.logger = newLogger(stderr, env.level, c.LogFormat)
	if err := p.kctx.Run(env); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil {
				fmt.Fprintf(stderr, "linkgate: %v\n", ee.err)
			}
			return ee.code
		}
		fmt.Fprintf(stderr, "linkgate: %v\n", err)
		var ce *configError
		if errors.As(err, &ce) {
			return exitInvalid
		}
		return exitFailure
	}
	return exitOK
}

// runEnv is what every command's Run receives.
type runEnv struct {
	stdout, stderr io.Writer
	kctx           *kong.Context
	res            *fileResolver
	global         *globalFlags
	logger         *slog.Logger
	level          *slog.LevelVar // changed by a configuration reload
	args           []string       // re-parsed on SIGHUP
	demo           bool
}

// exitError ends the program with a specific exit code (wait, check).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

// configChecked ends a --config.check run: validation has passed by now.
func (e *runEnv) configChecked() bool {
	if !e.global.ConfigCheck {
		return false
	}
	fmt.Fprintln(e.stdout, "configuration is valid")
	return true
}

// isSet reports whether a flag was given on the command line, in the
// environment or in the configuration file (not just defaulted).
func (e *runEnv) isSet(flag string) bool {
	if e.kctx == nil {
		return false
	}
	for _, p := range e.kctx.Path {
		if p.Flag != nil && p.Flag.Name == flag {
			return true
		}
	}
	for _, f := range e.kctx.Flags() {
		if f.Name != flag {
			continue
		}
		for _, env := range f.Envs {
			if _, ok := os.LookupEnv(env); ok {
				return true
			}
		}
	}
	return false
}

// origin names where a flag's value came from: flag, env var, or file:line.
func (e *runEnv) origin(flag string) string { return flagOrigin(e.kctx, e.res, flag) }

func (e *runEnv) invalid(flag, format string, args ...any) error {
	return configErrorf("%s: %s", e.origin(flag), fmt.Sprintf(format, args...))
}

func parseLevel(level string) slog.Level {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	return lv
}

func newLogger(w io.Writer, level slog.Leveler, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// deviceFilter compiles the include/exclude regexps (anchored, as in
// node_exporter) into one predicate.
func (e *runEnv) deviceFilter(f *collectorFlags) (func(string) bool, error) {
	if f.DeviceInclude != "" && f.DeviceExclude != "" {
		return nil, configErrorf("%s and %s: --collector.device-include and --collector.device-exclude are mutually exclusive",
			e.origin("collector.device-include"), e.origin("collector.device-exclude"))
	}
	compile := func(flag, expr string) (*regexp.Regexp, error) {
		re, err := regexp.Compile("^(?:" + expr + ")$")
		if err != nil {
			return nil, e.invalid(flag, "invalid regexp %q: %s", expr, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		}
		return re, nil
	}
	switch {
	case f.DeviceInclude != "":
		re, err := compile("collector.device-include", f.DeviceInclude)
		if err != nil {
			return nil, err
		}
		return re.MatchString, nil
	case f.DeviceExclude != "":
		re, err := compile("collector.device-exclude", f.DeviceExclude)
		if err != nil {
			return nil, err
		}
		return func(s string) bool { return !re.MatchString(s) }, nil
	}
	return nil, nil
}

func (e *runEnv) validateWeb(w *webFlags) error {
	if len(w.ListenAddress) == 0 {
		return e.invalid("web.listen-address", "at least one listen address is needed")
	}
	for _, addr := range w.ListenAddress {
		if err := checkListenAddress(addr); err != nil {
			return e.invalid("web.listen-address", "want host:port, [IPv6]:port or :port with a port from 0 to 65535, got %q (%v)", addr, err)
		}
	}
	if !strings.HasPrefix(w.TelemetryPath, "/") || w.TelemetryPath == "/" {
		return e.invalid("web.telemetry-path", "want a path that starts with / and is not /, got %q", w.TelemetryPath)
	}
	if w.ConfigFile != "" {
		// exporter-toolkit reads these files without a bound; they are
		// checked under linkgate's rule first.
		if err := checkWebConfigFiles(w.ConfigFile); err != nil {
			return e.invalid("web.config.file", "%v", err)
		}
		if err := web.Validate(w.ConfigFile); err != nil {
			return e.invalid("web.config.file", "%v", err)
		}
	}
	return nil
}

// checkListenAddress accepts what net.Listen("tcp", addr) listens on,
// without listening: an IP, a host name or nothing, and a port number or
// service name.
func checkListenAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return errors.New(ae.Err)
		}
		return err
	}
	switch {
	case port == "":
		return errors.New("no port")
	case port[0] >= '0' && port[0] <= '9':
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("port %s out of range", port)
		}
	default:
		if _, err := net.LookupPort("tcp", port); err != nil {
			return fmt.Errorf("unknown port name %q", port)
		}
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !hostNameRE.MatchString(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	return nil
}

var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$`)

// checkWebConfigFiles reads the web configuration and the TLS files it
// names under the size rule, before exporter-toolkit reads them.
func checkWebConfigFiles(path string) error {
	b, err := boundedfile.Read(path, boundedfile.WebConfig)
	if err != nil {
		return err
	}
	var c struct {
		TLS struct {
			Cert string `yaml:"cert_file"`
			Key  string `yaml:"key_file"`
			CA   string `yaml:"client_ca_file"`
		} `yaml:"tls_server_config"`
	}
	if yaml.Unmarshal(b, &c) != nil {
		return nil // web.Validate names the syntax error
	}
	for _, f := range []struct{ key, path string }{
		{"cert_file", c.TLS.Cert}, {"key_file", c.TLS.Key}, {"client_ca_file", c.TLS.CA},
	} {
		if f.path == "" {
			continue
		}
		p := f.path
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(path), p) // as exporter-toolkit resolves it
		}
		if _, err := boundedfile.Read(p, boundedfile.WebTLS); err != nil {
			return fmt.Errorf("tls_server_config.%s: %w", f.key, err)
		}
	}
	return nil
}

func (e *runEnv) validateNetwork(n *networkFlags, c *collectorFlags, allowAuto bool, haveVCenter bool) error {
	if c.VerifyInterval < 0 {
		return e.invalid("collector.verify-interval", "want 0 (off) or a positive duration like 60s, got %s", c.VerifyInterval)
	}
	for _, name := range n.RequiredInterfaces {
		switch {
		case name == "auto":
			if !allowAuto {
				return e.invalid("network.required-interfaces", "'auto' is only available to the sidecar command")
			}
			if len(n.RequiredInterfaces) != 1 {
				return e.invalid("network.required-interfaces", "'auto' cannot be combined with interface names")
			}
			if !haveVCenter {
				return e.invalid("network.required-interfaces", "'auto' follows the route to vCenter and needs --vcenter.url")
			}
		case name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t\n:"):
			return e.invalid("network.required-interfaces", "want interface names of 1 to 15 characters without '/', ':' or spaces, or 'auto', got %q", name)
		}
	}
	if n.MaxWait < 0 {
		return e.invalid("network.max-wait", "want a duration of 0 or more like 300s, got %s", n.MaxWait)
	}
	if c.NetNS != "" {
		if _, err := os.Stat(c.NetNS); err != nil {
			return e.invalid("netns", "%v", err)
		}
	}
	return nil
}
