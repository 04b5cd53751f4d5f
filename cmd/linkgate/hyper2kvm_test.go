package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const h2kExample = "testdata/hyper2kvm/daemon.yaml"

// TestHyper2kvmConfigLoads: a hyper2kvm daemon configuration (daemon,
// vSphere and notification keys) feeds the probe, the gate's notifiers and
// the daemon control; hyper2kvm-only keys are skipped; inline passwords are
// used with a warning naming the key and never shown.
func TestHyper2kvmConfigLoads(t *testing.T) {
	t.Setenv("VC_PASSWORD", "vc-s3cret")
	code, out, errOut := runCLI(t, "sidecar", "--hyper2kvm.config", h2kExample, "--config.check")
	if code != 0 {
		t.Fatalf("exit %d:\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"configuration is valid",
		"hyper2kvm configuration " + h2kExample + ":",
		"vcenter → --vcenter.url",
		"vc_password_env → --vcenter.password-env",
		"network_monitor.required_interfaces → --network.required-interfaces",
		"vc_connection_timeout_s → --vcenter.timeout",
		"notifications.webhook_url → --notify.webhook-url",
		"notifications.email_smtp_host → --notify.email.server",
		"notifications.email_password → the SMTP password (inline)",
		"output_dir → --hyper2kvm.control-socket",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--config.check output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "notifications.email_password: a password written in the file is used") {
		t.Errorf("no warning naming the inline password's key:\n%s", errOut)
	}
	for _, secret := range []string{"app-specific-s3cret", "XXXXSECRETXXXX", "vc-s3cret"} {
		if strings.Contains(out+errOut, secret) {
			t.Errorf("%q shown:\n%s%s", secret, out, errOut)
		}
	}

	p, code := parse([]string{"sidecar", "--hyper2kvm.config", h2kExample}, &bytes.Buffer{}, &bytes.Buffer{})
	if code >= 0 {
		t.Fatalf("parse: exit %d", code)
	}
	s := p.cli.Sidecar
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"vcenter.url", s.URL, []string{"vcenter.example.com:8443"}},
		{"vcenter.user", s.User, "administrator@vsphere.local"},
		{"vcenter.password-env", s.PasswordEnv, "VC_PASSWORD"},
		{"vcenter.timeout", s.Timeout, 20 * time.Second},
		{"vcenter.max-retries", s.MaxRetries, 5},
		{"vcenter.max-backoff", s.MaxBackoff, time.Minute},
		{"network.required-interfaces", s.RequiredInterfaces, []string{"eth0"}},
		{"network.max-wait", s.MaxWait, 10 * time.Minute},
		{"notify.webhook-format", s.WebhookFormat, "slack"},
		{"notify.email.server", s.EmailServer, "smtp.example.com:587"},
		{"notify.email.to", s.EmailTo, []string{"admin@example.com"}},
		{"notify.email.user", s.EmailUser, "hyper2kvm@example.com"},
		{"hyper2kvm.control-socket", s.ControlSocket, []string{"/var/lib/hyper2kvm/output/.daemon/control.sock"}},
	} {
		if !equalAny(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if got := p.res.h2k.emailPassword; got != "app-specific-s3cret" {
		t.Errorf("inline SMTP password not used")
	}
}

func equalAny(a, b any) bool {
	switch a := a.(type) {
	case []string:
		return slices.Equal(a, b.([]string))
	}
	return a == b
}

// TestHyper2kvmConfigPrecedence: flag > LINKGATE_* > linkgate's --config >
// the hyper2kvm file > default; the hyper2kvm file may be named by
// linkgate's file.
func TestHyper2kvmConfigPrecedence(t *testing.T) {
	t.Setenv("VC_PASSWORD", "x")
	dir := t.TempDir()
	abs, err := filepath.Abs(h2kExample)
	if err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(dir, "linkgate.yml")
	if err := os.WriteFile(own, []byte("hyper2kvm:\n  config: "+abs+"\nnetwork_monitor:\n  required_interfaces: [eth1]\nvc_connection_max_retries: 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LINKGATE_VCENTER_USER", "env-user")
	p, code := parse([]string{"sidecar", "--config", own, "--vcenter.max-retries", "9"}, &bytes.Buffer{}, &bytes.Buffer{})
	if code >= 0 {
		t.Fatalf("parse: exit %d", code)
	}
	s := p.cli.Sidecar
	if !slices.Equal(s.RequiredInterfaces, []string{"eth1"}) {
		t.Errorf("required interfaces %v: linkgate's file should beat the hyper2kvm file", s.RequiredInterfaces)
	}
	if s.MaxRetries != 9 {
		t.Errorf("max retries %d: the flag should win", s.MaxRetries)
	}
	if s.User != "env-user" {
		t.Errorf("user %q: the environment should beat the files", s.User)
	}
	if s.Timeout != 20*time.Second {
		t.Errorf("timeout %v: the hyper2kvm file (named by linkgate's) should give 20s", s.Timeout)
	}
}

// TestHyper2kvmConfigErrors: a key neither linkgate's nor hyper2kvm's is an
// error with file:line; so is an unknown notifications key; secrets in
// values are never echoed.
func TestHyper2kvmConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, file, want string
	}{
		{"unknown key", "command: daemon\nwatch_dir: /q\nwatch_dirs: /typo\n", "h2k.yaml:3: unknown key \"watch_dirs\""},
		{"unknown notifications key", "notifications:\n  enabled: true\n  webhook_urll: https://x/T0K3N\n", "h2k.yaml:3: unknown key \"notifications.webhook_urll\""},
		{"bad port", "vcenter: vc.example.com\nvc_port: many\n", "h2k.yaml:2: vc_port: want an integer"},
		{"secret value of a wrong type", "vc_password: [T0K3N]\n", "h2k.yaml:1: vc_password: want a single value, got a list"},
	} {
		path := filepath.Join(dir, "h2k.yaml")
		if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runCLI(t, "sidecar", "--hyper2kvm.config", path, "--config.check")
		if code != exitInvalid || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d: %s; want 2 with %q", tc.name, code, errOut, tc.want)
		}
		if strings.Contains(errOut, "T0K3N") {
			t.Errorf("%s: secret echoed: %s", tc.name, errOut)
		}
	}
}

