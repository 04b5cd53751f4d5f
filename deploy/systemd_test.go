package deploy

import (
	"bufio"
	"bytes"
	"context"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

const installedBinary = "/usr/local/bin/linkgate"

// unit is a systemd unit file, optionally with its drop-ins applied:
// section -> key -> values in order; an empty ExecStart= clears the list.
type unit map[string]map[string][]string

func (u unit) get(section, key string) []string { return u[section][key] }

func parseUnit(t *testing.T, u unit, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	section := ""
	var cont string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cont != "" {
			line, cont = cont+" "+line, ""
		}
		if strings.HasSuffix(line, `\`) {
			cont = strings.TrimSuffix(line, `\`)
			continue
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", path, n, line)
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if v == "" {
				delete(u[section], k) // resets a list, as ExecStart= in a drop-in
				continue
			}
			u[section][k] = append(u[section][k], v)
		}
	}
}

// loadUnit reads systemd/NAME and, with dropins, systemd/NAME.d/*.conf.
func loadUnit(t *testing.T, name string, dropins bool) unit {
	t.Helper()
	u := unit{}
	parseUnit(t, u, filepath.Join("systemd", name))
	if dropins {
		confs, _ := filepath.Glob(filepath.Join("systemd", name+".d", "*.conf"))
		sort.Strings(confs)
		for _, c := range confs {
			parseUnit(t, u, c)
		}
	}
	return u
}

func unitFiles(t *testing.T, ext string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("systemd", "*"+ext))
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	return files
}

// hostRoot lays out, under root, what deploy/README.md installs under
// /etc/linkgate: the example configuration, a vCenter CA and the password
// file. It returns the rewriter of /etc/linkgate paths.
func hostRoot(t *testing.T, root string) func(string) string {
	t.Helper()
	rw := rewriter(root, []string{"/etc/linkgate"})
	cfg, err := os.ReadFile("systemd/linkgate.yml")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "etc/linkgate/linkgate.yml"), rw(string(cfg)))
	writeFile(t, filepath.Join(root, "etc/linkgate/vcenter-ca.pem"), vcenterCA(t))
	writeFile(t, filepath.Join(root, "etc/linkgate/vcenter-password"), "test-password\n")
	return rw
}

// execStart returns a service's command line as its process would get
// it: LoadCredential= copied into a credentials directory (as systemd
// does) and ${CREDENTIALS_DIRECTORY} expanded, paths mapped into root.
func execStart(t *testing.T, name string, u unit, root string) []string {
	t.Helper()
	return execStartWith(t, name, u, root, hostRoot)
}

// execStartWith is execStart on the host that layout lays out under root.
func execStartWith(t *testing.T, name string, u unit, root string, layout func(*testing.T, string) func(string) string) []string {
	t.Helper()
	rw := layout(t, root)
	creds := filepath.Join(root, "run/credentials", name)
	for _, lc := range u.get("Service", "LoadCredential") {
		id, path, ok := strings.Cut(lc, ":")
		if !ok {
			t.Fatalf("%s: LoadCredential=%s: want ID:PATH", name, lc)
		}
		b, err := os.ReadFile(rw(path))
		if err != nil {
			t.Fatalf("%s: LoadCredential=%s: %v (deploy/README.md does not install it)", name, lc, err)
		}
		writeFile(t, filepath.Join(creds, id), string(b))
	}
	starts := u.get("Service", "ExecStart")
	if len(starts) != 1 {
		t.Fatalf("%s: %d ExecStart= lines, want 1", name, len(starts))
	}
	words := strings.Fields(starts[0])
	if words[0] != installedBinary {
		t.Fatalf("%s: ExecStart runs %s, want %s", name, words[0], installedBinary)
	}
	for i, w := range words {
		w = strings.ReplaceAll(w, "${CREDENTIALS_DIRECTORY}", creds)
		w = strings.ReplaceAll(w, "$CREDENTIALS_DIRECTORY", creds)
		words[i] = rw(w)
	}
	return words[1:]
}

// TestSystemdCommandLines: each service's ExecStart, alone and with its
// drop-ins, passes --config.check with the files deploy/README.md
// installs; the serving ones are Type=notify with a watchdog.
func TestSystemdCommandLines(t *testing.T) {
	services := unitFiles(t, ".service")
	if !slices.Contains(services, "linkgate.service") || !slices.Contains(services, "linkgate-exporter.service") {
		t.Fatalf("services %q, want linkgate.service and linkgate-exporter.service", services)
	}
	for _, name := range services {
		for _, dropins := range []bool{false, true} {
			u := loadUnit(t, name, dropins)
			args := execStart(t, name, u, t.TempDir())
			where := name
			if dropins {
				where += " with drop-ins"
			}
			configCheck(t, where, args)
			if args[0] == "exporter" || args[0] == "sidecar" {
				if got := u.get("Service", "Type"); !slices.Equal(got, []string{"notify"}) {
					t.Errorf("%s: Type=%q, want notify (linkgate speaks sd_notify)", where, got)
				}
				if len(u.get("Service", "WatchdogSec")) == 0 {
					t.Errorf("%s: no WatchdogSec=", where)
				}
				if !slices.Equal(u.get("Service", "NotifyAccess"), []string{"main"}) {
					t.Errorf("%s: NotifyAccess=%q, want main", where, u.get("Service", "NotifyAccess"))
				}
			}
		}
	}
}

// TestSocketActivation: linkgate.socket listens on linkgate's port, the
// drop-in makes linkgate.service require it and serve on it, and that
// command line, started by systemd-socket-activate on a loopback port,
// answers a `linkgate wait` that connects before linkgate runs.
func TestSocketActivation(t *testing.T) {
	sock := loadUnit(t, "linkgate.socket", false)
	streams := sock.get("Socket", "ListenStream")
	if len(streams) == 0 {
		t.Fatal("linkgate.socket: no ListenStream=")
	}
	for _, s := range streams {
		if s != "9977" && !strings.HasSuffix(s, ":9977") {
			t.Errorf("linkgate.socket: ListenStream=%s, want port 9977 (what `linkgate wait --url` and Prometheus use)", s)
		}
	}
	if !slices.Equal(sock.get("Socket", "Accept"), nil) && !slices.Equal(sock.get("Socket", "Accept"), []string{"no"}) {
		t.Errorf("linkgate.socket: Accept=%q: linkgate takes the listening socket", sock.get("Socket", "Accept"))
	}
	svc := loadUnit(t, "linkgate.service", true)
	for _, key := range []string{"Requires", "After"} {
		if !slices.ContainsFunc(svc.get("Unit", key), func(v string) bool { return slices.Contains(strings.Fields(v), "linkgate.socket") }) {
			t.Errorf("linkgate.service with its drop-in: %s= lacks linkgate.socket", key)
		}
	}
	args := execStart(t, "linkgate.service", svc, t.TempDir())
	if !slices.Contains(args, "--web.systemd-socket") {
		t.Fatalf("linkgate.service with its drop-in: %q lacks --web.systemd-socket", args)
	}
	if base := execStart(t, "linkgate.service", loadUnit(t, "linkgate.service", false), t.TempDir()); slices.Contains(base, "--web.systemd-socket") {
		t.Errorf("linkgate.service alone uses --web.systemd-socket: it needs the socket unit")
	}

	need(t, "systemd-socket-activate")
	addr := freeAddr(t)
	// The vCenter part stays out: nothing leaves the machine.
	run := withoutFlags(args, "--config", "--vcenter.password-file")
	run = append(run, "--network.required-interfaces=lo", "--gate.stable-for=0s")
	started(t, append([]string{"systemd-socket-activate", "--listen=" + addr, linkgate}, run...))
	// The port is open before linkgate runs; the first connection starts it.
	waitListening(t, addr)
	if code, out := runLinkgate(t, "wait", "--url", "http://"+addr+"/ready", "--timeout", "30s"); code != 0 {
		t.Errorf("wait on the activated socket: exit %d\n%s", code, out)
	}
	if code, body := poll(t, http.DefaultClient, "http://"+addr+"/metrics", "", "", http.StatusOK); code != http.StatusOK || !strings.Contains(body, "linkgate_build_info") {
		t.Errorf("/metrics on the activated socket: %d", code)
	}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// A dial only: it would also start linkgate, which is fine.
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-socket-activate does not listen on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSystemdAnalyzeVerify: systemd accepts every unit and drop-in, with
// no warning (an unknown key is only a warning to systemd). ExecStart
// points at the test's binary, since verify checks that it exists.
func TestSystemdAnalyzeVerify(t *testing.T) {
	need(t, "systemd-analyze")
	dir := t.TempDir()
	err := filepath.WalkDir("systemd", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, strings.TrimPrefix(path, "systemd"))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, bytes.ReplaceAll(b, []byte(installedBinary), []byte(linkgate)), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	units := append(unitFiles(t, ".service"), unitFiles(t, ".socket")...)
	for _, u := range units {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, "systemd-analyze", "verify", "./"+u)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}
	if !slices.Contains(units, "linkgate.socket") {
		t.Errorf("no linkgate.socket among %q", units)
	}
}
