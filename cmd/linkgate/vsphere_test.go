package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/promtooltest"
)

// TestVSphereFlags: the inventory flags validate with errors naming the
// flag or file line, and reach the probe's configuration and the
// reachability options.
func TestVSphereFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		file string
		want string // "" valid
	}{
		{name: "defaults"},
		{name: "off", args: []string{"--no-vsphere.inventory"}},
		{name: "no ports", args: []string{"--vsphere.host-ports="}},
		{name: "ports", args: []string{"--vsphere.host-ports", "443,902,8443"}},
		{name: "file", file: "vsphere:\n  inventory: false\n  host_include: 'esx-.*'\n  host_exclude: 'esx-9.*'\n  host_ports: [443]\n"},
		{name: "file no ports", file: "vsphere:\n  host_ports: []\n"},
		{name: "bad include", args: []string{"--vsphere.host-include", "esx-("}, want: `--vsphere.host-include: invalid regexp "esx-("`},
		{name: "bad exclude in file", file: "vsphere:\n  host_exclude: '[a'\n", want: "cfg.yml:2: vsphere.host_exclude"},
		{name: "bad port", args: []string{"--vsphere.host-ports", "443,70000"}, want: `--vsphere.host-ports: want TCP ports from 1 to 65535`},
		{name: "port twice", args: []string{"--vsphere.host-ports", "902,902"}, want: "--vsphere.host-ports: port 902 listed twice"},
		{name: "bad port in file", file: "vsphere:\n  host_ports: [https]\n", want: "vsphere.host_ports"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range []string{"exporter", "sidecar"} {
				args := append([]string{cmd, "--config.check"}, tc.args...)
				if tc.file != "" {
					args = append(args, "--config", writeFile(t, "cfg.yml", tc.file))
				}
				code, _, errOut := runCLI(t, args...)
				if tc.want == "" {
					if code != exitOK {
						t.Errorf("%s: exit %d: %s", cmd, code, errOut)
					}
					continue
				}
				if code != exitInvalid || !strings.Contains(errOut, tc.want) {
					t.Errorf("%s: exit %d, stderr %q, want %q", cmd, code, errOut, tc.want)
				}
			}
		})
	}

	p, code := parse([]string{"exporter", "--no-vsphere.inventory", "--vsphere.host-include", "esx-.*", "--vsphere.host-exclude", "esx-9",
		"--vsphere.host-ports", "902"}, &bytes.Buffer{}, &bytes.Buffer{})
	if code >= 0 {
		t.Fatalf("parse exit %d", code)
	}
	x := &p.cli.Exporter
	env := &runEnv{logger: slog.New(slog.DiscardHandler)}
	cfg := x.probeConfig(env, &x.networkFlags, &x.vsphereFlags)
	if cfg.Inventory || cfg.HostInclude != "esx-.*" || cfg.HostExclude != "esx-9" {
		t.Errorf("probe config: inventory %v, include %q, exclude %q", cfg.Inventory, cfg.HostInclude, cfg.HostExclude)
	}
	if o, err := x.reachOptions(env, "vc"); err != nil || o != nil {
		t.Errorf("reach without the inventory: %+v, %v; want none", o, err)
	}
	x.Inventory = true
	if o, err := x.reachOptions(env, "vc"); err != nil || o == nil || !slices.Equal(o.Ports, []int{902}) || o.Target != "vc" {
		t.Errorf("reach options: %+v, %v", o, err)
	}
	x.HostPorts = nil
	if o, err := x.reachOptions(env, "vc"); err != nil || o != nil {
		t.Errorf("reach without ports: %+v, %v; want none", o, err)
	}
	if flag, ok := probeFlagOf("HostInclude"); !ok || flag != "vsphere.host-include" {
		t.Errorf("probeFlagOf(HostInclude) = %q, %v", flag, ok)
	}
}