// FuzzParseHyper2kvmConfig: the hyper2kvm loader never panics, answers the
// same twice, fails only with configuration errors naming the file, and
// never shows a password or a webhook URL that the file holds.
func FuzzParseHyper2kvmConfig(f *testing.F) {
	example, err := os.ReadFile(h2kExample)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, s := range []string{
		"vc_password: " + configSentinel + "\n",
		"vs_password: [" + configSentinel + "]\n",
		"notifications:\n  enabled: true\n  email_enabled: true\n  email_password: {a: " + configSentinel + "}\n",
		"notifications:\n  enabled: true\n  webhook_url: !x https://h/" + configSentinel + "\n",
		"notifications: " + configSentinel + "\n",
		"vcenter: {targets: [x]}\nvc_port: 1\n",
		"output_dir: [a]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const path = "/etc/hyper2kvm/fuzz.yaml"
		h, err := parseHyper2kvmConfig(path, data)
		h2, err2 := parseHyper2kvmConfig(path, data)
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("two loads disagree: %v / %v", err, err2)
		}
		if err == nil {
			if len(h.byFlag) != len(h2.byFlag) {
				t.Fatalf("two loads disagree: %d and %d flags", len(h.byFlag), len(h2.byFlag))
			}
			for _, w := range h.warnings {
				if strings.Contains(w, configSentinel) {
					t.Fatalf("a warning shows the secret: %s", w)
				}
			}
			return
		}
		var ce *configError
		if !errors.As(err, &ce) {
			t.Fatalf("error of type %T, want *configError: %v", err, err)
		}
		if !strings.HasPrefix(err.Error(), path) {
			t.Fatalf("error does not start with the file: %v", err)
		}
		if strings.Contains(err.Error(), configSentinel) && onlyUnderSecretKeys(string(data)) {
			t.Fatalf("the error shows the sentinel from a secret-bearing position:\n%s\nfile:\n%s", err, data)
		}
	})
}

