// Package e2e runs the real linkgate binary the way systemd and
// Kubernetes do: socket activation, sd_notify, a health listener next to a
// main listener behind basic auth.
package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testkit"
	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const guard = 30 * time.Second

// start runs the binary with extra files (fd 3 on) and env, the way
// systemd starts a service: LISTEN_PID is the service's own pid, which a
// shell knows before it execs linkgate.
func start(t *testing.T, bin string, extra []*os.File, env []string, args ...string) (*exec.Cmd, *testkit.Buffer) {
	t.Helper()
	script := `LISTEN_PID=$$ exec "$0" "$@"`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, bin}, args...)...)
	cmd.ExtraFiles = extra
	cmd.Env = append(os.Environ(), env...)
	var out testkit.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(guard):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("linkgate did not stop on SIGTERM:\n%s", out.String())
		}
	})
	return cmd, &out
}

func get(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{Timeout: guard, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(guard)
	for {
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSocketActivationAndNotify: `linkgate exporter --web.systemd-socket`
// serves on the socket systemd passes (fd 3, LISTEN_FDS=1) without binding
// a port itself, and under NOTIFY_SOCKET says READY=1 with a STATUS.
func TestSocketActivationAndNotify(t *testing.T) {
	bin := testkit.BuildLinkgate(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	addr := l.Addr().String()
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	_, out := start(t, bin, []*os.File{f}, []string{"LISTEN_FDS=1", "NOTIFY_SOCKET=" + sock},
		"exporter", "--web.systemd-socket", "--web.listen-address", "127.0.0.1:1")
	_ = conn.SetReadDeadline(time.Now().Add(guard))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no sd_notify datagram: %v\n%s", err, out.String())
	}
	if got := string(buf[:n]); !strings.HasPrefix(got, "READY=1\nSTATUS=network ") {
		t.Errorf("first datagram %q, want READY=1 and a network STATUS", got)
	}
	code, body := get(t, "http://"+addr+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "linkgate_network_up") {
		t.Errorf("/metrics on the activated socket: %d", code)
	}
	if strings.Contains(out.String(), "127.0.0.1:1") {
		t.Errorf("linkgate used --web.listen-address despite --web.systemd-socket:\n%s", out.String())
	}
}

// TestSocketActivationWithoutSockets: --web.systemd-socket without
// sockets fails at once, saying so.
func TestSocketActivationWithoutSockets(t *testing.T) {
	bin := testkit.BuildLinkgate(t)
	cmd := exec.Command(bin, "exporter", "--web.systemd-socket")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatal("linkgate kept running")
	}
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(out.String(), "systemd passed no listening socket") {
		t.Errorf("exit %d (%v), want 1 with the reason:\n%s", code, err, out.String())
	}
}

// TestHealthListenerBesideBasicAuth: with basic auth on the main listener,
// kubelet probes reach /healthz and /ready on --web.health-listen-address
// without credentials; nothing else is served there.
func TestHealthListenerBesideBasicAuth(t *testing.T) {
	bin := testkit.BuildLinkgate(t)
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("probe-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(webConfig, []byte("basic_auth_users:\n  prom: "+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	main, health := testkit.ClosedAddr(t), testkit.ClosedAddr(t)
	start(t, bin, nil, nil, "sidecar", "--web.listen-address", main, "--web.health-listen-address", health,
		"--web.config.file", webConfig, "--gate.stable-for", "0s", "--network.required-interfaces", "lo")

	for _, path := range []string{"/healthz", "/ready", "/metrics"} {
		if code, _ := get(t, "http://"+main+path); code != http.StatusUnauthorized {
			t.Errorf("main %s without credentials: %d, want 401", path, code)
		}
	}
	if code, body := get(t, "http://"+health+"/healthz"); code != http.StatusOK {
		t.Errorf("health listener /healthz: %d %s", code, body)
	}
	code, body := get(t, "http://"+health+"/ready?verbose")
	if code != http.StatusOK && code != http.StatusServiceUnavailable || !strings.Contains(body, "links") {
		t.Errorf("health listener /ready: %d %s", code, body)
	}
	for _, path := range []string{"/metrics", "/events", "/", "/ready/host/esx1", "/ready/vm/vm1"} {
		if code, _ := get(t, "http://"+health+path); code != http.StatusNotFound {
			t.Errorf("health listener %s: %d, want 404 (only health and readiness there)", path, code)
		}
	}
	if code, _ := get(t, "http://"+main+"/metrics", "Authorization", "Basic cHJvbTpwcm9iZS1zZWNyZXQ="); code != http.StatusOK {
		t.Errorf("main /metrics with credentials: %d, want 200", code)
	}
}
