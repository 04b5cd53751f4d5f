package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/promtooltest"
	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/linkgate/linkgate/internal/vcsim"
	"github.com/linkgate/linkgate/probe"
	"github.com/vmware/govmomi/simulator"
)

// freePort returns a loopback address for a server the test starts by
// address. It is picked below the ephemeral range (32768+), so that no
// client connection or ":0" listener of a concurrent test can take it
// between this check and the server's listen.
func freePort(t testing.TB) string {
	t.Helper()
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		return addr
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return ""
}

// sidecarEnv is a sidecar watching a private namespace (link va, peer vb)
// and probing the in-process vCenter simulator, served on loopback.
type sidecarEnv struct {
	a, b    *netnstest.NS
	sim     *vcsim.Sim
	pwFile  string
	base    string
	vcFlags []string
	cancel  context.CancelFunc
	done    chan error
	s       *sidecarCmd
	env     *runEnv
	log     testkit.Buffer
	// reachHook, when set before start, is the run's runEnv.reachHook.
	reachHook func(*probe.ReachOptions)
}

func startSidecar(t *testing.T, extra ...string) *sidecarEnv {
	return startSidecarWith(t, []string{"--network.required-interfaces", "va"}, extra...)
}

func startSidecarWith(t *testing.T, required []string, extra ...string) *sidecarEnv {
	t.Helper()
	e := newSidecarEnv(t)
	args := append(required, e.vcFlags...)
	return e.start(t, append(args, extra...)...)
}

// newSidecarEnv makes the namespaces (va in a, its peer vb in b), the
// simulator and a listen address; start runs the sidecar.
func newSidecarEnv(t *testing.T) *sidecarEnv {
	t.Helper()
	return newSidecarEnvModel(t, nil)
}

// newSidecarEnvModel is newSidecarEnv with the simulator's model changed
// by adjust (vcsim.StartModel); nil: vcsim's.
func newSidecarEnvModel(t *testing.T, adjust func(*simulator.Model)) *sidecarEnv {
	t.Helper()
	e := &sidecarEnv{a: netnstest.New(t), b: netnstest.New(t)}
	netnstest.Veth(t, e.a, "va", e.b, "vb")
	if adjust == nil {
		e.sim, e.pwFile = startSim(t)
	} else {
		sim, err := vcsim.StartModel(adjust)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sim.Close)
		if e.pwFile, err = sim.PasswordFile(); err != nil {
			t.Fatal(err)
		}
		e.sim = sim
	}
	e.base = "http://" + freePort(t)
	e.vcFlags = []string{"--vcenter.url", e.sim.URL, "--vcenter.user", e.sim.User,
		"--vcenter.password-file", e.pwFile, "--vcenter.ca-file", e.sim.CAFile}
	return e
}

// start runs `linkgate sidecar` in-process on e's namespace and address,
// with stable-for 0s and extra, until the test ends.
func (e *sidecarEnv) start(t testing.TB, extra ...string) *sidecarEnv {
	t.Helper()
	args := append([]string{"sidecar", "--netns", e.a.Path, "--web.listen-address", strings.TrimPrefix(e.base, "http://"), "--gate.stable-for", "0s"}, extra...)
	var stderr bytes.Buffer
	p, code := parse(args, &bytes.Buffer{}, &stderr)
	if code >= 0 {
		t.Fatalf("parse: %d %s", code, stderr.String())
	}
	e.s = &p.cli.Sidecar
	e.env = &runEnv{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, kctx: p.kctx, res: p.res,
		args: args, level: new(slog.LevelVar), logger: slog.New(slog.NewTextHandler(&e.log, nil)), reachHook: e.reachHook}
	if err := e.s.validate(e.env); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- e.s.run(ctx, e.env) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-e.done:
			if err != nil {
				t.Errorf("sidecar run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("sidecar did not stop")
		}
	})
	return e
}