// onlyUnderSecretKeys: every line holding the sentinel is a password or
// webhook key's (a rough reading of YAML, enough for the fuzz seeds).
func onlyUnderSecretKeys(data string) bool {
	for _, line := range strings.Split(data, "\n") {
		if !strings.Contains(line, configSentinel) {
			continue
		}
		key, _, _ := strings.Cut(line, ":")
		if !strings.Contains(key, "password") && !strings.Contains(key, "webhook") {
			return false
		}
	}
	return true
}

// controlServer speaks hyper2kvm's daemon control protocol (one JSON
// request per connection, one reply, close) and reports each command.
type controlServer struct {
	l        net.Listener
	commands chan string
	mu       sync.Mutex
	paused   bool
}

func startControlServer(t *testing.T, path string) *controlServer {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := &controlServer{l: l, commands: make(chan string, 100)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			n, _ := conn.Read(buf)
			var req struct{ Command string }
			_ = json.Unmarshal(buf[:n], &req)
			c.mu.Lock()
			reply := map[string]any{"status": "ok"}
			switch req.Command {
			case "status":
				reply["paused"], reply["draining"] = c.paused, false
			case "pause":
				c.paused = true
			case "resume":
				c.paused = false
			default:
				reply = map[string]any{"status": "error", "message": "Unknown command: " + req.Command}
			}
			c.mu.Unlock()
			_ = json.NewEncoder(conn).Encode(reply)
			conn.Close()
			c.commands <- req.Command
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return c
}

// await waits for command, skipping status queries.
func (c *controlServer) await(t *testing.T, command string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case got := <-c.commands:
			if got == command {
				return
			}
			if got != "status" {
				t.Fatalf("daemon got %q, want %q", got, command)
			}
		case <-deadline:
			t.Fatalf("daemon never got %q", command)
		}
	}
}

// TestSidecarDrivesHyper2kvmDaemon: `linkgate sidecar --hyper2kvm.config`
// on a hyper2kvm daemon configuration probes the vCenter it names (with the
// password from its vc_password_env), posts to its webhook, and pauses the
// daemon at output_dir's control socket when the required link loses
// carrier, resuming it when the link is back.
func TestSidecarDrivesHyper2kvmDaemon(t *testing.T) {
	e := newSidecarEnv(t)
	host, port, err := net.SplitHostPort(e.sim.Addr())
	if err != nil {
		t.Fatal(err)
	}
	hooks := make(chan string, 10)
	hookSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hooks <- string(b)
	}))
	t.Cleanup(hookSrv.Close)
	dir := t.TempDir()
	out := filepath.Join(dir, "output")
	daemon := startControlServer(t, filepath.Join(out, ".daemon", "control.sock"))
	t.Setenv("H2K_TEST_VC_PASSWORD", e.sim.Password)
	cfg := filepath.Join(dir, "production.yaml")
	if err := os.WriteFile(cfg, []byte(`command: daemon
daemon: true
watch_dir: `+dir+`/queue
output_dir: `+out+`
max_concurrent_jobs: 2
network_monitor:
  enabled: true
  required_interfaces: [va]
vc_connection_timeout_s: 5
vcenter: `+host+`
vc_port: `+port+`
vc_user: `+e.sim.User+`
vc_password_env: H2K_TEST_VC_PASSWORD
notifications:
  enabled: true
  on_failure: true
  webhook_url: `+hookSrv.URL+`/hook/T0K3N
  webhook_type: generic
`), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start(t, "--hyper2kvm.config", cfg, "--vcenter.ca-file", e.sim.CAFile)

	e.waitStatus(t, http.StatusOK, "[+]links ok", "[+]vcenter ok")
	e.b.IP(t, "link", "set", "vb", "down")
	daemon.await(t, "pause")
	// The webhooks: ready (at start), then not ready.
	for seen := false; !seen; {
		select {
		case body := <-hooks:
			seen = strings.Contains(body, `"title":"linkgate not ready`)
		case <-time.After(20 * time.Second):
			t.Fatal("no not-ready webhook from the hyper2kvm file's notifications")
		}
	}
	e.b.IP(t, "link", "set", "vb", "up")
	daemon.await(t, "resume")
	e.waitStatus(t, http.StatusOK, "[+]links ok")
	if strings.Contains(e.log.String(), "T0K3N") {
		t.Errorf("the webhook token reached the log:\n%s", e.log.String())
	}
}

