package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/linkgate/linkgate/probe"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	baseReachHook = func(o *probe.ReachOptions) { o.Dialer = loopbackOnly }
	goleak.VerifyTestMain(m)
}

// loopbackOnly is the host reachability probes' dialer in this package's
// tests unless a test sets its own: the simulator's host names (DC0_H0)
// resolve nowhere, and asking the machine's resolver would send them off
// the machine. A name gets "no such host", as from a resolver, without
// asking one; an address must be loopback.
func loopbackOnly(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
	}
	if !ip.IsLoopback() {
		return nil, fmt.Errorf("test dialer: %s is not loopback: tests dial nothing else", addr)
	}
	return new(net.Dialer).DialContext(ctx, network, addr)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runCLI runs linkgate with args and returns exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// The seed's example, verbatim (hyper2kvm docs, "Configuration").
const seedExample = `cmd: daemon

# Network monitoring
network_monitor:
  enabled: true
  required_interfaces: ["eth0", "ens192"]  # Interfaces to monitor
  max_network_wait_s: 300  # 5 minutes
  pause_on_network_down: true  # Pause operations when network is down

# Connection retry (works with network monitor)
vc_connection_max_retries: 10  # More retries for network issues
vc_connection_base_backoff_s: 5.0
vc_connection_max_backoff_s: 60.0
`

