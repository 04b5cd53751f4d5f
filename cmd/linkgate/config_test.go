package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
			want: []string{"cfg.yml:2: network_monitor.max_network_wait_s: want a non-negative number of seconds"},
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
			want: []string{"cfg.yml:2: collector.device_include and --collector.device-exclude: --collector.device-include and --collector.device-exclude are mutually exclusive"},
		},
		{
			name: "bad env regexp",
			env:  map[string]string{"LINKGATE_COLLECTOR_DEVICE_INCLUDE": "(("},
			want: []string{"LINKGATE_COLLECTOR_DEVICE_INCLUDE: invalid regexp"},
		},
		{
			name: "backoff order",
			file: "vc_connection_base_backoff_s: 10\nvc_connection_max_backoff_s: 5\n",
			want: []string{"cfg.yml:2: vc_connection_max_backoff_s: 5s is below --vcenter.base-backoff 10s"},
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
			want: []string{"config file: open /nonexistent/linkgate.yml: no such file or directory"},
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
		{"ca file given", []string{"--vcenter.url", "https://vc.example/sdk", "--vcenter.user", "u", "--vcenter.ca-file", ca}, ""},
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