// readyStatus polls /ready?verbose until want (hang guard only).
// waitStatus polls /ready?verbose until it answers want with a body that
// contains every one of parts.
func (e *sidecarEnv) waitStatus(t *testing.T, want int, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(e.base + "/ready?verbose")
		if err == nil {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want && containsAll(b.String(), parts) {
				return b.String()
			}
			if time.Now().After(deadline) {
				t.Fatalf("/ready stayed %d, want %d:\n%s", resp.StatusCode, want, b.String())
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("/ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func TestSidecarGateWaitAndCheck(t *testing.T) {
	e := startSidecar(t)

	// A waiter started now is released by the gate opening.
	code, _, errOut := runCLI(t, "wait", "--url", e.base+"/ready", "--timeout", "20s")
	if code != 0 {
		t.Fatalf("wait --url: exit %d: %s", code, errOut)
	}
	body := e.waitStatus(t, http.StatusOK)
	for _, want := range []string{"[+]links ok", "[+]path ok", "[+]vcenter ok", "readyz check passed"} {
		if !strings.Contains(body, want) {
			t.Errorf("/ready?verbose lacks %q:\n%s", want, body)
		}
	}

	e.a.IP(t, "link", "set", "va", "down")
	body = e.waitStatus(t, http.StatusServiceUnavailable)
	if !strings.Contains(body, "[-]links failed: va") {
		t.Errorf("/ready?verbose after link down:\n%s", body)
	}
	if code, _, _ := runCLI(t, "wait", "--url", e.base+"/ready", "--timeout", "1s"); code != 1 {
		t.Errorf("wait --url while down: exit %d, want 1", code)
	}
	if code, _, _ := runCLI(t, "wait", "--netns", e.a.Path, "-i", "va", "--timeout", "1s"); code != 1 {
		t.Errorf("local wait while down: exit %d, want 1", code)
	}
	args := append([]string{"check", "--netns", e.a.Path, "--network.required-interfaces", "va"}, e.vcFlags...)
	code, out, _ := runCLI(t, args...)
	if code != 1 || !strings.Contains(out, "links") || !strings.Contains(out, "failed") {
		t.Errorf("check while down: exit %d:\n%s", code, out)
	}

	e.a.IP(t, "link", "set", "va", "up")
	e.waitStatus(t, http.StatusOK)
	if code, _, errOut := runCLI(t, "wait", "--netns", e.a.Path, "-i", "va", "--timeout", "20s"); code != 0 {
		t.Errorf("local wait after up: exit %d: %s", code, errOut)
	}
	code, out, errOut = runCLI(t, append(args, "--output", "json")...)
	if code != 0 || !strings.Contains(out, `"ready": true`) || !strings.Contains(out, `"name": "vcenter"`) {
		t.Errorf("check after up: exit %d:\n%s%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, e.sim.Password) {
		t.Error("password in check output")
	}

	// Errors are exit 2 in both tools.
	if code, _, _ := runCLI(t, "wait", "--url", "ftp://x", "--timeout", "1s"); code != 2 {
		t.Errorf("wait with a bad URL: exit %d, want 2", code)
	}
	if code, _, _ := runCLI(t, "wait", "-i", "va:sideways", "--timeout", "1s"); code != 2 {
		t.Errorf("wait with a bad interface spec: exit %d, want 2", code)
	}
	if code, _, _ := runCLI(t, "check", "--gate.addresses", "ipx"); code != 2 {
		t.Errorf("check with a bad family: exit %d, want 2", code)
	}

	// Metrics of all parts on one endpoint.
	_, metrics := get(t, e.base+"/metrics")
	for _, want := range []string{"linkgate_ready 1", `linkgate_link_up{device="va"} 1`, "linkgate_vcenter_up{"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	promtooltest.CheckMetrics(t, metrics)
}

func TestSidecarShutdownReleasesWaiters(t *testing.T) {
	e := startSidecar(t, "--network.required-interfaces", "missing0")
	e.waitStatus(t, http.StatusServiceUnavailable)
	// A long-poll parked on the gate must be answered 503 at shutdown.
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /ready?wait=60s HTTP/1.1\r\nHost: linkgate\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// Shut down once the waiter is parked, as the gauge shows.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, m := get(t, e.base+"/metrics")
		if strings.Contains(m, "linkgate_ready_waiters 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the long-poll never showed in linkgate_ready_waiters")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.cancel()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("waiter not answered at shutdown: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("waiter got %d at shutdown, want 503", resp.StatusCode)
	}
	select {
	case err := <-e.done:
		e.done <- err // for the cleanup's check
	case <-time.After(20 * time.Second):
		t.Fatal("sidecar did not stop")
	}
}

func TestSidecarReload(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "linkgate.yml")
	write := func(content string) {
		if err := os.WriteFile(cfg, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("network_monitor:\n  required_interfaces: [missing0]\n")
	e := startSidecarWith(t, nil, "--config", cfg)
	e.waitStatus(t, http.StatusServiceUnavailable, "links failed: missing0: missing")

	// An invalid file keeps the running configuration and says why.
	write("network_monitor:\n  required_interfaces: [va]\n  bogus: 1\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.log.WaitFor(t, "keeping the running configuration", 20*time.Second)
	if !strings.Contains(e.log.String(), `unknown key \"network_monitor.bogus\"`) {
		t.Errorf("reload failure does not name the problem:\n%s", e.log.String())
	}
	if body := e.waitStatus(t, http.StatusServiceUnavailable); !strings.Contains(body, "missing0") {
		t.Errorf("invalid reload changed the gate:\n%s", body)
	}

	write("network_monitor:\n  required_interfaces: [va]\n")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.log.WaitFor(t, "configuration reloaded", 20*time.Second)
	e.waitStatus(t, http.StatusOK)
}

// TestDemo runs the newcomer's command as a user would: it becomes ready
// against the simulator and exits 0 on SIGTERM.
func TestDemo(t *testing.T) {
	addr := freePort(t)
	var out, errb testkit.Buffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"demo", "--web.listen-address", addr}, &out, &errb) }()
	e := &sidecarEnv{base: "http://" + addr}
	body := e.waitStatus(t, http.StatusOK)
	if !strings.Contains(body, "[+]vcenter ok") {
		t.Errorf("demo /ready?verbose:\n%s", body)
	}
	if !strings.Contains(out.String(), "http://"+addr+"/ready?verbose") {
		t.Errorf("demo does not print its URLs:\n%s", out.String())
	}
	// The simulated hosts' ports are the demo's loopback stand-ins: the
	// host gate opens, with every check.
	await(t, e.base, "demo host gate", time.Now(), 20*time.Second, expect{path: "/ready/host/DC0_H0?verbose", code: 200,
		parts: []string{"[+]inventory ok\n", "[+]host ok\n", "[+]host-reachable ok\n", "[+]datastores ok\n"}})
	// The demo is serving, so its SIGTERM handler is installed.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("demo exit %d after SIGTERM:\n%s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("demo did not stop on SIGTERM")
	}
}

// TestWaitOverTLS: a sidecar served over TLS with a private CA is reached
// with --tls.ca-file; without it the certificate error is exit 2.
func TestWaitOverTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ready":true,"checks":[{"name":"links","ok":true}]}`))
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, "wait", "--url", srv.URL+"/ready", "--tls.ca-file", ca, "--timeout", "10s"); code != 0 {
		t.Errorf("with the CA: exit %d: %s", code, errOut)
	}
	if code, _, _ := runCLI(t, "wait", "--url", srv.URL+"/ready", "--timeout", "2s"); code != 2 {
		t.Errorf("without the CA: exit %d, want 2", code)
	}
	if code, _, errOut := runCLI(t, "wait", "--url", srv.URL+"/ready", "--tls.ca-file", "/nonexistent.pem"); code != 2 || !strings.Contains(errOut, "--tls.ca-file") {
		t.Errorf("missing CA file: exit %d: %s", code, errOut)
	}
}