// TestExporterVSphereSeries runs the exporter's watchers, as serve wires
// them, against the simulator: the inventory and the reachability of
// its hosts appear on /metrics.
func TestExporterVSphereSeries(t *testing.T) {
	sim, pwFile := startSim(t)
	a, b := netnstest.New(t), netnstest.New(t)
	netnstest.Veth(t, a, "va", b, "vb")
	p, code := parse([]string{"exporter", "--netns", a.Path, "--network.required-interfaces", "va",
		"--vcenter.url", sim.URL, "--vcenter.user", sim.User, "--vcenter.password-file", pwFile, "--vcenter.ca-file", sim.CAFile,
		"--vcenter.interval", "1h", "--vsphere.host-ports", "902"}, &bytes.Buffer{}, &bytes.Buffer{})
	if code >= 0 {
		t.Fatalf("parse exit %d", code)
	}
	x := &p.cli.Exporter
	env := &runEnv{logger: slog.New(slog.DiscardHandler), kctx: p.kctx, res: p.res}
	if err := x.validate(env); err != nil {
		t.Fatal(err)
	}
	w, err := x.watch(env)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.reaches) != 1 {
		t.Fatalf("%d reachability probes, want 1", len(w.reaches))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, loop := range w.loops {
		wg.Go(func() { _ = loop(ctx) })
	}
	defer wg.Wait()
	defer cancel()

	ts := httptest.NewServer(w.server(env, &x.webFlags, nil).Handler())
	defer ts.Close()
	target := regexp.QuoteMeta(strings.TrimSuffix(strings.TrimPrefix(sim.URL, "https://"), "/sdk"))
	want := []*regexp.Regexp{
		regexp.MustCompile(`linkgate_vsphere_inventory_verified\{target="` + target + `"\} 1`),
		regexp.MustCompile(`linkgate_vsphere_host_connection_state\{host="[^"]+",state="connected",target="` + target + `"\} 1`),
		regexp.MustCompile(`linkgate_vsphere_datastore_accessible\{datastore="[^"]+",target="` + target + `"\} 1`),
		// The simulator's host names resolve nowhere: probed, not reachable.
		regexp.MustCompile(`linkgate_vsphere_host_reachable\{host="[^"]+",port="902",target="` + target + `"\} 0`),
		regexp.MustCompile(`linkgate_vsphere_host_probe_errors_total\{class="[^"]+",host="[^"]+",kind="[^"]+",port="902",target="` + target + `"\} [1-9]`),
	}
	deadline := time.Now().Add(30 * time.Second)
	var body string
	for {
		_, body = get(t, ts.URL+"/metrics")
		missing := slices.DeleteFunc(slices.Clone(want), func(re *regexp.Regexp) bool { return re.MatchString(body) })
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %v:\n%s", missing, grepLines(body, "linkgate_vsphere_"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	promtooltest.CheckMetrics(t, body)
}

// grepLines are the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestSidecarReadyHost: /ready/host/NAME of the sidecar follows the
// simulator's inventory: a connected host without port probing is ready,
// with the default ports (the simulator's names resolve nowhere) it is
// not, and a host the verified inventory lacks is 404.
func TestSidecarReadyHost(t *testing.T) {
	poll := func(e *sidecarEnv, path string, want int, parts ...string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, body := 0, ""
			if resp, err := http.Get(e.base + path); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				code, body = resp.StatusCode, string(b)
			}
			if code == want && containsAll(body, parts) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d, want %d with %q:\n%s", path, code, want, parts, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	e := startSidecar(t, "--vsphere.host-ports=")
	poll(e, "/ready/host/DC0_H0?verbose", 200, "[+]inventory ok\n", "[+]host ok\n", "[+]datastores ok\n", "readyz check passed")
	poll(e, "/ready/host/nosuch", 404)
	poll(e, "/ready/vm/DC0_H0_VM0?verbose", 200, "[+]vm ok\n", "[+]host ok\n", "[+]vm-datastores ok\n", "readyz check passed")
	poll(e, "/ready/vm/nosuch", 404)
	if code, _, errOut := runCLI(t, "wait", "--url", e.base+"/ready/host/DC0_H0", "--timeout", "20s"); code != 0 {
		t.Errorf("wait --url /ready/host/DC0_H0: exit %d: %s", code, errOut)
	}

	// check --host: the same diagnosis, once.
	args := append([]string{"check", "--netns", e.a.Path, "--network.required-interfaces", "va"}, e.vcFlags...)
	code, out, errOut := runCLI(t, append(args, "--host", "DC0_H0", "--vsphere.host-ports=")...)
	if code != 0 || !regexp.MustCompile(`(?m)^inventory +ok`).MatchString(out) || !regexp.MustCompile(`(?m)^datastores +ok`).MatchString(out) {
		t.Errorf("check --host DC0_H0: exit %d:\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, append(args, "--host", "DC0_H0", "--vsphere.host-ports", "902")...)
	if code != 1 || !regexp.MustCompile(`(?m)^host-reachable +failed +port 902: `).MatchString(out) {
		t.Errorf("check --host DC0_H0 on 902: exit %d:\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, append(args, "--host", "nosuch")...)
	if code != 1 || !strings.Contains(out, `"nosuch" is not in the inventory`) {
		t.Errorf("check --host nosuch: exit %d:\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, append(args, "--vm", "DC0_H0_VM0", "--vsphere.host-ports=")...)
	if code != 0 || !regexp.MustCompile(`(?m)^vm +ok`).MatchString(out) || !regexp.MustCompile(`(?m)^vm-datastores +ok`).MatchString(out) {
		t.Errorf("check --vm DC0_H0_VM0: exit %d:\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, append(args, "--vm", "nosuch")...)
	if code != 1 || !regexp.MustCompile(`(?m)^vm +failed +no such VM`).MatchString(out) {
		t.Errorf("check --vm nosuch: exit %d:\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, "check", "--host", "DC0_H0"); code != 2 || !strings.Contains(errOut, "--host: needs --vcenter.url") {
		t.Errorf("check --host without vCenter: exit %d: %s", code, errOut)
	}

	e = startSidecar(t, "--vsphere.host-ports", "902")
	poll(e, "/ready/host/DC0_H0?verbose", 503, "[+]host ok\n", "[-]host-reachable failed: port 902: ")
}
