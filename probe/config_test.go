package probe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	good := func() Config {
		c := DefaultConfig()
		c.URLs = []string{"vc.example"}
		c.User, c.Password = "u", "p"
		return c
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"zero durations mean defaults", func(c *Config) { c.Interval, c.Timeout, c.BaseBackoff, c.MaxBackoff = 0, 0, 0, 0 }, ""},
		{"password file instead", func(c *Config) { c.Password, c.PasswordFile = "", "/run/secrets/pw" }, ""},
		{"credentials in URL", func(c *Config) { c.URLs = []string{"https://u:p@vc/sdk"} }, "URLs[0]"},
		{"user in URL", func(c *Config) { c.URLs = []string{"u@vc"} }, "URLs[0]"},
		{"pin", func(c *Config) { c.Thumbprint = strings.Repeat("ab:", 19) + "ab" }, ""},
		{"two pins", func(c *Config) { c.Thumbprint = strings.Repeat("ab", 20) + ", " + strings.Repeat("CD", 32) }, ""},
		{"no URLs", func(c *Config) { c.URLs = nil }, "URLs"},
		{"empty URL", func(c *Config) { c.URLs = []string{"vc", " "} }, "URLs[1]"},
		{"http", func(c *Config) { c.URLs = []string{"http://vc/sdk"} }, "URLs[0]"},
		{"bad port", func(c *Config) { c.URLs = []string{"https://vc:port/sdk"} }, "URLs[0]"},
		{"no host", func(c *Config) { c.URLs = []string{"https:///sdk"} }, "URLs[0]"},
		{"duplicate", func(c *Config) { c.URLs = []string{"vc", "https://vc/sdk"} }, "URLs[1]"},
		{"no user", func(c *Config) { c.User = "" }, "User"},
		{"no password", func(c *Config) { c.Password = "" }, "PasswordFile"},
		{"negative interval", func(c *Config) { c.Interval = -time.Second }, "Interval"},
		{"negative timeout", func(c *Config) { c.Timeout = -1 }, "Timeout"},
		{"negative retries", func(c *Config) { c.MaxRetries = -1 }, "MaxRetries"},
		{"negative network wait", func(c *Config) { c.MaxNetworkWait = -1 }, "MaxNetworkWait"},
		{"one failed login", func(c *Config) { c.MaxFailedLogins = 1 }, ""},
		{"zero failed-login limit means the default", func(c *Config) { c.MaxFailedLogins, c.FailedLoginWindow = 0, 0 }, ""},
		{"negative failed-login limit", func(c *Config) { c.MaxFailedLogins = -1 }, "MaxFailedLogins"},
		{"negative failed-login window", func(c *Config) { c.FailedLoginWindow = -time.Second }, "FailedLoginWindow"},
		{"base above max", func(c *Config) { c.BaseBackoff, c.MaxBackoff = time.Minute, time.Second }, "BaseBackoff"},
		{"insecure and CA", func(c *Config) { c.Insecure, c.CAFile = true, "/ca.pem" }, "Insecure"},
		{"insecure and pin", func(c *Config) { c.Insecure, c.Thumbprint = true, strings.Repeat("ab", 20) }, "Insecure"},
		{"pin not hex", func(c *Config) { c.Thumbprint = "zz" }, "Thumbprint"},
		{"pin wrong length", func(c *Config) { c.Thumbprint = "abcd" }, "Thumbprint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			err := c.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if _, err := New(c, nil); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("Validate = %v, want a ConfigError for %s", err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %s", err, tc.field)
			}
			if _, err := New(c, nil); err == nil {
				t.Error("New accepted what Validate rejects")
			}
			if class, kind := Classify(err); class != Permanent || kind != KindConfig {
				t.Errorf("Classify = %s/%s, want permanent/config", class, kind)
			}
		})
	}
}

func TestValidateNeverEchoesCredentials(t *testing.T) {
	for _, raw := range []string{
		"https://admin:hunter2@vc:notaport/sdk",
		"https://admin:hun/ter2@vc/sdk", // '/' in a raw password breaks parsing
		"https://admin:123/ter2@vc/sdk", // ... or parses, with "admin:123" as host
		"http://admin:hunter2@vc/sdk",
		"https://admin:hunter2@/sdk",
		"admin:hunter2@vc",
		"https://admin:hunter2@vc/sdk",
		"https://admin:hunter2@vc:443/sdk",
		"https://admin:hun%2Fter2@vc/sdk",
	} {
		c := DefaultConfig()
		c.URLs, c.User, c.Password = []string{raw}, "u", "p"
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: accepted", raw)
			continue
		}
		mustContainNone(t, "Validate error", err.Error(), "hunter2", "ter2", "admin:")
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct{ in, name, url string }{
		{"vc.example", "vc.example", "https://vc.example/sdk"},
		{"vc.example:8443", "vc.example:8443", "https://vc.example:8443/sdk"},
		{"https://vc.example/", "vc.example", "https://vc.example/sdk"},
		{"https://vc.example/custom/sdk", "vc.example", "https://vc.example/custom/sdk"},
		{"https://10.0.0.5:443/sdk?x=1#y", "10.0.0.5:443", "https://10.0.0.5:443/sdk"},
		{"[fd00::5]:443", "[fd00::5]:443", "https://[fd00::5]:443/sdk"},
	} {
		ep, err := parseEndpoint(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if ep.name != tc.name || ep.url.String() != tc.url || ep.url.User != nil {
			t.Errorf("%s: name %q url %q, want %q %q", tc.in, ep.name, ep.url, tc.name, tc.url)
		}
	}
}

// TestConfigPrintsNoPassword: a Config printed or logged whole, with any
// verb or as JSON, does not show the password.
func TestConfigPrintsNoPassword(t *testing.T) {
	const pw = "Hunter2-in-config"
	c := DefaultConfig()
	c.URLs, c.User, c.Password = []string{"vc.example"}, "u", pw
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "cfg", c, "ptr", &c)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cfg", c)
	for _, out := range []string{
		fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s %q", c, c, c, c, c), fmt.Sprintf("%+v", &c),
		fmt.Sprintf("%+v", struct{ C Config }{c}), string(js), logs.String(),
	} {
		mustContainNone(t, "printed Config", out, pw)
		if !strings.Contains(out, "vc.example") {
			t.Errorf("printed Config lost its other fields: %s", out)
		}
	}
	if c.Password != pw {
		t.Error("printing changed the Config")
	}
}