// TestPauseOnNamesTheGatesChecks: --hyper2kvm.pause-on is checked against
// the gate's checks as configured, by --config.check as by a run (a
// vcenter check exists only with a vCenter target).
func TestPauseOnNamesTheGatesChecks(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "control.sock")
	base := []string{"sidecar", "--hyper2kvm.control-socket", sock, "--config.check"}
	code, _, errOut := runCLI(t, append(base, "--hyper2kvm.pause-on", "vcenter")...)
	if code != exitInvalid || !strings.Contains(errOut, `check "vcenter" is not one of the gate's checks as configured (links)`) {
		t.Errorf("pause-on vcenter without a vCenter: exit %d: %s", code, errOut)
	}
	pw := writeFile(t, "pw", "secret\n")
	code, _, errOut = runCLI(t, append(base, "--hyper2kvm.pause-on", "path", "--hyper2kvm.pause-on", "vcenter",
		"--vcenter.url", "vc.example", "--vcenter.user", "u", "--vcenter.password-file", pw)...)
	if code != exitOK {
		t.Errorf("pause-on path,vcenter with a vCenter: exit %d: %s", code, errOut)
	}
	code, _, errOut = runCLI(t, append(base, "--hyper2kvm.pause-on", "links", "--no-network.monitor")...)
	if code != exitInvalid || !strings.Contains(errOut, `check "links" is not one of the gate's checks`) {
		t.Errorf("pause-on links without network monitoring: exit %d: %s", code, errOut)
	}
}

// TestHyper2kvmInlinePasswordOnlyForItsServer: a password written inline
// in hyper2kvm's file goes only to the server and user that file names;
// with either set elsewhere it is not used, and a warning says so
// (found in review: it went to whatever server was configured).
func TestHyper2kvmInlinePasswordOnlyForItsServer(t *testing.T) {
	t.Setenv(passwordEnv, "")
	h2k := writeFile(t, "h2k.yaml", "vcenter: vc1.example\nvc_user: admin@vsphere.local\nvc_password: "+configSentinel+"\n")
	code, out, errOut := runCLI(t, "exporter", "--hyper2kvm.config", h2k, "--config.check")
	if code != exitOK {
		t.Fatalf("the file's own server and user: exit %d: %s%s", code, out, errOut)
	}
	for _, elsewhere := range [][]string{{"--vcenter.url", "vc2.example"}, {"--vcenter.user", "other@vsphere.local"}} {
		code, out, errOut = runCLI(t, append([]string{"exporter", "--hyper2kvm.config", h2k, "--config.check"}, elsewhere...)...)
		if code != exitInvalid || !strings.Contains(errOut, "not using the vCenter password") || !strings.Contains(errOut, "a vCenter password is needed") {
			t.Errorf("%v: exit %d: %s%s", elsewhere, code, out, errOut)
		}
		if strings.Contains(out+errOut, configSentinel) {
			t.Errorf("%v: the password is shown:\n%s%s", elsewhere, out, errOut)
		}
	}
}
