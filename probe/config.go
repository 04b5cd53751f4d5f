package probe

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Defaults, as DefaultConfig returns them.
const (
	DefaultInterval       = 15 * time.Second
	DefaultTimeout        = 10 * time.Second
	DefaultMaxRetries     = 3
	DefaultBaseBackoff    = 2 * time.Second
	DefaultMaxBackoff     = 30 * time.Second
	DefaultMaxNetworkWait = 300 * time.Second
	// vCenter SSO locks an account after 5 failed logins in 180 s by
	// default; 3 leaves room for the other tools sharing the account.
	DefaultMaxFailedLogins   = 3
	DefaultFailedLoginWindow = 180 * time.Second
	// The inventory's bounds per target, after the host filters: past
	// them it is unverified and empty (see Config.MaxHosts). A vCenter
	// manages at most 2,500 hosts; 2,000 in one node's view is a
	// migration wave far beyond any one node's share, and keeps the
	// per-host series of one target under 20,000.
	DefaultMaxHosts      = 2000
	DefaultMaxDatastores = 10000
)

// Config says which vCenters to probe and how.
//
// Start from DefaultConfig: a zero duration or MaxFailedLogins means its
// default (the failed-login limit cannot be switched off), but a zero
// MaxRetries and a false PauseOnNetworkDown are taken as written.
//
// A Config prints without its Password (see Format).
type Config struct {
	// URLs are vCenter SDK endpoints, https://host[:port]/sdk; a bare
	// host[:port] means exactly that. User info is refused: a password
	// never goes into a URL, so it cannot come out of one in an error.
	URLs []string
	User string
	// PasswordFile is read at every login, so a rotated Kubernetes secret
	// is used without a restart. It wins over Password.
	PasswordFile string
	Password     string `json:"-" yaml:"-"`

	// CAFile holds PEM certificates to trust instead of the system roots.
	CAFile string
	// Thumbprint pins the server certificate: one or more SHA-1 or SHA-256
	// fingerprints (hex, colons optional), separated by commas. With a pin
	// and no CAFile the chain is not checked: the pin is the identity.
	Thumbprint string
	// Insecure turns off certificate verification. It is logged as a
	// warning and exported as linkgate_vcenter_tls_insecure.
	Insecure bool

	Interval       time.Duration // between successful probes
	Timeout        time.Duration // per vCenter call
	MaxRetries     int           // fast retries per connect cycle
	BaseBackoff    time.Duration // wait before the first retry
	MaxBackoff     time.Duration // cap, and the cadence once a target is down
	MaxNetworkWait time.Duration // network outage after which it is reported as network_down
	// PauseOnNetworkDown parks probing while the Network is down instead
	// of spending retries on a path known to be broken.
	PauseOnNetworkDown bool
	// DisableJitter makes waits exactly base·2^(n−1), capped
	// (hyper2kvm's vc_connection_enable_jitter: false).
	DisableJitter bool

	// At most MaxFailedLogins logins of a target may fail within any
	// FailedLoginWindow; further logins wait until the oldest failure is
	// older than the window. Nothing bypasses it: not a touched or
	// rewritten password file, not the network coming back, not even a new
	// password, because vCenter SSO counts failures per account, whatever
	// the password was.
	MaxFailedLogins   int
	FailedLoginWindow time.Duration

	// Inventory watches every target's ESXi hosts and datastores over
	// the target's session (see Inventory), event-driven: on in
	// DefaultConfig, false as written otherwise.
	Inventory bool
	// HostInclude and HostExclude are regular expressions (RE2), each
	// anchored at both ends, on the host names vCenter knows: a host is
	// in the inventory when it matches HostInclude (empty: every host)
	// and not HostExclude (empty: none). Its datastores are those of the
	// hosts it keeps.
	HostInclude string
	HostExclude string
	// MaxHosts and MaxDatastores bound one target's inventory after the
	// filters (0: DefaultMaxHosts, DefaultMaxDatastores). Past either,
	// the inventory is unverified and holds no host and no datastore,
	// its Doubt says why, and no per-host series is exported: nothing is
	// dropped silently. The filters are how to stay within them.
	MaxHosts      int
	MaxDatastores int
}

// Format prints c, whatever the verb, with Password replaced by a
// placeholder, so a Config logged or printed for debugging does not carry
// the secret.
func (c Config) Format(f fmt.State, verb rune) {
	type plain Config // without methods: no recursion
	if c.Password != "" {
		c.Password = "[secret]"
	}
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(c))
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		Interval:           DefaultInterval,
		Timeout:            DefaultTimeout,
		MaxRetries:         DefaultMaxRetries,
		BaseBackoff:        DefaultBaseBackoff,
		MaxBackoff:         DefaultMaxBackoff,
		MaxNetworkWait:     DefaultMaxNetworkWait,
		PauseOnNetworkDown: true,
		MaxFailedLogins:    DefaultMaxFailedLogins,
		FailedLoginWindow:  DefaultFailedLoginWindow,
		Inventory:          true,
		MaxHosts:           DefaultMaxHosts,
		MaxDatastores:      DefaultMaxDatastores,
	}
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Interval, DefaultInterval)
	def(&c.Timeout, DefaultTimeout)
	def(&c.BaseBackoff, DefaultBaseBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.MaxNetworkWait, DefaultMaxNetworkWait)
	def(&c.FailedLoginWindow, DefaultFailedLoginWindow)
	if c.MaxFailedLogins == 0 {
		c.MaxFailedLogins = DefaultMaxFailedLogins
	}
	if c.MaxHosts == 0 {
		c.MaxHosts = DefaultMaxHosts
	}
	if c.MaxDatastores == 0 {
		c.MaxDatastores = DefaultMaxDatastores
	}
	return c
}