func TestSeedExampleIsValid(t *testing.T) {
	path := writeFile(t, "seed.yml", seedExample)
	code, out, errOut := runCLI(t, "exporter", "--config", path, "--config.check")
	if code != exitOK || !strings.Contains(out, "valid") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	p, code := parse([]string{"exporter", "--config", path}, &bytes.Buffer{}, &bytes.Buffer{})
	if code >= 0 {
		t.Fatalf("parse exit %d", code)
	}
	x := p.cli.Exporter
	if got := strings.Join(x.RequiredInterfaces, ","); got != "eth0,ens192" {
		t.Errorf("required interfaces = %q", got)
	}
	if x.MaxWait != 300*time.Second || !x.PauseOnDown || !x.Monitor {
		t.Errorf("network_monitor: %+v", x.networkFlags)
	}
	if x.MaxRetries != 10 || x.BaseBackoff != 5*time.Second || x.MaxBackoff != time.Minute {
		t.Errorf("vc_connection_*: retries %d base %s max %s", x.MaxRetries, x.BaseBackoff, x.MaxBackoff)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		args []string
		env  map[string]string
		want []string
	}{
		{
			name: "unknown key",
			file: "network_monitor:\n  enabled: true\n  requird_interfaces: [eth0]\n",
			want: []string{"cfg.yml:3: unknown key \"network_monitor.requird_interfaces\"", "network_monitor.required_interfaces"},
		},
		{
			name: "unknown top-level key",
			file: "vc_connection_max_retries: 3\nvc_conection_timeout_s: 5\n",
			want: []string{"cfg.yml:2: unknown key \"vc_conection_timeout_s\""},
		},
		{
			name: "wrong type int",
			file: "vc_connection_max_retries: many\n",
			want: []string{"cfg.yml:1: vc_connection_max_retries: want an integer, got the string \"many\""},
		},
		{
			name: "wrong type bool",
			file: "network_monitor:\n  pause_on_network_down: 3\n",
			want: []string{"cfg.yml:2: network_monitor.pause_on_network_down: want true or false, got the integer 3"},
		},
		{
			name: "wrong type seconds",
			file: "vc_connection_base_backoff_s: [1]\n",
			want: []string{"cfg.yml:1: vc_connection_base_backoff_s: want a single value, got a list"},
		},
		{
			name: "negative seconds",
			file: "network_monitor:\n  max_network_wait_s: -4\n",
			want: []string{"cfg.yml:2: network_monitor.max_network_wait_s: want a number of seconds from 0 to 9223372036 (292 years), got the integer -4"},
		},
		{
			name: "duplicate key",
			file: "vc_connection_max_retries: 3\nvc_connection_max_retries: 4\n",
			want: []string{"cfg.yml:2: duplicate key \"vc_connection_max_retries\" (first at line 1)"},
		},
		{
			name: "not a mapping",
			file: "- a\n- b\n",
			want: []string{"cfg.yml:1: the file must be a mapping"},
		},
		{
			name: "yaml syntax",
			file: "network_monitor:\n  enabled: [true\n",
			want: []string{"cfg.yml: line"},
		},
		{
			name: "bad regexp in file",
			file: "collector:\n  device_include: \"eth(\"\n",
			want: []string{"cfg.yml:2: collector.device_include: invalid regexp \"eth(\""},
		},
		{
			name: "bad regexp flag",
			args: []string{"--collector.device-exclude", "[a-"},
			want: []string{"--collector.device-exclude: invalid regexp \"[a-\""},
		},
		{
			name: "include and exclude",
			file: "collector:\n  device_include: eth.*\n",
			args: []string{"--collector.device-exclude", "lo"},
			want: []string{"cfg.yml:2: collector.device_include and --collector.device-exclude: set only one of them (include or exclude)"},
		},
		{
			name: "bad env regexp",
			env:  map[string]string{"LINKGATE_COLLECTOR_DEVICE_INCLUDE": "(("},
			want: []string{"LINKGATE_COLLECTOR_DEVICE_INCLUDE: invalid regexp"},
		},
		{
			name: "backoff order",
			file: "vc_connection_base_backoff_s: 10\nvc_connection_max_backoff_s: 5\n",
			want: []string{"cfg.yml:2: vc_connection_max_backoff_s: want at least --vcenter.base-backoff (10s), got 5s"},
		},
		{
			name: "auto outside sidecar",
			args: []string{"--network.required-interfaces", "auto"},
			want: []string{"--network.required-interfaces: 'auto' is only available to the sidecar command"},
		},
		{
			name: "credentials in url",
			args: []string{"--vcenter.url", "https://root:hunter2@vc.example/sdk"},
			want: []string{"credentials in the URL are not accepted"},
		},
		{
			name: "missing config file",
			args: []string{"--config", "/nonexistent/linkgate.yml"},
			want: []string{"--config: open /nonexistent/linkgate.yml: no such file or directory"},
		},
		{
			name: "bad log level",
			args: []string{"--log.level", "loud"},
			want: []string{"--log.level must be one of"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := []string{"exporter", "--config.check"}
			if tc.file != "" {
				args = append(args, "--config", writeFile(t, "cfg.yml", tc.file))
			}
			args = append(args, tc.args...)
			code, _, errOut := runCLI(t, args...)
			if code != exitInvalid {
				t.Errorf("exit code %d, want %d; stderr: %s", code, exitInvalid, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			if strings.Contains(errOut, "hunter2") {
				t.Errorf("secret leaked into error: %s", errOut)
			}
			if strings.Contains(errOut, "panic") {
				t.Errorf("panic: %s", errOut)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "cfg.yml", `
vc_connection_max_retries: 7
vc_connection_timeout_s: 4
vc_connection_max_backoff_s: 40
web:
  telemetry_path: /file-metrics
`)
	t.Setenv("LINKGATE_VCENTER_MAX_RETRIES", "5")
	t.Setenv("LINKGATE_VCENTER_TIMEOUT", "6s")
	p, code := parse([]string{"exporter", "--config", file, "--vcenter.max-retries", "9"}, &bytes.Buffer{}, &bytes.Buffer{})
	if code >= 0 {
		t.Fatalf("parse exit %d", code)
	}
	x := p.cli.Exporter
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"flag beats env and file", x.MaxRetries, 9},
		{"env beats file", x.Timeout, 6 * time.Second},
		{"file beats default", x.MaxBackoff, 40 * time.Second},
		{"file beats default (linkgate key)", x.TelemetryPath, "/file-metrics"},
		{"default", x.Interval, 15 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}
}

func TestConfigFileFromEnvironment(t *testing.T) {
	file := writeFile(t, "cfg.yml", "vc_connection_max_retries: 12\n")
	t.Setenv("LINKGATE_CONFIG", file)
	p, code := parse([]string{"exporter"}, &bytes.Buffer{}, &bytes.Buffer{})
	if code >= 0 {
		t.Fatalf("parse exit %d", code)
	}
	if p.cli.Exporter.MaxRetries != 12 {
		t.Errorf("max retries = %d, want 12 from LINKGATE_CONFIG", p.cli.Exporter.MaxRetries)
	}
}

func TestRelativePathsFollowTheFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "cfg.yml")
	if err := os.WriteFile(file, []byte("vcenter:\n  password_file: pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, code := parse([]string{"exporter", "--config", file}, &bytes.Buffer{}, &bytes.Buffer{})
	if code >= 0 {
		t.Fatalf("parse exit %d", code)
	}
	if got := p.cli.Exporter.PasswordFile; got != filepath.Join(dir, "pw") {
		t.Errorf("password file = %q", got)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	if code != exitOK || !strings.Contains(out, "linkgate") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

func TestEmptyConfigIsValid(t *testing.T) {
	code, _, errOut := runCLI(t, "exporter", "--config.check", "--config", writeFile(t, "empty.yml", "# nothing\n"))
	if code != exitOK {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

func TestProbeConfigErrors(t *testing.T) {
	ca := writeFile(t, "ca.pem", "not a certificate")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"insecure with pin", []string{"--vcenter.url", "https://vc.example/sdk", "--vcenter.insecure", "--vcenter.thumbprint", "AA:BB"}, "--vcenter."},
		{"bad thumbprint", []string{"--vcenter.url", "https://vc.example/sdk", "--vcenter.thumbprint", "zz"}, "--vcenter.thumbprint: "},
		{"missing password file", []string{"--vcenter.url", "https://vc.example/sdk", "--vcenter.password-file", "/nonexistent/pw"}, "--vcenter.password-file: "},
		{"no user", []string{"--vcenter.url", "https://vc.example/sdk"}, "--vcenter.user: required"},
		{"no password", []string{"--vcenter.url", "https://vc.example/sdk", "--vcenter.user", "u", "--vcenter.password-file", ""}, ""},
		{"ca file without a certificate", []string{"--vcenter.url", "https://vc.example/sdk", "--vcenter.user", "u", "--vcenter.ca-file", ca}, "--vcenter.ca-file: no PEM certificate in " + ca},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(passwordEnv, "s3cret")
			code, _, errOut := runCLI(t, append([]string{"exporter", "--config.check"}, tc.args...)...)
			if strings.Contains(errOut, "s3cret") {
				t.Errorf("password in error output: %s", errOut)
			}
			if tc.want == "" {
				if code != exitOK {
					t.Errorf("exit %d: %s", code, errOut)
				}
				return
			}
			if code != exitInvalid || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q, want %q", code, errOut, tc.want)
			}
		})
	}
}

func TestVCenterNeedsAPassword(t *testing.T) {
	os.Unsetenv(passwordEnv)
	code, _, errOut := runCLI(t, "exporter", "--config.check", "--vcenter.url", "https://vc.example/sdk", "--vcenter.user", "u")
	if code != exitInvalid || !strings.Contains(errOut, "--vcenter.password-file: a vCenter password is needed") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

func TestSecondDocumentIsAnError(t *testing.T) {
	code, _, errOut := runCLI(t, "exporter", "--config.check", "--config", writeFile(t, "two.yml", "vc_connection_max_retries: 3\n---\nbogus: 1\n"))
	if code != exitInvalid || !strings.Contains(errOut, "two.yml:2: a second YAML document") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

func TestURLCredentialsNeverEchoed(t *testing.T) {
	for _, u := range []string{"admin:Passw0rd@vc.example.com", "https://admin:Passw0rd@vc.example.com/sdk"} {
		code, _, errOut := runCLI(t, "exporter", "--config.check", "--vcenter.url", u)
		if code != exitInvalid || strings.Contains(errOut, "Passw0rd") || !strings.Contains(errOut, "credentials in the URL are not accepted") {
			t.Errorf("%s: exit %d: %s", u, code, errOut)
		}
	}
	code, _, errOut := runCLI(t, "wait", "--url", "admin:Passw0rd@localhost:9977/ready", "--timeout", "1s")
	if code != 2 || strings.Contains(errOut, "Passw0rd") {
		t.Errorf("wait: exit %d: %s", code, errOut)
	}
}

// TestHostileConfigsNeverEchoSecrets: a token in a place it does not
// belong is reported by file:line and key, never shown (issue 8, item 6).
func TestHostileConfigsNeverEchoSecrets(t *testing.T) {
	const token = "T0K3N-abc"
	for _, tc := range []struct {
		name string
		file string
		args []string
		env  map[string]string
		want string
	}{
		{name: "custom tag in webhook_urls", file: "notify:\n  webhook_urls: [ !custom https://hooks.example.test/T0K3N-abc ]\n",
			want: "cfg.yml:2: notify.webhook_urls: want a list of strings; the element at line 2 is a value with a custom tag (not shown: this key may hold a secret)"},
		{name: "webhook URL as a tag", file: "notify:\n  webhook_urls: [ !https://hooks.example.test/T0K3N-abc x ]\n",
			want: "cfg.yml:2: notify.webhook_urls: want a list of strings; the element at line 2 is a value with a custom tag"},
		{name: "custom tag on the webhook_urls scalar", file: "notify:\n  webhook_urls: !custom https://hooks.example.test/T0K3N-abc\n",
			want: "cfg.yml:2: notify.webhook_urls: want a string or a list of strings, got a value with a custom tag (not shown: this key may hold a secret)"},
		{name: "mapping in webhook_urls", file: "notify:\n  webhook_urls: {https://hooks.example.test/T0K3N-abc: 1}\n",
			want: "cfg.yml:2: notify.webhook_urls: want a string or a list of strings, got a mapping"},
		{name: "URL in webhook_format", file: "notify:\n  webhook_format: https://hooks.example.test/T0K3N-abc\n",
			want: "cfg.yml:2: notify.webhook_format: want generic, slack or discord (the value is not shown: it may hold a webhook URL)"},
		{name: "tagged URL in webhook_format", file: "notify:\n  webhook_format: !x https://hooks.example.test/T0K3N-abc\n",
			want: "cfg.yml:2: notify.webhook_format: want a string, got a value with a custom tag (not shown: this key may hold a secret)"},
		{name: "list in webhook_format", file: "notify:\n  webhook_format: [https://hooks.example.test/T0K3N-abc]\n",
			want: "cfg.yml:2: notify.webhook_format: want a single value, got a list"},
		{name: "not an http URL", file: "notify:\n  webhook_urls: [ftp://hooks.example.test/T0K3N-abc]\n",
			want: "cfg.yml:2: notify.webhook_urls: want an http(s) URL, got ftp://hooks.example.test (the rest is not shown: a webhook URL holds a token)"},
		{name: "no scheme", file: "notify:\n  webhook_urls: hooks.example.test/T0K3N-abc\n",
			want: "cfg.yml:2: notify.webhook_urls: want an http(s) URL, got <URL without a host>"},
		{name: "URL as the notify section", file: "notify: https://hooks.example.test/T0K3N-abc\n",
			want: "cfg.yml:1: notify: want a mapping (keys: email, webhook_format, webhook_urls), got a string (not shown: this key may hold a secret)"},
		{name: "URL as a key", file: "notify: {https://hooks.example.test/T0K3N-abc}\n",
			want: "cfg.yml:1: unknown key (not shown: a key is lower-case letters, digits and '_') (known keys here: notify.email.ca_file, notify.email.from, notify.email.password_file, notify.email.server, notify.email.tls, notify.email.to, notify.email.user, notify.webhook_format, notify.webhook_urls)"},
		{name: "token as a duplicate key", file: "notify:\n  T0K3N-abc: 1\n  T0K3N-abc: 2\n",
			want: "cfg.yml:3: duplicate key (not shown: a key is lower-case letters, digits and '_') (first at line 2)"},
		{name: "token as an alias", file: "cmd: x\nnotify:\n  webhook_urls: *T0K3N-abc\n",
			want: "cfg.yml:3: an alias (*name) refers to no anchor (&name) before it; the name is not shown"},
		{name: "unclosed list", file: "notify:\n  webhook_urls: [https://hooks.example.test/T0K3N-abc\n",
			want: "cfg.yml: line 1: did not find expected ',' or ']'"}, // yaml.v3's own (0-based) line: see yamlError
		{name: "vCenter user info under a tag", file: "vcenter:\n  targets: [!x https://root:T0K3N-abc@vc.example/sdk]\n",
			want: "cfg.yml:2: vcenter.targets: want a list of strings; the element at line 2 is a value with a custom tag"},
		{name: "vCenter user info", file: "vcenter:\n  targets: [https://root:T0K3N-abc@vc.example/sdk]\n",
			want: "cfg.yml:2: vcenter.targets: https://vc.example/sdk: credentials in the URL are not accepted"},
		{name: "password in password_file", file: "vcenter:\n  password_file: !secret T0K3N-abc\n",
			want: "cfg.yml:2: vcenter.password_file: want a path, got a value with a custom tag (not shown: this key may hold a secret)"},
		{name: "URL in the webhook format variable", env: map[string]string{"LINKGATE_NOTIFY_WEBHOOK_FORMAT": "https://hooks.example.test/T0K3N-abc"},
			want: "LINKGATE_NOTIFY_WEBHOOK_FORMAT: want generic, slack or discord (the value is not shown: it may hold a webhook URL)"},
		{name: "URL in the webhook format flag", args: []string{"--notify.webhook-format", "https://hooks.example.test/T0K3N-abc"},
			want: "--notify.webhook-format: want generic, slack or discord (the value is not shown: it may hold a webhook URL)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := []string{"sidecar", "--config.check"}
			if tc.file != "" {
				args = append(args, "--config", writeFile(t, "cfg.yml", tc.file))
			}
			code, _, errOut := runCLI(t, append(args, tc.args...)...)
			if code != exitInvalid {
				t.Errorf("exit %d, want %d", code, exitInvalid)
			}
			if strings.Contains(errOut, token) || strings.Contains(errOut, "T0K3N") {
				t.Errorf("the token is echoed: %s", errOut)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr %q\nlacks %q", errOut, tc.want)
			}
		})
	}
}

// testCAFile writes a real PEM certificate.
func testCAFile(t *testing.T) string {
	t.Helper()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	srv.Close()
	return writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
}

// TestMessagesNameFlagValueAndAllowed: each message names the flag, the
// variable or file:line and key, the value, and what is allowed (issue 8,
// item 7). The whole of stderr is compared.
func TestMessagesNameFlagValueAndAllowed(t *testing.T) {
	pw := writeFile(t, "pw", "secret\n")
	vc := []string{"--vcenter.user", "u", "--vcenter.password-file", pw}
	for _, tc := range []struct {
		name string
		args []string
		file string // written to cfg.yml and passed with --config; @ in want is its path
		env  map[string]string
		want string
	}{
		{name: "seconds beyond a duration", args: []string{"exporter"}, file: "vc_connection_timeout_s: 1e300\n",
			want: "@:1: vc_connection_timeout_s: want a number of seconds from 0 to 9223372036 (292 years), got the number 1e300"},
		{name: "seconds not a number", args: []string{"exporter"}, file: "vc_connection_timeout_s: .nan\n",
			want: "@:1: vc_connection_timeout_s: want a number of seconds from 0 to 9223372036 (292 years), got the number .nan"},
		{name: "zero timeout", args: []string{"exporter"}, file: "vc_connection_timeout_s: 0\n",
			want: "@:1: vc_connection_timeout_s: want a positive duration like 10s, got 0s"},
		{name: "section given a list", args: []string{"exporter"}, file: "network_monitor: [1,2]\n",
			want: "@:1: network_monitor: want a mapping (keys: enabled, max_network_wait_s, pause_on_network_down, required_interfaces), got a list"},
		{name: "listen address with too many colons", args: []string{"exporter", "--web.listen-address", "::::99999"},
			want: `--web.listen-address: want host:port, [IPv6]:port or :port with a port from 0 to 65535, got "::::99999" (too many colons in address)`},
		{name: "listen port out of range", args: []string{"exporter", "--web.listen-address", ":9977", "--web.listen-address", "[::1]:99999"},
			want: `--web.listen-address: want host:port, [IPv6]:port or :port with a port from 0 to 65535, got "[::1]:99999" (port 99999 out of range)`},
		{name: "listen host", args: []string{"exporter", "--web.listen-address", "a b:80"},
			want: `--web.listen-address: want host:port, [IPv6]:port or :port with a port from 0 to 65535, got "a b:80" ("a b" is neither an IP address nor a host name)`},
		{name: "wait timeout negative, separate", args: []string{"wait", "--timeout", "-1s"},
			want: "--timeout: want a duration of 0 (look once) or more like 30s, got -1s"},
		{name: "wait timeout negative, joined", args: []string{"wait", "--timeout=-1s"},
			want: "--timeout: want a duration of 0 (look once) or more like 30s, got -1s"},
		{name: "wait default timeout negative", args: []string{"wait"}, env: map[string]string{"LINKGATE_NETWORK_MAX_WAIT": "-5s"},
			want: "LINKGATE_NETWORK_MAX_WAIT: want a duration of 0 (look once) or more like 30s, got -5s"},
		{name: "vcenter timeout negative", args: []string{"exporter", "--vcenter.timeout", "-1s"},
			want: "--vcenter.timeout: want a positive duration like 10s, got -1s"},
		{name: "vcenter interval from the environment", args: []string{"exporter"}, env: map[string]string{"LINKGATE_VCENTER_INTERVAL": "0s"},
			want: "LINKGATE_VCENTER_INTERVAL: want a positive duration like 15s, got 0s"},
		{name: "vcenter url scheme", args: append([]string{"exporter", "--vcenter.url", "http://vc.example/sdk"}, vc...),
			want: `--vcenter.url: http://vc.example/sdk: scheme "http": only https is supported (want https://host[:port][/sdk] or host[:port], each once)`},
		{name: "second vcenter url", args: append([]string{"exporter", "--vcenter.url", "https://a.example/sdk", "--vcenter.url", "ftp://b.example/sdk?k=v"}, vc...),
			want: `--vcenter.url: ftp://b.example/sdk: scheme "ftp": only https is supported (want https://host[:port][/sdk] or host[:port], each once)`},
		{name: "duplicate vcenter url", args: append([]string{"exporter", "--vcenter.url", "https://a.example/sdk", "--vcenter.url", "a.example"}, vc...),
			want: `--vcenter.url: a.example: duplicate target a.example (want https://host[:port][/sdk] or host[:port], each once)`},
		{name: "vcenter target in the file", args: append([]string{"exporter"}, vc...), file: "vcenter:\n  targets: [http://vc.example/sdk]\n",
			want: `@:2: vcenter.targets: http://vc.example/sdk: scheme "http": only https is supported (want https://host[:port][/sdk] or host[:port], each once)`},
		{name: "interface name", args: []string{"exporter", "--network.required-interfaces", "eth0/1"},
			want: `--network.required-interfaces: want interface names of 1 to 15 characters without '/', ':' or spaces, or 'auto', got "eth0/1"`},
		{name: "verify interval", args: []string{"exporter", "--collector.verify-interval", "-1s"},
			want: "--collector.verify-interval: want 0 (off) or a positive duration like 60s, got -1s"},
		{name: "telemetry path", args: []string{"exporter", "--web.telemetry-path", "metrics"},
			want: `--web.telemetry-path: want a path that starts with / and is not /, got "metrics"`},
		{name: "address family in the file", args: []string{"sidecar"}, file: "gate:\n  addresses: ipv4\n",
			want: `@:2: gate.addresses: address family "ipv4": want inet, inet6 or both`},
		{name: "stable-for negative", args: []string{"sidecar", "--gate.stable-for", "-2s"},
			want: "--gate.stable-for: want a duration of 0 or more like 2s, got -2s"},
		{name: "wait interface state", args: []string{"wait", "--interface", "eth0:upp"},
			want: `--interface: interface "eth0": operstate "upp": want one of notpresent, down, lowerlayerdown, testing, dormant, up`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := append(tc.args, "--config.check")
			want := tc.want
			if tc.file != "" {
				path := writeFile(t, "cfg.yml", tc.file)
				args = append(args, "--config", path)
				want = strings.ReplaceAll(want, "@", path)
			}
			code, _, errOut := runCLI(t, args...)
			if code != exitInvalid {
				t.Errorf("exit %d, want %d", code, exitInvalid)
			}
			if errOut != "linkgate: "+want+"\n" {
				t.Errorf("stderr:\n%s\nwant:\n%s", errOut, "linkgate: "+want)
			}
		})
	}
}

// TestNegativeDurationJoinKeepsShortFlags: only a duration flag followed by
// a negative duration is joined; -4 stays IPv4.
func TestNegativeDurationJoinKeepsShortFlags(t *testing.T) {
	p, code := parse([]string{"wait", "--timeout", "5s", "-4", "--any", "-6"}, &bytes.Buffer{}, &bytes.Buffer{})
	if code >= 0 {
		t.Fatalf("parse exit %d", code)
	}
	if w := p.cli.Wait; w.Timeout != 5*time.Second || !w.IPv4 || !w.IPv6 || !w.Any {
		t.Errorf("wait flags: %+v", w)
	}
	if _, code := parse([]string{"wait", "--timeout", "-4"}, &bytes.Buffer{}, &bytes.Buffer{}); code != exitInvalid {
		t.Errorf("--timeout -4 (no unit): exit %d, want %d", code, exitInvalid)
	}
}

// bigFile writes size bytes of YAML comment.
func bigFile(t *testing.T, name string, size int) string {
	t.Helper()
	b := bytes.Repeat([]byte("#234567\n"), size/8+1)
	return writeFile(t, name, string(b[:size]))
}

// TestFileLimitsAtStart: every file linkgate reads is refused at start,
// exit 2, with the flag, the path and the limit, and counted (issue 8,
// item 4).
func TestFileLimitsAtStart(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ca := testCAFile(t)
	pw := writeFile(t, "pw", "secret\n")
	bigConfig := bigFile(t, "big.yml", boundedfile.ConfigLimit+1)
	bigPassword := writeFile(t, "bigpw", strings.Repeat("p", boundedfile.PasswordLimit+1))
	bigCA := bigFile(t, "bigca.pem", boundedfile.CABundleLimit+1)
	emptyPassword := writeFile(t, "emptypw", "\n")
	garbageCA := writeFile(t, "garbage.pem", "not a certificate")
	webZeroCert := writeFile(t, "web.yml", "tls_server_config:\n  cert_file: /dev/zero\n  key_file: /dev/zero\n")
	pwInFile := writeFile(t, "cfg.yml", "vcenter:\n  password_file: "+bigPassword+"\n")
	vc := func(pwFile, caFile string) []string {
		return []string{"exporter", "--vcenter.url", "https://vc.example/sdk", "--vcenter.user", "u", "--vcenter.password-file", pwFile, "--vcenter.ca-file", caFile}
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		file boundedfile.File
		want string
	}{
		{"config /dev/zero", []string{"exporter", "--config", "/dev/zero"}, nil, boundedfile.Config,
			"--config: /dev/zero is a character device, not a regular file"},
		{"config from the environment", []string{"exporter"}, map[string]string{"LINKGATE_CONFIG": "/dev/zero"}, boundedfile.Config,
			"LINKGATE_CONFIG: /dev/zero is a character device, not a regular file"},
		{"config over the limit", []string{"exporter", "--config", bigConfig}, nil, boundedfile.Config,
			"--config: " + bigConfig + " is larger than the 64 KiB limit"},
		{"config FIFO", []string{"exporter", "--config", fifo}, nil, boundedfile.Config,
			"--config: " + fifo + " is a FIFO (named pipe), not a regular file"},
		{"config directory", []string{"exporter", "--config", filepath.Dir(fifo)}, nil, boundedfile.Config,
			"--config: " + filepath.Dir(fifo) + " is a directory, not a regular file"},
		{"password /dev/zero", vc("/dev/zero", ca), nil, boundedfile.Password,
			"--vcenter.password-file: /dev/zero is a character device, not a regular file"},
		{"password over the limit", vc(bigPassword, ca), nil, boundedfile.Password,
			"--vcenter.password-file: " + bigPassword + " is larger than the 4 KiB limit"},
		{"password over the limit, set in the file", []string{"exporter", "--config", pwInFile}, nil, boundedfile.Password,
			pwInFile + ":2: vcenter.password_file: " + bigPassword + " is larger than the 4 KiB limit"},
		{"password FIFO", vc(fifo, ca), nil, boundedfile.Password,
			"--vcenter.password-file: " + fifo + " is a FIFO (named pipe), not a regular file"},
		{"CA /dev/zero", vc(pw, "/dev/zero"), nil, boundedfile.CABundle,
			"--vcenter.ca-file: /dev/zero is a character device, not a regular file"},
		{"CA over the limit", vc(pw, bigCA), nil, boundedfile.CABundle,
			"--vcenter.ca-file: " + bigCA + " is larger than the 1 MiB limit"},
		{"wait CA /dev/zero", []string{"wait", "--url", "https://localhost:9977/ready", "--tls.ca-file", "/dev/zero"}, nil, boundedfile.CABundle,
			"--tls.ca-file: /dev/zero is a character device, not a regular file"},
		{"web config /dev/zero", []string{"exporter", "--web.config.file", "/dev/zero"}, nil, boundedfile.WebConfig,
			"--web.config.file: /dev/zero is a character device, not a regular file"},
		{"web config naming /dev/zero", []string{"exporter", "--web.config.file", webZeroCert}, nil, boundedfile.WebTLS,
			"--web.config.file: tls_server_config.cert_file: /dev/zero is a character device, not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			before := tc.file.Failures()
			done := make(chan struct{})
			var code int
			var errOut string
			go func() {
				defer close(done)
				code, _, errOut = runCLI(t, append(tc.args, "--config.check")...)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("blocked on the file")
			}
			if code != exitInvalid || errOut != "linkgate: "+tc.want+"\n" {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and:\nlinkgate: %s", code, errOut, exitInvalid, tc.want)
			}
			if got := tc.file.Failures() - before; got != 1 {
				t.Errorf("linkgate_file_read_errors_total{file=%q} rose by %d, want 1", tc.file, got)
			}
		})
	}

	// --config.check reads the files, not only their existence.
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"empty password file", vc(emptyPassword, ca), "--vcenter.password-file: " + emptyPassword + " is empty or holds only white space; want a file holding the password"},
		{"CA file without a certificate", vc(pw, garbageCA), "--vcenter.ca-file: no PEM certificate in " + garbageCA},
	} {
		code, _, errOut := runCLI(t, append(tc.args, "--config.check")...)
		if code != exitInvalid || errOut != "linkgate: "+tc.want+"\n" {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant:\nlinkgate: %s", tc.name, code, errOut, tc.want)
		}
	}
	if code, out, errOut := runCLI(t, append(vc(pw, ca), "--config.check")...); code != exitOK || out != "configuration is valid\n" {
		t.Errorf("valid files: exit %d: %s%s", code, out, errOut)
	}
	atLimit := writeFile(t, "atlimit", strings.Repeat("p", boundedfile.PasswordLimit))
	if code, _, errOut := runCLI(t, append(vc(atLimit, ca), "--config.check")...); code != exitOK {
		t.Errorf("password of exactly 4 KiB: exit %d: %s", code, errOut)
	}
}

