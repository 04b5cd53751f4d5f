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
)

// Config says which vCenters to probe and how.
//
// Start from DefaultConfig: a zero duration means its default, but a zero
// MaxRetries and a false PauseOnNetworkDown are taken as written.
type Config struct {
	// URLs are vCenter SDK endpoints, https://host[:port]/sdk; a bare
	// host[:port] means exactly that. User info in a URL is used only when
	// User or Password/PasswordFile are empty and is never shown.
	URLs []string
	User string
	// PasswordFile is read again whenever it changes (a rotated Kubernetes
	// secret). It wins over Password.
	PasswordFile string
	Password     string

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
	return c
}

// Validate reports the first problem as a *ConfigError naming the field.
// Error text never contains URL user info.
func (c Config) Validate() error {
	_, err := c.withDefaults().targets()
	return err
}

// target is one parsed endpoint.
type endpoint struct {
	name     string // host[:port]: the label and the name in every message
	url      *url.URL
	host     string // for TLS verification
	user     string
	password string // from the URL, used only if Config has none
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
		{"MaxBackoff", c.MaxBackoff}, {"MaxNetworkWait", c.MaxNetworkWait},
	} {
		if d.v < 0 {
			return nil, bad(d.name, "must not be negative, got %v", d.v)
		}
	}
	if c.MaxRetries < 0 {
		return nil, bad("MaxRetries", "must not be negative, got %d", c.MaxRetries)
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
		if c.User == "" && ep.user == "" {
			return nil, bad("User", "required (or user info in %s)", field)
		}
		if c.PasswordFile == "" && c.Password == "" && ep.password == "" {
			return nil, bad("PasswordFile", "PasswordFile or Password is required")
		}
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
	if !schemeRE.MatchString(s) {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Error quotes the input, and a malformed URL cannot be
		// trusted to be redacted correctly: say nothing about it.
		return endpoint{}, errors.New("not a valid URL")
	}
	if strings.Contains(u.Path, "@") || strings.Contains(u.RawQuery, "@") {
		// Most likely user info with an unescaped '/' or '?' in the
		// password, parsed as host and path: the "host" would leak it.
		return endpoint{}, errors.New("'@' after the host: percent-encode '/', '?' and '#' in user info")
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
	ep := endpoint{name: u.Host, host: u.Hostname()}
	if u.User != nil {
		ep.user = u.User.Username()
		ep.password, _ = u.User.Password()
		u.User = nil
	}
	u.RawQuery, u.Fragment = "", ""
	ep.url = u
	return ep, nil
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

// userinfoRE matches the user info of a URL anywhere in a text. It runs to
// the last '@' before the path, as url.Parse does, so a raw '@' inside a
// password does not leave the rest of it behind.
var userinfoRE = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.\-]*://)[^/?#\s"']*@`)

func redactUserinfo(s string) string { return userinfoRE.ReplaceAllString(s, "$1") }

// redact removes URL user info and every given secret from s. It is
// applied to every error text that leaves the package (Status.Reason, logs).
func redact(s string, secrets ...string) string {
	s = redactUserinfo(s)
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "REDACTED")
		}
	}
	return s
}