// Validate reports the first problem as a *ConfigError naming the field.
// Error text never contains a URL's user info.
func (c Config) Validate() error {
	_, err := c.withDefaults().targets()
	return err
}

// endpoint is one parsed target URL. It holds no credentials.
type endpoint struct {
	name string // host[:port]: the label and the name in every message
	url  *url.URL
	host string // for TLS verification
}

func (c Config) targets() ([]endpoint, error) {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	if len(c.URLs) == 0 {
		return nil, bad("URLs", "at least one vCenter URL is required")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"Interval", c.Interval}, {"Timeout", c.Timeout}, {"BaseBackoff", c.BaseBackoff},
		{"MaxBackoff", c.MaxBackoff}, {"MaxNetworkWait", c.MaxNetworkWait}, {"FailedLoginWindow", c.FailedLoginWindow},
	} {
		if d.v < 0 {
			return nil, bad(d.name, "must not be negative, got %v", d.v)
		}
	}
	if c.MaxRetries < 0 {
		return nil, bad("MaxRetries", "must not be negative, got %d", c.MaxRetries)
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"MaxFailedLogins", c.MaxFailedLogins}, {"MaxHosts", c.MaxHosts}, {"MaxDatastores", c.MaxDatastores}} {
		if n.v < 0 {
			return nil, bad(n.name, "must not be negative, got %d", n.v)
		}
	}
	if _, err := c.hostFilter(); err != nil {
		return nil, err
	}
	if c.BaseBackoff > c.MaxBackoff {
		return nil, bad("BaseBackoff", "%v exceeds MaxBackoff %v", c.BaseBackoff, c.MaxBackoff)
	}
	if c.Insecure && (c.CAFile != "" || c.Thumbprint != "") {
		return nil, bad("Insecure", "contradicts CAFile/Thumbprint; pick one way to trust the server")
	}
	if _, err := parseThumbprints(c.Thumbprint); err != nil {
		return nil, &ConfigError{Field: "Thumbprint", Err: err}
	}

	if c.User == "" {
		return nil, bad("User", "required")
	}
	if c.PasswordFile == "" && c.Password == "" {
		return nil, bad("PasswordFile", "PasswordFile or Password is required")
	}

	var out []endpoint
	seen := map[string]bool{}
	for i, raw := range c.URLs {
		field := fmt.Sprintf("URLs[%d]", i)
		ep, err := parseEndpoint(raw)
		if err != nil {
			return nil, &ConfigError{Field: field, Err: err}
		}
		if seen[ep.name] {
			return nil, bad(field, "duplicate target %s", ep.name)
		}
		seen[ep.name] = true
		out = append(out, ep)
	}
	return out, nil
}

var schemeRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.\-]*://`)

func parseEndpoint(raw string) (endpoint, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return endpoint{}, errors.New("empty URL")
	}
	if strings.Contains(s, "@") {
		// User info, perhaps with an unescaped '/' or '?' in the password
		// that would make url.Parse take part of it for the host. Refused
		// before parsing, so the password never enters a url.URL nor an
		// error, and the URL is not quoted back.
		return endpoint{}, errors.New("user info ('@') in the URL is not accepted: set User and PasswordFile")
	}
	if !schemeRE.MatchString(s) {
		// The bare form is host[:port] and nothing else: with a path or
		// a query it is a URL that lost its scheme.
		if strings.ContainsAny(s, "/?#") {
			return endpoint{}, errors.New("a URL needs its scheme (https://); without one, only host[:port] is accepted")
		}
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Error quotes the input: say nothing about it.
		return endpoint{}, errors.New("not a valid URL")
	}
	if u.Scheme != "https" {
		return endpoint{}, fmt.Errorf("scheme %q: only https is supported", u.Scheme)
	}
	if u.Hostname() == "" {
		return endpoint{}, errors.New("no host in URL")
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/sdk"
	}
	u.RawQuery, u.Fragment = "", ""
	return endpoint{name: u.Host, host: u.Hostname(), url: u}, nil
}

// parseThumbprints accepts comma separated SHA-1 (20 bytes) or SHA-256
// (32 bytes) fingerprints in hex, with or without colons, any case.
func parseThumbprints(s string) ([][]byte, error) {
	var out [][]byte
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		b, err := hex.DecodeString(strings.ReplaceAll(f, ":", ""))
		if err != nil || (len(b) != 20 && len(b) != 32) {
			return nil, fmt.Errorf("%q is not a SHA-1 or SHA-256 hex fingerprint", f)
		}
		out = append(out, b)
	}
	return out, nil
}

// hostFilter compiles HostInclude and HostExclude, each anchored at both
// ends; an empty one is nil.
func (c Config) hostFilter() (hostFilter, error) {
	var f hostFilter
	for _, r := range []struct {
		field, expr string
		dst         **regexp.Regexp
	}{{"HostInclude", c.HostInclude, &f.include}, {"HostExclude", c.HostExclude, &f.exclude}} {
		if r.expr == "" {
			continue
		}
		re, err := regexp.Compile(`^(?:` + r.expr + `)$`)
		if err != nil {
			return hostFilter{}, &ConfigError{Field: r.field, Err: err}
		}
		*r.dst = re
	}
	return f, nil
}

// hostFilter decides which hosts the inventory keeps, by name.
type hostFilter struct{ include, exclude *regexp.Regexp }

func (f hostFilter) keep(name string) bool {
	return (f.include == nil || f.include.MatchString(name)) && (f.exclude == nil || !f.exclude.MatchString(name))
}