// metricValue reads one series' value from an exposition.
func metricValue(t *testing.T, exposition, series string) string {
	t.Helper()
	for line := range strings.Lines(exposition) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no series %s in the exposition", series)
	return ""
}

// TestReloadKeepsRunningValuesOnOversizeFiles: on SIGHUP, a configuration
// or password file over its limit keeps what runs, says why in the log
// and counts it on /metrics.
func TestReloadKeepsRunningValuesOnOversizeFiles(t *testing.T) {
	cfg := writeFile(t, "linkgate.yml", "network_monitor:\n  required_interfaces: [va]\n")
	e := startSidecarWith(t, nil, "--config", cfg)
	e.waitStatus(t, http.StatusOK, "[+]vcenter ok")
	goodPassword, err := os.ReadFile(e.pwFile)
	if err != nil {
		t.Fatal(err)
	}
	hup := func(wantLog string) {
		t.Helper()
		from := len(e.log.String())
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(e.log.String()[from:], wantLog) {
			if time.Now().After(deadline) {
				t.Fatalf("log never said %q after SIGHUP:\n%s", wantLog, e.log.String()[from:])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, tc := range []struct {
		name    string
		file    boundedfile.File
		break_  func()
		restore func()
		want    string
	}{
		{"config", boundedfile.Config,
			func() { writeBig(t, cfg, boundedfile.ConfigLimit+1) },
			func() { overwrite(t, cfg, "network_monitor:\n  required_interfaces: [va]\n") },
			"--config: " + cfg + " is larger than the 64 KiB limit"},
		{"password", boundedfile.Password,
			func() { writeBig(t, e.pwFile, boundedfile.PasswordLimit+1) },
			func() { overwrite(t, e.pwFile, string(goodPassword)) },
			"--vcenter.password-file: " + e.pwFile + " is larger than the 4 KiB limit"},
	} {
		before := tc.file.Failures()
		tc.break_()
		hup("keeping the running configuration")
		if log := e.log.String(); !strings.Contains(log, tc.want) {
			t.Errorf("%s: the log does not say why:\n%s", tc.name, log)
		}
		if got := tc.file.Failures() - before; got != 1 {
			t.Errorf("%s: counted %d failed reads, want 1", tc.name, got)
		}
		_, body := get(t, e.base+"/metrics")
		if got := metricValue(t, body, `linkgate_file_read_errors_total{file="`+tc.file.String()+`"}`); got != strconv.FormatUint(tc.file.Failures(), 10) {
			t.Errorf("%s: /metrics says %s failed reads, want %d", tc.name, got, tc.file.Failures())
		}
		e.waitStatus(t, http.StatusOK, "[+]links ok", "[+]vcenter ok")
		tc.restore()
		hup("configuration reloaded")
	}
}

func overwrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeBig(t *testing.T, path string, size int) {
	t.Helper()
	overwrite(t, path, strings.Repeat("#", size))
}

// TestProbeRereadRefusesOversizeFiles: the probe reads the password at
// each login and the CA bundle at each connection. A file over its limit
// fails that attempt before anything reaches vCenter (no failed login
// toward the SSO lockout), says why in the target's reason, and is counted.
func TestProbeRereadRefusesOversizeFiles(t *testing.T) {
	sim, pwFile := startSim(t)
	env := &runEnv{logger: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		name   string
		file   boundedfile.File
		pw, ca string
		want   string
	}{
		{"password", boundedfile.Password, bigFile(t, "bigpw", boundedfile.PasswordLimit+1), sim.CAFile, "is larger than the 4 KiB limit"},
		{"CA bundle", boundedfile.CABundle, pwFile, "/dev/zero", "/dev/zero is a character device, not a regular file"},
	} {
		// Parsed, not validated: validation would refuse the file at start.
		parsed, code := parse([]string{"exporter", "--vcenter.url", sim.URL, "--vcenter.user", sim.User,
			"--vcenter.password-file", tc.pw, "--vcenter.ca-file", tc.ca}, &bytes.Buffer{}, &bytes.Buffer{})
		if code >= 0 {
			t.Fatalf("parse exit %d", code)
		}
		x := parsed.cli.Exporter
		p, err := x.newProber(env, &x.networkFlags, &x.vsphereFlags, nil)
		if err != nil {
			t.Fatal(err)
		}
		before := tc.file.Failures()
		st := p.ProbeOnce(context.Background())
		if len(st) != 1 || st[0].Up || st[0].Kind != "config" || !strings.Contains(st[0].Reason, tc.want) {
			t.Errorf("%s: status %+v, want down, kind config, reason with %q", tc.name, st, tc.want)
		}
		if got := tc.file.Failures() - before; got != 1 {
			t.Errorf("%s: counted %d failed reads, want 1", tc.name, got)
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(p)
		if f := loginFailures(t, reg); f != 0 {
			t.Errorf("%s: %v failed logins; a refused file must not reach vCenter", tc.name, f)
		}
	}
}

// loginFailures sums linkgate_vcenter_logins_total{result="failure"}.
func loginFailures(t *testing.T, g prometheus.Gatherer) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "linkgate_vcenter_logins_total" {
			continue
		}
		found = true
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "failure" {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	if !found {
		t.Fatal("no linkgate_vcenter_logins_total")
	}
	return sum
}

func TestConfigErrorsAreBounded(t *testing.T) {
	path := writeFile(t, "cfg.yml", strings.Repeat("bogus_key: 1\n", 1000))
	code, _, errOut := runCLI(t, "exporter", "--config.check", "--config", path)
	if code != exitInvalid {
		t.Errorf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) != maxConfigErrors+1 || lines[len(lines)-1] != path+": and 980 more problems" {
		t.Errorf("%d lines, ending %q", len(lines), lines[len(lines)-1])
	}
}

// TestCLIShape: --config, --config.check and --log.* may also come before
// the command (deploy/README and existing units write them there);
// version takes none of them; no command prints the whole help (exit 2).
func TestCLIShape(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "linkgate.yml")
	if err := os.WriteFile(cfg, []byte("network_monitor:\n  required_interfaces: [eth0]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--config", cfg, "--config.check", "exporter"},
		{"--config=" + cfg, "--log.level", "debug", "exporter", "--config.check"},
		{"exporter", "--config", cfg, "--config.check"},
	} {
		if code, out, errOut := runCLI(t, args...); code != 0 || !strings.Contains(out, "configuration is valid") {
			t.Errorf("%q: exit %d: %s%s", args, code, out, errOut)
		}
	}
	if code, out, _ := runCLI(t, "version", "--help"); code != 0 || strings.Contains(out, "--config") || strings.Contains(out, "--log.level") {
		t.Errorf("version --help: exit %d, lists config or log flags:\n%s", code, out)
	}
	code, out, _ := runCLI(t)
	if code != exitInvalid || !strings.Contains(out, "version") || !strings.Contains(out, "demo") {
		t.Errorf("no command: exit %d, want 2 and every command:\n%s", code, out)
	}
	if code, out, _ := runCLI(t, "sidecar", "--help"); code != 0 || !strings.Contains(strings.Join(strings.Fields(out), " "), "repeatable. Default: :9977") {
		t.Errorf("sidecar --help does not show the listen address default:\n%s", out)
	}
	if code, out, _ := runCLI(t, "wait", "--help"); code != 0 || !strings.Contains(out, "$LINKGATE_IPV4") {
		t.Errorf("wait --help: -4's variable is not LINKGATE_IPV4:\n%s", out)
	}
}

// TestEmailFlags: the email notifier's settings are validated at start,
// naming the flag or file:line:key, and never echo the password.
func TestEmailFlags(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "smtp-password")
	if err := os.WriteFile(pw, []byte("smtp-s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "linkgate.yml")
	if err := os.WriteFile(cfg, []byte("notify:\n  email:\n    server: smtp.example.com:587\n    user: linkgate\n    password_file: smtp-password\n    from: linkgate@example.com\n    to: [ops@example.com, '\"Ops, night\" <night@example.com>']\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI(t, "sidecar", "--config", cfg, "--config.check"); code != 0 {
		t.Errorf("valid email settings: exit %d: %s%s", code, out, errOut)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--notify.email.from", "x@example.com"}, "--notify.email.server: the other --notify.email.* settings need a server"},
		{[]string{"--notify.email.server", "smtp.example.com:587", "--notify.email.from", "x@example.com"}, "--notify.email.to"},
		{[]string{"--notify.email.server", "smtp.example.com", "--notify.email.from", "x@example.com", "--notify.email.to", "y@example.com"}, "--notify.email.server"},
		{[]string{"--notify.email.server", "smtp.example.com:587", "--notify.email.tls", "none", "--notify.email.from", "x@example.com", "--notify.email.to", "y@example.com"}, "--notify.email.tls"},
		{[]string{"--notify.email.server", "smtp.example.com:587", "--notify.email.user", "u", "--notify.email.from", "x@example.com", "--notify.email.to", "y@example.com"}, "--notify.email.password-file"},
	} {
		code, _, errOut := runCLI(t, append([]string{"sidecar", "--config.check"}, tc.args...)...)
		if code != exitInvalid || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d: %s; want 2 naming %s", tc.args, code, errOut, tc.want)
		}
		if strings.Contains(errOut, "s3cret") {
			t.Errorf("%q: the password leaked: %s", tc.args, errOut)
		}
	}
}
