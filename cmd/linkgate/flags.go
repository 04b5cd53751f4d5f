package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/linkgate/linkgate/internal/redact"
	"github.com/linkgate/linkgate/probe"
	"github.com/linkgate/linkgate/sidecar"
	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v3"
)

// Flag groups. Each group is one concern; a command embeds the groups it
// needs and adds its own flags. A flag is declared once, with its tags:
//
//	name, default, help   kong: the flag, its LINKGATE_* variable, --help
//	config:"key[,kind]"   its configuration file key (see configKeys);
//	                      kind "path" (relative to the file) or "seconds"
//	                      (a bare number of seconds, hyper2kvm's *_s keys)
//	probe:"Field"         the probe.Config field it sets (vcenterFlags)
//
// So adding a flag is one field here plus its line in the README. Each
// group validates its own values and names the flag, variable or
// file:line:key that set a bad one (runEnv.invalid).

// logFlags: every command that logs.
type logFlags struct {
	LogLevel  string `name:"log.level" config:"log.level" default:"info" enum:"debug,info,warn,error" help:"Log level: ${enum}."`
	LogFormat string `name:"log.format" config:"log.format" default:"logfmt" enum:"logfmt,json" help:"Log format: ${enum}."`
}

func (l *logFlags) logging() *logFlags { return l }

// commonFlags: every command that reads a configuration (all but demo and
// version).
type commonFlags struct {
	Config      string `name:"config" placeholder:"FILE" help:"YAML configuration file (hyper2kvm keys network_monitor.*, vc_connection_* and linkgate's own)."`
	ConfigCheck bool   `name:"config.check" help:"Validate flags, environment and configuration file, then exit (0 valid, 2 invalid)."`
	H2KConfig   string `name:"hyper2kvm.config" env:"LINKGATE_HYPER2KVM_CONFIG" config:"hyper2kvm.config,path" placeholder:"FILE" help:"Also read this hyper2kvm configuration file: network_monitor.*, vc_connection_*, its vCenter keys, notifications and output_dir (below flags, LINKGATE_* and --config)."`
	logFlags    `embed:""`
}

func (c *commonFlags) configCheck() bool { return c.ConfigCheck }

// webFlags follow Prometheus exporter conventions.
type webFlags struct {
	ListenAddress       []string `name:"web.listen-address" config:"web.listen_address" default:":9977" placeholder:"ADDR" help:"Address to listen on; repeatable."`
	TelemetryPath       string   `name:"web.telemetry-path" config:"web.telemetry_path" default:"/metrics" help:"Path under which to expose metrics."`
	ConfigFile          string   `name:"web.config.file" config:"web.config_file,path" placeholder:"FILE" help:"exporter-toolkit web configuration (TLS, basic auth)."`
	SystemdSocket       bool     `name:"web.systemd-socket" config:"web.systemd_socket" help:"Listen on the sockets systemd passes (socket activation, a .socket unit) instead of --web.listen-address."`
	HealthListenAddress []string `name:"web.health-listen-address" config:"web.health_listen_address" placeholder:"ADDR" help:"Also serve /healthz and /ready (nothing else) here, over plain HTTP without --web.config.file's TLS and auth: for kubelet probes when the main listener needs credentials. Repeatable; bind it where only the probes reach it (127.0.0.1 with hostNetwork, else the pod IP behind a NetworkPolicy)."`
	// A count, so kong itself refuses a negative one.
	MaxConnections uint `name:"web.max-connections" config:"web.max_connections" default:"512" help:"Connections open at once per listen address; beyond it a new one replaces the longest-idle one, or is closed if none is idle. 0: no limit."`
}

func (w *webFlags) validate(e *runEnv) error {
	if len(w.ListenAddress) == 0 {
		return e.invalid("web.listen-address", "at least one listen address is needed")
	}
	for _, f := range []struct {
		flag  string
		addrs []string
	}{{"web.listen-address", w.ListenAddress}, {"web.health-listen-address", w.HealthListenAddress}} {
		for _, addr := range f.addrs {
			if err := checkListenAddress(addr); err != nil {
				return e.invalid(f.flag, "want host:port, [IPv6]:port or :port with a port from 0 to 65535, got %q (%v)", addr, err)
			}
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

// serverOptions is the HTTP server's share of the flags.
func (w *webFlags) serverOptions() sidecar.ServerOptions {
	return sidecar.ServerOptions{
		ListenAddresses:       w.ListenAddress,
		SystemdSocket:         w.SystemdSocket,
		HealthListenAddresses: w.HealthListenAddress,
		WebConfigFile:         w.ConfigFile,
		MaxConnections:        int(w.MaxConnections),
		TelemetryPath:         w.TelemetryPath,
	}
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

// collectorFlags choose what the rtnetlink collector watches and exports.
type collectorFlags struct {
	NetNS          string        `name:"netns" config:"netns,path" placeholder:"PATH" help:"Network namespace to watch (/run/netns/NAME, /proc/PID/ns/net). Default: the process's own."`
	DeviceInclude  string        `name:"collector.device-include" config:"collector.device_include" placeholder:"REGEXP" help:"Export only links whose name matches (anchored)."`
	DeviceExclude  string        `name:"collector.device-exclude" config:"collector.device_exclude" placeholder:"REGEXP" help:"Do not export links whose name matches (anchored)."`
	VerifyInterval time.Duration `name:"collector.verify-interval" config:"collector.verify_interval" default:"60s" help:"Anti-entropy: compare the state with a full kernel dump this often, repairing and counting any divergence; 0 disables."`
}

func (c *collectorFlags) validate(e *runEnv) error {
	if _, err := c.deviceFilter(e); err != nil {
		return err
	}
	if c.VerifyInterval < 0 {
		return e.invalid("collector.verify-interval", "want 0 (off) or a positive duration like 60s, got %s", c.VerifyInterval)
	}
	if c.NetNS != "" {
		if _, err := os.Stat(c.NetNS); err != nil {
			return e.invalid("netns", "%v", err)
		}
	}
	return nil
}

// options is the collector's configuration; required may be nil.
func (c *collectorFlags) options(e *runEnv, required []string) (collector.Options, error) {
	filter, err := c.deviceFilter(e)
	if err != nil {
		return collector.Options{}, err
	}
	verify := c.VerifyInterval
	if verify == 0 {
		verify = -1 // off; 0 means the default in collector.Options
	}
	return collector.Options{
		NetNS:          c.NetNS,
		Required:       required,
		DeviceFilter:   filter,
		VerifyInterval: verify,
		Logger:         e.logger.With("component", "collector"),
	}, nil
}

// deviceFilter compiles the include/exclude regexps (anchored, as in
// node_exporter) into one predicate.
func (c *collectorFlags) deviceFilter(e *runEnv) (func(string) bool, error) {
	if c.DeviceInclude != "" && c.DeviceExclude != "" {
		return nil, configErrorf("%s and %s: set only one of them (include or exclude)",
			e.origin("collector.device-include"), e.origin("collector.device-exclude"))
	}
	flag, expr, keep := "collector.device-include", c.DeviceInclude, true
	if c.DeviceExclude != "" {
		flag, expr, keep = "collector.device-exclude", c.DeviceExclude, false
	}
	if expr == "" {
		return nil, nil
	}
	// Checked alone first, so that an error shows the user's expression,
	// not the anchoring wrapper.
	if _, err := regexp.Compile(expr); err != nil {
		return nil, e.invalid(flag, "invalid regexp %q: %s", expr, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	re := regexp.MustCompile("^(?:" + expr + ")$")
	return func(s string) bool { return re.MatchString(s) == keep }, nil
}

// networkFlags define when the network counts as up.
type networkFlags struct {
	RequiredInterfaces []string      `name:"network.required-interfaces" config:"network_monitor.required_interfaces" sep:"," placeholder:"IF" help:"Interfaces that must all be up; empty: any non-loopback link. 'auto' (sidecar): the egress links toward vCenter."`
	Monitor            bool          `name:"network.monitor" config:"network_monitor.enabled" default:"true" negatable:"" help:"Let network state pause the vCenter probe and gate readiness (network_monitor.enabled)."`
	MaxWait            time.Duration `name:"network.max-wait" config:"network_monitor.max_network_wait_s,seconds" default:"300s" help:"After this long down, report the outage as network_down (max_network_wait_s)."`
	PauseOnDown        bool          `name:"network.pause-on-down" config:"network_monitor.pause_on_network_down" default:"true" negatable:"" help:"Park the vCenter probe while the network is down (pause_on_network_down)."`
}

// autoRequired: the required interfaces follow the route to vCenter.
func (n *networkFlags) autoRequired() bool {
	return len(n.RequiredInterfaces) == 1 && n.RequiredInterfaces[0] == "auto"
}

// required is what the collector is told: nothing for auto, which the
// sidecar fills in from the route to vCenter.
func (n *networkFlags) required() []string {
	if n.autoRequired() {
		return nil
	}
	return n.RequiredInterfaces
}

// validate: 'auto' is for commands with a gate (allowAuto) and a vCenter.
func (n *networkFlags) validate(e *runEnv, allowAuto, haveVCenter bool) error {
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
	return nil
}

// passwordEnv is the only other place a vCenter password may come from
// besides --vcenter.password-file: never a flag, so never in argv.
const passwordEnv = "LINKGATE_VCENTER_PASSWORD"

// vcenterFlags configure the vCenter probe. The password is never a flag:
// it comes from --vcenter.password-file or LINKGATE_VCENTER_PASSWORD.
type vcenterFlags struct {
	URL          []string      `name:"vcenter.url" config:"vcenter.targets" probe:"URLs" placeholder:"URL" help:"vCenter endpoint (https://host[:port]/sdk); repeatable."`
	User         string        `name:"vcenter.user" config:"vcenter.user" probe:"User" help:"vCenter user name."`
	PasswordFile string        `name:"vcenter.password-file" config:"vcenter.password_file,path" probe:"PasswordFile" placeholder:"FILE" help:"File holding the vCenter password; re-read when it changes."`
	CAFile       string        `name:"vcenter.ca-file" config:"vcenter.ca_file,path" probe:"CAFile" placeholder:"FILE" help:"PEM CA bundle to verify vCenter's certificate."`
	Thumbprint   string        `name:"vcenter.thumbprint" config:"vcenter.thumbprint" probe:"Thumbprint" help:"Pin vCenter's certificate: SHA-1 or SHA-256 fingerprints (AA:BB:..., colons optional), comma-separated."`
	PasswordEnv  string        `name:"vcenter.password-env" config:"vcenter.password_env" placeholder:"VAR" help:"Read the vCenter password from this environment variable instead of LINKGATE_VCENTER_PASSWORD (hyper2kvm's vc_password_env)."`
	Insecure     bool          `name:"vcenter.insecure" config:"vcenter.insecure" probe:"Insecure" help:"Skip TLS verification (warned, and exported as linkgate_vcenter_tls_insecure)."`
	Interval     time.Duration `name:"vcenter.interval" config:"vcenter.interval" probe:"Interval" default:"15s" help:"Probe period."`
	Timeout      time.Duration `name:"vcenter.timeout" config:"vc_connection_timeout_s,seconds" probe:"Timeout" default:"10s" help:"Timeout of one vCenter call (vc_connection_timeout_s)."`
	MaxRetries   int           `name:"vcenter.max-retries" config:"vc_connection_max_retries" probe:"MaxRetries" default:"3" help:"Retries per connect cycle (vc_connection_max_retries)."`
	BaseBackoff  time.Duration `name:"vcenter.base-backoff" config:"vc_connection_base_backoff_s,seconds" probe:"BaseBackoff" default:"2s" help:"First retry wait (vc_connection_base_backoff_s)."`
	MaxBackoff   time.Duration `name:"vcenter.max-backoff" config:"vc_connection_max_backoff_s,seconds" probe:"MaxBackoff" default:"30s" help:"Retry wait cap and down-target cadence (vc_connection_max_backoff_s)."`
	// Inverted into probe.Config.DisableJitter by probeConfig.
	Jitter bool `name:"vcenter.jitter" config:"vc_connection_enable_jitter" default:"true" negatable:"" help:"±25% jitter inside the cap (vc_connection_enable_jitter)."`

	// vCenter SSO locks an account after 5 failed logins in 180 s by default.
	MaxFailedLogins   int           `name:"vcenter.max-failed-logins" config:"vcenter.max_failed_logins" probe:"MaxFailedLogins" default:"3" help:"At most this many failed logins per target within --vcenter.failed-login-window; further logins wait. Nothing resets it."`
	FailedLoginWindow time.Duration `name:"vcenter.failed-login-window" config:"vcenter.failed_login_window" probe:"FailedLoginWindow" default:"3m" help:"The window of --vcenter.max-failed-logins."`
}

// vsphereFlags configure the inventory of ESXi hosts and datastores the
// probe watches over each vCenter target's session, and the reachability
// of those hosts from this node (serving commands).
type vsphereFlags struct {
	Inventory   bool   `name:"vsphere.inventory" config:"vsphere.inventory" probe:"Inventory" default:"true" negatable:"" help:"Watch each vCenter target's ESXi hosts and datastores over the probe's session (event-driven; needs --vcenter.url)."`
	HostInclude string `name:"vsphere.host-include" config:"vsphere.host_include" probe:"HostInclude" placeholder:"REGEXP" help:"Keep only the ESXi hosts whose name matches (RE2, anchored) in the inventory."`
	HostExclude string `name:"vsphere.host-exclude" config:"vsphere.host_exclude" probe:"HostExclude" placeholder:"REGEXP" help:"Leave out the ESXi hosts whose name matches (RE2, anchored)."`
	// Strings, so that an empty value (--vsphere.host-ports=, or
	// host_ports: [] in the file) turns probing off.
	HostPorts []string `name:"vsphere.host-ports" config:"vsphere.host_ports" sep:"," default:"443,902" placeholder:"PORT" help:"TCP ports probed on every connected ESXi host from this node (443 HTTPS, 902 NFC); empty disables probing."`
}

// ports parses --vsphere.host-ports.
func (s *vsphereFlags) ports(e *runEnv) ([]int, error) {
	var ports []int
	for _, raw := range s.HostPorts {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		p, err := strconv.Atoi(raw)
		if err != nil || p < 1 || p > 65535 {
			return nil, e.invalid("vsphere.host-ports", "want TCP ports from 1 to 65535, comma-separated, or nothing to disable probing, got %q", raw)
		}
		if slices.Contains(ports, p) {
			return nil, e.invalid("vsphere.host-ports", "port %d listed twice", p)
		}
		ports = append(ports, p)
	}
	return ports, nil
}

func (s *vsphereFlags) validate(e *runEnv) error {
	for _, f := range []struct{ flag, expr string }{
		{"vsphere.host-include", s.HostInclude}, {"vsphere.host-exclude", s.HostExclude},
	} {
		if _, err := regexp.Compile(f.expr); err != nil {
			return e.invalid(f.flag, "invalid regexp %q: %s", f.expr, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
		}
	}
	_, err := s.ports(e)
	return err
}

// reachOptions are the reachability probe's options for target, nil
// when no host is to be probed (no inventory or no port).
func (s *vsphereFlags) reachOptions(e *runEnv, target string) (*probe.ReachOptions, error) {
	ports, err := s.ports(e)
	if err != nil || !s.Inventory || len(ports) == 0 {
		return nil, err
	}
	o := probe.DefaultReachOptions(target)
	o.Ports = ports
	o.Logger = e.logger.With("component", "reach") // it names the target
	hook := e.reachHook
	if hook == nil {
		hook = baseReachHook
	}
	if hook != nil {
		hook(&o)
	}
	return &o, nil
}

// probeFlagGroups are the flag groups with probe:"Field" tags.
var probeFlagGroups = []reflect.Type{reflect.TypeFor[vcenterFlags](), reflect.TypeFor[vsphereFlags]()}

// probeConfig turns the flags into the probe's configuration: each field
// tagged probe:"Field" (of v and, when not nil, s) sets that field of
// probe.Config. Without s the inventory keeps probe's defaults.
func (v *vcenterFlags) probeConfig(e *runEnv, n *networkFlags, s *vsphereFlags) probe.Config {
	cfg := probe.DefaultConfig()
	dst := reflect.ValueOf(&cfg).Elem()
	for _, group := range []any{v, s} {
		src := reflect.ValueOf(group)
		if src.IsNil() {
			continue
		}
		src = src.Elem()
		for i, f := range reflect.VisibleFields(src.Type()) {
			if name := f.Tag.Get("probe"); name != "" {
				dst.FieldByName(name).Set(src.Field(i))
			}
		}
	}
	cfg.Password = v.password(e)
	cfg.DisableJitter = !v.Jitter
	cfg.MaxNetworkWait = n.MaxWait
	cfg.PauseOnNetworkDown = n.PauseOnDown && n.Monitor
	return cfg
}

// password is the vCenter password from the environment: the variable
// --vcenter.password-env names, or LINKGATE_VCENTER_PASSWORD; failing both,
// a hyper2kvm file's inline one. --vcenter.password-file, when set, is read
// by the probe itself and comes first.
func (v *vcenterFlags) password(e *runEnv) string {
	if v.PasswordEnv != "" {
		if pw := os.Getenv(v.PasswordEnv); pw != "" {
			return pw
		}
	}
	if pw := os.Getenv(passwordEnv); pw != "" {
		return pw
	}
	return e.inlineSecrets().vcenter
}

// probeFlagOf names the flag that sets a probe.Config field, from the
// probe tags; for a probe.ConfigError.
func probeFlagOf(field string) (string, bool) {
	for _, t := range probeFlagGroups {
		for _, f := range reflect.VisibleFields(t) {
			if f.Tag.Get("probe") == field {
				return f.Tag.Get("name"), true
			}
		}
	}
	return "", false
}

// validate checks the probe's settings, naming the flag, variable or
// file:line that set a bad one.
func (v *vcenterFlags) validate(e *runEnv, n *networkFlags, s *vsphereFlags) error {
	for _, raw := range v.URL {
		// The probe parses the forms it accepts (https://host[:port]/sdk
		// or a bare host[:port]); here only credentials are refused.
		if strings.Contains(raw, "@") {
			return e.invalid("vcenter.url", "%s: credentials in the URL are not accepted; use --vcenter.user and --vcenter.password-file", redact.URL(raw))
		}
	}
	// Read as the probe will, so that a file the probe would refuse
	// fails here with exit code 2, not at the first login.
	if v.PasswordFile != "" {
		if _, err := boundedfile.ReadPassword(v.PasswordFile); err != nil {
			return e.invalid("vcenter.password-file", "%v", err)
		}
	}
	if v.CAFile != "" {
		if _, err := boundedfile.CertPool(v.CAFile); err != nil {
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
	if len(v.URL) == 0 {
		return nil
	}
	if v.PasswordEnv != "" && os.Getenv(v.PasswordEnv) == "" && v.PasswordFile == "" {
		return e.invalid("vcenter.password-env", "the variable %s it names is not set or empty", v.PasswordEnv)
	}
	if v.PasswordFile == "" && v.password(e) == "" {
		return e.invalid("vcenter.password-file", "a vCenter password is needed: set --vcenter.password-file or %s", passwordEnv)
	}
	return v.probeError(e, v.probeConfig(e, n, s).Validate())
}

// probeError names the flag behind a probe.ConfigError: one URL of
// several (URLs[1]) is shown without user info, query or fragment.
func (v *vcenterFlags) probeError(e *runEnv, err error) error {
	if err == nil {
		return nil
	}
	var ce *probe.ConfigError
	if !errors.As(err, &ce) {
		return configErrorf("vcenter: %v", err)
	}
	var i int
	if _, serr := fmt.Sscanf(ce.Field, "URLs[%d]", &i); serr == nil && i >= 0 && i < len(v.URL) {
		return e.invalid("vcenter.url", "%s: %v (want https://host[:port][/sdk] or host[:port], each once)", redact.URL(v.URL[i]), ce.Err)
	}
	switch ce.Field {
	case "User":
		return e.invalid("vcenter.user", "required with --vcenter.url")
	case "Insecure":
		return e.invalid("vcenter.insecure", "contradicts --vcenter.ca-file and --vcenter.thumbprint; pick one way to trust vCenter")
	}
	if flag, ok := probeFlagOf(ce.Field); ok {
		return e.invalid(flag, "%v", ce.Err)
	}
	return configErrorf("vcenter: %v", err)
}

// newProber builds the vCenter probe, or returns nil without targets; s
// (nil: the probe's defaults) configures its inventory. Without network
// monitoring it does not look at the network.
func (v *vcenterFlags) newProber(e *runEnv, n *networkFlags, s *vsphereFlags, network probe.Network, opts ...probe.Option) (*probe.Prober, error) {
	if len(v.URL) == 0 {
		return nil, nil
	}
	if !n.Monitor {
		network = nil
	}
	opts = append([]probe.Option{probe.WithLogger(e.logger.With("component", "probe"))}, opts...)
	p, err := probe.New(v.probeConfig(e, n, s), network, opts...)
	if err != nil {
		return nil, v.probeError(e, err)
	}
	return p, nil
}

// gateFlags choose the readiness checks and their damping.
type gateFlags struct {
	StableFor    time.Duration `name:"gate.stable-for" config:"gate.stable_for" default:"2s" help:"Turn ready only after every check held this long (flap damping; 0 allowed)."`
	Addresses    string        `name:"gate.addresses" config:"gate.addresses" placeholder:"FAMILY" help:"Also require a global address on each required interface: inet, inet6 or both."`
	DefaultRoute string        `name:"gate.default-route" config:"gate.default_route" placeholder:"FAMILY" help:"Also require a default route: inet, inet6 or both."`
}

func (g *gateFlags) validate(e *runEnv) error {
	if _, err := g.checksConfig(e, nil, nil, nil); err != nil {
		return err
	}
	if g.StableFor < 0 {
		return e.invalid("gate.stable-for", "want a duration of 0 or more like 2s, got %s", g.StableFor)
	}
	return nil
}

// checksConfig is the gate's composition from the flags: the vCenter
// check and the path check with vCenter targets (routes may be nil while
// validating: sidecar.CheckNames needs none), no links check without
// network monitoring.
func (g *gateFlags) checksConfig(e *runEnv, v *vcenterFlags, n *networkFlags, routes sidecar.RouteLookup) (sidecar.Config, error) {
	var cfg sidecar.Config
	for _, f := range []struct {
		flag, value string
		into        *[]collector.Family
	}{{"gate.addresses", g.Addresses, &cfg.Addresses}, {"gate.default-route", g.DefaultRoute, &cfg.DefaultRoute}} {
		if f.value == "" {
			continue
		}
		fams, err := sidecar.ParseFamilies(f.value)
		if err != nil {
			return cfg, e.invalid(f.flag, "%v", err)
		}
		*f.into = fams
	}
	if v != nil && len(v.URL) > 0 {
		cfg.VCenter, cfg.ProbeInterval = true, v.Interval
		cfg.Path = sidecar.PathOptions{Targets: v.URL, Routes: routes}
	}
	cfg.NoLinks = n != nil && !n.Monitor
	return cfg, nil
}

// checks builds the readiness checks. Without network monitoring the gate
// does not look at links (network_monitor.enabled: false).
func (g *gateFlags) checks(e *runEnv, v *vcenterFlags, n *networkFlags, routes sidecar.RouteLookup) ([]sidecar.Check, error) {
	cfg, err := g.checksConfig(e, v, n, routes)
	if err != nil {
		return nil, err
	}
	checks, err := sidecar.Checks(cfg)
	if err != nil {
		return nil, configErrorf("checks: %v", err)
	}
	return checks, nil
}

// notifyFlags configure webhooks and email on gate transitions.
type notifyFlags struct {
	WebhookURL []string `name:"notify.webhook-url" config:"notify.webhook_urls" placeholder:"URL" help:"POST a JSON document on every gate transition; repeatable. Prefer the config file or environment for URLs with tokens."`
	// Checked in validate, not a kong enum: kong's enum error echoes the
	// value, and a misplaced webhook URL lands here.
	WebhookFormat string `name:"notify.webhook-format" config:"notify.webhook_format" default:"generic" help:"Webhook payload: generic, slack or discord."`

	EmailServer       string `name:"notify.email.server" config:"notify.email.server" placeholder:"HOST:PORT" help:"Send an email on every gate transition through this SMTP server (587 with --notify.email.tls=starttls, 465 with tls). Empty: no email."`
	EmailTLS          string `name:"notify.email.tls" config:"notify.email.tls" default:"starttls" help:"starttls (required, never plain text) or tls (implicit TLS)."`
	EmailCAFile       string `name:"notify.email.ca-file" config:"notify.email.ca_file,path" placeholder:"FILE" help:"PEM CA bundle to verify the SMTP server (a private CA); default: the system roots. Read at every send."`
	EmailUser         string `name:"notify.email.user" config:"notify.email.user" help:"SMTP user for AUTH PLAIN; empty: no authentication."`
	EmailPasswordFile string `name:"notify.email.password-file" config:"notify.email.password_file,path" placeholder:"FILE" help:"File holding the SMTP password (with --notify.email.user); re-read at every send."`
	EmailFrom         string `name:"notify.email.from" config:"notify.email.from" placeholder:"ADDR" help:"Sender address, e.g. 'linkgate <linkgate@example.com>'."`
	// sep:"none": one address per occurrence, so a display name may hold a comma.
	EmailTo []string `name:"notify.email.to" config:"notify.email.to" sep:"none" placeholder:"ADDR" help:"Recipient address; repeatable."`
}

// emailFlagFor names the flag behind a sidecar.EmailConfigError's field.
var emailFlagFor = map[string]string{
	"Server": "notify.email.server", "TLS": "notify.email.tls", "CAFile": "notify.email.ca-file",
	"User": "notify.email.user", "PasswordFile": "notify.email.password-file",
	"From": "notify.email.from", "To": "notify.email.to",
	"Hostname": "notify.email.server", // no flag: only an odd os.Hostname() fails
}

func (f *notifyFlags) emailOptions(e *runEnv, logger *slog.Logger) sidecar.EmailOptions {
	return sidecar.EmailOptions{
		Server: f.EmailServer, TLS: f.EmailTLS, CAFile: f.EmailCAFile,
		User: f.EmailUser, PasswordFile: f.EmailPasswordFile, Password: e.inlineSecrets().email,
		From: f.EmailFrom, To: f.EmailTo, Logger: logger,
	}
}

// emailError names the flag behind an email configuration error.
func (f *notifyFlags) emailError(e *runEnv, err error) error {
	var ce *sidecar.EmailConfigError
	if errors.As(err, &ce) {
		if flag, ok := emailFlagFor[ce.Field]; ok {
			return e.invalid(flag, "%v", ce.Err)
		}
	}
	return e.invalid("notify.email.server", "%v", err)
}

func (f *notifyFlags) validate(e *runEnv) error {
	for _, raw := range f.WebhookURL {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return e.invalid("notify.webhook-url", "want an http(s) URL, got %s (the rest is not shown: a webhook URL holds a token)", redact.Origin(raw))
		}
	}
	switch sidecar.WebhookFormat(f.WebhookFormat) {
	case sidecar.WebhookGeneric, sidecar.WebhookSlack, sidecar.WebhookDiscord:
	default:
		return e.invalid("notify.webhook-format", "want generic, slack or discord (the value is not shown: it may hold a webhook URL)")
	}
	if f.EmailServer == "" {
		if f.EmailFrom != "" || len(f.EmailTo) > 0 || f.EmailUser != "" || f.EmailPasswordFile != "" || f.EmailCAFile != "" {
			return e.invalid("notify.email.server", "the other --notify.email.* settings need a server")
		}
		return nil
	}
	if err := f.emailOptions(e, nil).Validate(); err != nil {
		return f.emailError(e, err)
	}
	return nil
}

// hooks are the configured webhooks.
func (f *notifyFlags) hooks() []sidecar.Webhook {
	hooks := make([]sidecar.Webhook, len(f.WebhookURL))
	for i, u := range f.WebhookURL {
		hooks[i] = sidecar.Webhook{URL: u, Format: sidecar.WebhookFormat(f.WebhookFormat)}
	}
	return hooks
}

// hyper2kvmFlags connect linkgate to hyper2kvm: its configuration file as a
// source of shared settings, and its daemon, paused while the gate is
// closed.
type hyper2kvmFlags struct {
	ControlSocket []string `name:"hyper2kvm.control-socket" env:"LINKGATE_HYPER2KVM_CONTROL_SOCKET" config:"hyper2kvm.control_sockets" placeholder:"PATH" help:"hyper2kvm daemon control socket to pause while the gate is closed and resume when it opens; repeatable. Default with --hyper2kvm.config: {output_dir}/.daemon/control.sock."`
	StateDir      string   `name:"hyper2kvm.state-dir" env:"LINKGATE_HYPER2KVM_STATE_DIR" config:"hyper2kvm.state_dir,path" placeholder:"DIR" help:"Where linkgate remembers which daemons it paused, across its restarts. Default: the control socket's directory."`
	PauseOn       []string `name:"hyper2kvm.pause-on" env:"LINKGATE_HYPER2KVM_PAUSE_ON" config:"hyper2kvm.pause_on" placeholder:"CHECK" help:"The gate's checks whose failure pauses the daemon. Default: every check of the gate (links, addresses, default-route, path, vcenter as configured)."`
}

// validate: the control sockets and state dir are paths; the checks named
// must be among gate, the names of the gate's checks as configured.
func (h *hyper2kvmFlags) validate(e *runEnv, gate []string) error {
	for _, c := range h.PauseOn {
		if !slices.Contains(gate, c) {
			return e.invalid("hyper2kvm.pause-on", "check %q is not one of the gate's checks as configured (%s)", c, strings.Join(gate, ", "))
		}
	}
	for _, sock := range h.ControlSocket {
		if sock == "" || strings.ContainsRune(sock, 0) {
			return e.invalid("hyper2kvm.control-socket", "want the path of a Unix socket")
		}
	}
	if h.StateDir != "" {
		if fi, err := os.Stat(h.StateDir); err != nil || !fi.IsDir() {
			return e.invalid("hyper2kvm.state-dir", "%s is not a directory", h.StateDir)
		}
	}
	return nil
}
