package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The hyper2kvm examples: kubernetes/hyper2kvm-worker.yaml (hyper2kvm's
// worker DaemonSet with linkgate as a native sidecar) and, for systemd,
// hyper2kvm@.service.d/linkgate.conf, linkgate.service.d/hyper2kvm.conf and
// linkgate-hyper2kvm.yml. Besides the checks every example gets (strict
// decoding, references, command lines, probes, systemd-analyze), these
// check that the two processes meet: linkgate reads the daemon's own
// configuration, finds its control socket where the daemon creates it, and
// may connect to it.

const (
	h2kWorkerFile = "kubernetes/hyper2kvm-worker.yaml"
	h2kDaemonSet  = "hyper2kvm-worker"
	// h2kConfigMap holds the example daemon configuration, daemon.yaml; the
	// systemd checks install it as /etc/hyper2kvm/daemon.yaml too.
	h2kConfigMap = "hyper2kvm-worker-config"
	h2kConfigKey = "daemon.yaml"
	// What hyper2kvm's own unit, hyper2kvm@.service, runs as, and where
	// instance %i reads its configuration.
	h2kUser, h2kGroup = "hyper2kvm", "hyper2kvm"
	h2kInstance       = "daemon"
	h2kUnitConfig     = "/etc/hyper2kvm/" + h2kInstance + ".yaml"
	// tokenPath is where Kubernetes mounts the service account token.
	tokenPath = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// h2kPod is the worker DaemonSet's pod: the worker and linkgate.
type h2kPod struct {
	w                workload
	worker, linkgate corev1.Container
	sidecar          bool // linkgate is an initContainer with restartPolicy: Always
	cms              map[string]map[string]string
}

func hyper2kvmPod(t *testing.T) h2kPod {
	t.Helper()
	ms := loadManifests(t)
	for _, w := range workloads(ms) {
		if w.where != h2kWorkerFile+" DaemonSet "+h2kDaemonSet {
			continue
		}
		p := h2kPod{w: w, cms: configMaps(ms)}
		var found int
		for _, c := range w.spec.InitContainers {
			if isLinkgate(c) {
				p.linkgate, p.sidecar = c, c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
				found++
			}
		}
		for _, c := range w.spec.Containers {
			switch {
			case isLinkgate(c):
				p.linkgate = c
				found++
			case c.Name == "worker":
				p.worker = c
			}
		}
		if found != 1 || p.worker.Name == "" {
			t.Fatalf("%s: want one linkgate container and a container named worker", w.where)
		}
		return p
	}
	t.Fatalf("%s: no DaemonSet %s", h2kWorkerFile, h2kDaemonSet)
	return h2kPod{}
}

// h2kDaemonConfig is the example daemon configuration, decoded.
func h2kDaemonConfig(t *testing.T, cms map[string]map[string]string) (string, map[string]any) {
	t.Helper()
	text, ok := cms[h2kConfigMap][h2kConfigKey]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %s", h2kConfigMap, h2kConfigKey)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
		t.Fatalf("ConfigMap %s, %s: %v", h2kConfigMap, h2kConfigKey, err)
	}
	return text, cfg
}

// place is where a path of a container is: which volume, and where in it.
type place struct {
	mount corev1.VolumeMount
	rel   string // inside the volume
}

func (p place) String() string { return fmt.Sprintf("volume %s, %q", p.mount.Name, p.rel) }

// placeOf resolves path through c's mounts (the deepest that holds it).
func placeOf(c corev1.Container, path string) (place, bool) {
	var best *corev1.VolumeMount
	for i, vm := range c.VolumeMounts {
		mp := strings.TrimSuffix(vm.MountPath, "/")
		if (path == mp || strings.HasPrefix(path, mp+"/")) && (best == nil || len(mp) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	if best == nil {
		return place{}, false
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(path, strings.TrimSuffix(best.MountPath, "/")), "/")
	return place{*best, filepath.Join(best.SubPath, rest)}, true
}

func volumeOf(spec corev1.PodSpec, name string) corev1.Volume {
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	return corev1.Volume{}
}

// oneFlag is the single value of --name in args.
func oneFlag(t *testing.T, where string, args []string, name string) string {
	t.Helper()
	vals := flagValues(args, name)
	if len(vals) != 1 {
		t.Fatalf("%s: want one %s, got %q", where, name, vals)
	}
	return vals[0]
}

// TestHyper2kvmWorkerPod: in the worker DaemonSet, linkgate is a native
// sidecar that reads the worker's configuration file, sees the control
// socket's directory where the daemon creates it (output_dir/.daemon, on
// the same volume), keeps its state in a writable volume of its own, reads
// the vCenter password from the Secret key the worker gets through
// vc_password_env, and runs as the socket's owner without capabilities or
// any writable mount it does not need.
func TestHyper2kvmWorkerPod(t *testing.T) {
	p := hyper2kvmPod(t)
	where := p.w.where
	if !p.sidecar {
		t.Errorf("%s: linkgate is not a native sidecar (an initContainer with restartPolicy: Always)", where)
	}

	// One configuration file for both.
	workerCfg := oneFlag(t, where+" worker", append(slices.Clone(p.worker.Command), p.worker.Args...), "--config")
	lgCfg := oneFlag(t, where+" linkgate", p.linkgate.Args, "--hyper2kvm.config")
	wp, ok1 := placeOf(p.worker, workerCfg)
	lp, ok2 := placeOf(p.linkgate, lgCfg)
	if !ok1 || !ok2 || wp.mount.Name != lp.mount.Name || wp.rel != lp.rel {
		t.Errorf("%s: the worker reads %s (%v) and linkgate %s (%v): want the same file", where, workerCfg, wp, lgCfg, lp)
	}
	if v := volumeOf(p.w.spec, wp.mount.Name); v.ConfigMap == nil || v.ConfigMap.Name != h2kConfigMap || wp.rel != h2kConfigKey {
		t.Errorf("%s: the worker's configuration is %v, want key %s of ConfigMap %s", where, wp, h2kConfigKey, h2kConfigMap)
	}
	_, cfg := h2kDaemonConfig(t, p.cms)

	// The control socket: output_dir/.daemon/control.sock, one directory
	// seen by both.
	outDir, _ := cfg["output_dir"].(string)
	if !filepath.IsAbs(outDir) {
		t.Fatalf("%s: output_dir %q, want an absolute path", h2kConfigKey, outDir)
	}
	sockDir := filepath.Join(outDir, ".daemon")
	if socks := flagValues(p.linkgate.Args, "--hyper2kvm.control-socket"); len(socks) > 0 && !slices.Equal(socks, []string{filepath.Join(sockDir, "control.sock")}) {
		t.Errorf("%s: --hyper2kvm.control-socket %q is not the daemon's, %s/control.sock", where, socks, sockDir)
	}
	ws, ok1 := placeOf(p.worker, sockDir)
	ls, ok2 := placeOf(p.linkgate, sockDir)
	switch {
	case !ok1 || !ok2:
		t.Errorf("%s: %s (output_dir/.daemon) is not on a volume of both containers", where, sockDir)
	case ws.mount.Name != ls.mount.Name || ws.rel != ls.rel:
		t.Errorf("%s: %s is %v for the worker but %v for linkgate", where, sockDir, ws, ls)
	case ws.mount.ReadOnly:
		t.Errorf("%s: the worker cannot create its socket: %s is read-only", where, sockDir)
	case !ls.mount.ReadOnly:
		t.Errorf("%s: linkgate mounts %s writable; connecting needs no write access to the mount", where, sockDir)
	}
	if ls.mount.MountPath != sockDir {
		t.Errorf("%s: linkgate mounts %s at %s: it needs the socket's directory only", where, ls.mount.Name, ls.mount.MountPath)
	}

	// The state directory: writable, linkgate's own.
	stateDir := oneFlag(t, where+" linkgate", p.linkgate.Args, "--hyper2kvm.state-dir")
	st, ok := placeOf(p.linkgate, stateDir)
	if !ok || st.mount.ReadOnly || volumeOf(p.w.spec, st.mount.Name).EmptyDir == nil {
		t.Errorf("%s: --hyper2kvm.state-dir %s is %v: want a writable emptyDir", where, stateDir, st)
	}
	for _, vm := range p.worker.VolumeMounts {
		if vm.Name == st.mount.Name {
			t.Errorf("%s: the worker mounts linkgate's state volume %s", where, vm.Name)
		}
	}

	// The vCenter password: the Secret key behind the worker's
	// vc_password_env variable is linkgate's --vcenter.password-file.
	envName, _ := cfg["vc_password_env"].(string)
	var ref *corev1.SecretKeySelector
	for _, e := range p.worker.Env {
		if e.Name == envName && e.ValueFrom != nil {
			ref = e.ValueFrom.SecretKeyRef
		}
	}
	pwFile := oneFlag(t, where+" linkgate", p.linkgate.Args, "--vcenter.password-file")
	pw, ok := placeOf(p.linkgate, pwFile)
	switch {
	case envName == "" || ref == nil:
		t.Errorf("%s: the worker has no variable %q (vc_password_env) from a Secret", where, envName)
	case !ok || volumeOf(p.w.spec, pw.mount.Name).Secret == nil:
		t.Errorf("%s: --vcenter.password-file %s is not in a Secret volume", where, pwFile)
	case volumeOf(p.w.spec, pw.mount.Name).Secret.SecretName != ref.Name || pw.rel != ref.Key:
		t.Errorf("%s: linkgate's password is %v, the worker's %s is Secret %s key %s", where, pw, envName, ref.Name, ref.Key)
	}

	// Unprivileged: no capability, nothing writable but its state, and,
	// running as uid 0, none of the pod's root-owned shared files.
	sc := p.linkgate.SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		(sc.Privileged != nil && *sc.Privileged) || sc.RunAsUser == nil {
		t.Fatalf("%s: linkgate's securityContext %+v: want runAsUser set, all capabilities dropped, none added, no privilege escalation, a read-only root", where, sc)
	}
	if owner := h2kWorkerUID(p); *sc.RunAsUser != owner {
		t.Errorf("%s: linkgate runs as uid %d; the socket is the worker's (uid %d), mode srwxr-xr-x", where, *sc.RunAsUser, owner)
	}
	for _, vm := range p.linkgate.VolumeMounts {
		if !vm.ReadOnly && vm.Name != st.mount.Name {
			t.Errorf("%s: linkgate mounts %s at %s writable", where, vm.Name, vm.MountPath)
		}
	}
	if *sc.RunAsUser == 0 {
		mounts := map[string]bool{}
		for _, vm := range p.linkgate.VolumeMounts {
			mounts[vm.MountPath] = vm.ReadOnly
		}
		if ro, ok := mounts["/etc/hosts"]; !ok || !ro {
			t.Errorf("%s: linkgate runs as uid 0 with the kubelet's /etc/hosts, which the worker shares: mount its own, read-only", where)
		}
		if auto := p.w.spec.AutomountServiceAccountToken; (auto == nil || *auto) && !mounts[tokenPath] {
			t.Errorf("%s: linkgate gets the pod's service account token: mount a volume at %s", where, tokenPath)
		}
	}

	// --config.check with the files as mounted; it reports what it took
	// from hyper2kvm's file.
	root := t.TempDir()
	rw := podRoot(t, root, p.w.spec, p.linkgate, p.cms)
	args := slices.Clone(p.linkgate.Args)
	for i := range args {
		args[i] = rw(args[i])
	}
	checkHyper2kvmConfig(t, where, args, "output_dir → --hyper2kvm.control-socket", "vc_password_env → --vcenter.password-env", "vcenter → --vcenter.url")
}

// h2kWorkerUID is the uid the worker runs as: hyper2kvm's image runs as
// root unless the manifest says otherwise.
func h2kWorkerUID(p h2kPod) int64 {
	if sc := p.worker.SecurityContext; sc != nil && sc.RunAsUser != nil {
		return *sc.RunAsUser
	}
	if sc := p.w.spec.SecurityContext; sc != nil && sc.RunAsUser != nil {
		return *sc.RunAsUser
	}
	return 0
}

// checkHyper2kvmConfig runs args with --config.check and wants it valid,
// with the hyper2kvm keys named used.
func checkHyper2kvmConfig(t *testing.T, where string, args []string, used ...string) {
	t.Helper()
	code, out := runLinkgate(t, append(args, "--config.check")...)
	if code != 0 || !strings.Contains(out, "configuration is valid") {
		t.Fatalf("%s: linkgate %s --config.check: exit %d:\n%s", where, strings.Join(args, " "), code, out)
	}
	for _, u := range used {
		if !strings.Contains(out, u) {
			t.Errorf("%s: --config.check does not report %q:\n%s", where, u, out)
		}
	}
}

// h2kHostRoot lays out a hyper2kvm host under root as deploy/README.md
// installs it: hostRoot's files, linkgate-hyper2kvm.yml as
// /etc/linkgate/linkgate.yml, the example daemon configuration as
// hyper2kvm@daemon.service's, linkgate's state directory.
func h2kHostRoot(t *testing.T, root string) func(string) string {
	t.Helper()
	hostRoot(t, root)
	rw := rewriter(root, []string{"/etc/linkgate", "/etc/hyper2kvm", "/var/lib/linkgate", "/var/lib/hyper2kvm"})
	yml, err := os.ReadFile("systemd/linkgate-hyper2kvm.yml")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "etc/linkgate/linkgate.yml"), rw(string(yml)))
	text, _ := h2kDaemonConfig(t, configMaps(loadManifests(t)))
	writeFile(t, filepath.Join(root, h2kUnitConfig), rw(text))
	if err := os.MkdirAll(filepath.Join(root, "var/lib/linkgate"), 0o755); err != nil {
		t.Fatal(err)
	}
	return rw
}

// TestHyper2kvmSystemd: the daemon's drop-in orders it after linkgate
// without tying its life to linkgate's and makes its socket
// group-writable; linkgate's drop-in puts it in the daemon's group with a
// state directory, and its command line, with linkgate-hyper2kvm.yml
// installed, reads the daemon's configuration.
func TestHyper2kvmSystemd(t *testing.T) {
	d := unit{}
	parseUnit(t, d, "systemd/hyper2kvm@.service.d/linkgate.conf")
	const lg = "linkgate.service"
	names := func(key string) []string { return strings.Fields(strings.Join(d.get("Unit", key), " ")) }
	for _, key := range []string{"After", "Wants"} {
		if !slices.Contains(names(key), lg) {
			t.Errorf("hyper2kvm@.service.d/linkgate.conf: %s= lacks %s", key, lg)
		}
	}
	// Stopping or restarting linkgate must not stop the daemon.
	for _, key := range []string{"Requires", "Requisite", "BindsTo", "PartOf"} {
		if slices.Contains(names(key), lg) {
			t.Errorf("hyper2kvm@.service.d/linkgate.conf: %s=%s: stopping linkgate would stop the daemon", key, lg)
		}
	}
	umask := h2kUmask(t)
	if umask&0o020 != 0 || umask&0o002 == 0 {
		t.Errorf("hyper2kvm@.service.d/linkgate.conf: UMask=%04o: want the socket writable by the group, not by others", umask)
	}

	for _, dropins := range []string{"hyper2kvm.conf", "*.conf"} {
		u := unit{}
		parseUnit(t, u, "systemd/"+lg)
		confs, _ := filepath.Glob(filepath.Join("systemd", lg+".d", dropins))
		slices.Sort(confs)
		for _, c := range confs {
			parseUnit(t, u, c)
		}
		where := lg + " with " + strings.Join(confs, ", ")
		if !slices.Contains(strings.Fields(strings.Join(u.get("Service", "SupplementaryGroups"), " ")), h2kGroup) {
			t.Errorf("%s: SupplementaryGroups= lacks %s", where, h2kGroup)
		}
		state := u.get("Service", "StateDirectory")
		if len(state) != 1 {
			t.Fatalf("%s: StateDirectory=%q, want one", where, state)
		}
		args := execStartWith(t, lg, u, t.TempDir(), h2kHostRoot)
		checkHyper2kvmConfig(t, where, args, "output_dir → --hyper2kvm.control-socket")

		var yml struct {
			Hyper2kvm struct {
				Config   string `json:"config"`
				StateDir string `json:"state_dir"`
			} `json:"hyper2kvm"`
		}
		b, err := os.ReadFile("systemd/linkgate-hyper2kvm.yml")
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &yml); err != nil {
			t.Fatal(err)
		}
		if yml.Hyper2kvm.Config != h2kUnitConfig {
			t.Errorf("linkgate-hyper2kvm.yml: hyper2kvm.config %q, want hyper2kvm@%s.service's %s", yml.Hyper2kvm.Config, h2kInstance, h2kUnitConfig)
		}
		if want := "/var/lib/" + state[0]; yml.Hyper2kvm.StateDir != want {
			t.Errorf("linkgate-hyper2kvm.yml: hyper2kvm.state_dir %q, want %s (StateDirectory=%s)", yml.Hyper2kvm.StateDir, want, state[0])
		}
	}
}

func h2kUmask(t *testing.T) os.FileMode {
	t.Helper()
	d := unit{}
	parseUnit(t, d, "systemd/hyper2kvm@.service.d/linkgate.conf")
	v := d.get("Service", "UMask")
	if len(v) != 1 {
		t.Fatalf("hyper2kvm@.service.d/linkgate.conf: UMask=%q, want one", v)
	}
	m, err := strconv.ParseUint(v[0], 8, 32)
	if err != nil {
		t.Fatalf("hyper2kvm@.service.d/linkgate.conf: UMask=%s: %v", v[0], err)
	}
	return os.FileMode(m)
}

// h2kStandIn is a stand-in for hyper2kvm's hyper2kvm@.service, which is
// not installed here: its user, configuration and command line, with a
// stub for the hyper2kvm program.
const h2kStandIn = `[Unit]
Description=hyper2kvm daemon %I (stand-in for the test)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=` + h2kUser + `
Group=` + h2kGroup + `
Environment=CONFIG_FILE=/etc/hyper2kvm/%i.yaml
WorkingDirectory=/var/lib/hyper2kvm
ExecStart=STUB --config ${CONFIG_FILE} --daemon local
Restart=on-failure
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths=/var/lib/hyper2kvm

[Install]
WantedBy=multi-user.target
`

// TestHyper2kvmSystemdAnalyzeVerify: systemd accepts hyper2kvm@.service
// with the drop-in (and linkgate.service, which it pulls in), with no
// warning; a warning in the drop-in shows that verify reads it.
func TestHyper2kvmSystemdAnalyzeVerify(t *testing.T) {
	need(t, "systemd-analyze")
	for _, broken := range []bool{false, true} {
		dir := t.TempDir()
		for _, name := range []string{"linkgate.service", "linkgate.service.d/hyper2kvm.conf", "hyper2kvm@.service.d/linkgate.conf"} {
			b, err := os.ReadFile(filepath.Join("systemd", name))
			if err != nil {
				t.Fatal(err)
			}
			b = []byte(strings.ReplaceAll(string(b), installedBinary, linkgate))
			if broken && strings.HasPrefix(name, "hyper2kvm@") {
				b = append(b, "NoSuchKey=1\n"...)
			}
			writeFile(t, filepath.Join(dir, name), string(b))
		}
		stub := filepath.Join(dir, "hyper2kvm")
		if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "hyper2kvm@.service"), strings.Replace(h2kStandIn, "STUB", stub, 1))

		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, "systemd-analyze", "verify", "./hyper2kvm@"+h2kInstance+".service")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		cancel()
		switch {
		case !broken && (err != nil || len(strings.TrimSpace(string(out))) > 0):
			t.Errorf("systemd-analyze verify hyper2kvm@%s.service: %v\n%s", h2kInstance, err, out)
		case broken && !strings.Contains(string(out), "NoSuchKey"):
			t.Errorf("systemd-analyze verify does not read hyper2kvm@.service.d/linkgate.conf (no warning about a bad key):\n%s", out)
		}
	}
}

// TestHyper2kvmSocketPermissions runs linkgate against a stand-in for the
// daemon's control socket, created with the owner and mode the daemon
// gives it, as each example runs linkgate, and checks that it pauses the
// daemon (the gate is closed: a required interface is missing); and that
// without the example's arrangement it cannot connect.
//
//   - Kubernetes: the worker is root with umask 022; linkgate is uid 0 with
//     no capability, the socket's directory mounted read-only.
//   - systemd: the daemon is user and group hyper2kvm with the drop-in's
//     UMask=; linkgate is a dynamic user in group hyper2kvm, in a user
//     namespace (PrivateUsers=yes) where that group is not mapped.
func TestHyper2kvmSocketPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("LINKGATE_REQUIRE_ROOT_TESTS") != "" {
			t.Fatal("needs root (setpriv, mount namespaces)")
		}
		t.Skip("needs root: skipping")
	}
	need(t, "setpriv", "unshare", "mount", "sh")
	p := hyper2kvmPod(t)
	sc := p.linkgate.SecurityContext
	k8sUID, k8sGID := int(*sc.RunAsUser), int(*sc.RunAsUser)
	if sc.RunAsGroup != nil {
		k8sGID = int(*sc.RunAsGroup)
	}
	owner := int(h2kWorkerUID(p))
	// Stand-ins for the dynamic user and for user and group hyper2kvm.
	const dynamicUser, h2kID = 61234, 61235
	umask := h2kUmask(t)

	cases := []struct {
		name       string
		sockUID    int
		sockMode   os.FileMode
		as         runAs
		wantPaused bool
	}{
		{"kubernetes", owner, 0o777 &^ 0o022, runAs{uid: k8sUID, gid: k8sGID}, true},
		{"kubernetes, a non-root linkgate", owner, 0o777 &^ 0o022, runAs{uid: 65532, gid: 65532}, false},
		{"systemd", h2kID, 0o777 &^ umask, runAs{uid: dynamicUser, gid: dynamicUser, groups: []int{h2kID}, userns: true}, true},
		{"systemd, without the daemon's UMask=", h2kID, 0o777 &^ 0o022, runAs{uid: dynamicUser, gid: dynamicUser, groups: []int{h2kID}, userns: true}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := openDir(t)
			bin := filepath.Join(root, "linkgate")
			copyFile(t, linkgate, bin, 0o755)
			sockDir := filepath.Join(root, "output", ".daemon")
			stateDir := filepath.Join(root, "state")
			for _, d := range []string{sockDir, stateDir} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chown(stateDir, tc.as.uid, tc.as.gid); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(sockDir, "control.sock")
			daemon := startFakeDaemon(t, sock, tc.sockUID, tc.sockMode)

			addr := freeAddr(t)
			args := []string{"sidecar", "--hyper2kvm.control-socket=" + sock, "--hyper2kvm.state-dir=" + stateDir,
				"--web.listen-address=" + addr, "--network.required-interfaces=lgh2k-absent0", "--gate.stable-for=0s"}
			// The socket's directory is read-only to linkgate in both:
			// a read-only mount, ProtectSystem=strict.
			as := tc.as
			as.roDir = sockDir
			out := started(t, as.argv(t, bin, args))

			if tc.wantPaused {
				waitMetric(t, addr, fmt.Sprintf("linkgate_hyper2kvm_paused_by_linkgate{socket=%q} 1", sock), out)
				if got := daemon.commands(); !slices.Contains(got, "pause") {
					t.Errorf("the daemon got %q, want a pause", got)
				}
				if states, _ := filepath.Glob(filepath.Join(stateDir, "linkgate-paused-*.json")); len(states) != 1 {
					t.Errorf("state files %q in %s, want one", states, stateDir)
				}
				return
			}
			waitMetric(t, addr, `result="unreachable"`, out)
			if got := daemon.commands(); len(got) > 0 {
				t.Errorf("the daemon got %q, want nothing", got)
			}
			if !strings.Contains(strings.ToLower(out.String()), "permission denied") {
				t.Errorf("linkgate does not say permission denied:\n%s", out.String())
			}
		})
	}
}

// runAs is how a test starts linkgate: with these ids and no capability
// (setpriv), optionally in a user namespace mapping only itself, and with a
// directory bind-mounted read-only over itself in a mount namespace.
type runAs struct {
	uid, gid int
	groups   []int
	userns   bool
	roDir    string
}

var usernsWorks = sync.OnceValue(func() error {
	return exec.Command("setpriv", "--reuid=65532", "--regid=65532", "--clear-groups", "unshare", "--user", "--map-current-user", "true").Run()
})

func (r runAs) argv(t *testing.T, bin string, args []string) []string {
	t.Helper()
	argv := []string{"setpriv", "--reuid=" + strconv.Itoa(r.uid), "--regid=" + strconv.Itoa(r.gid)}
	if len(r.groups) == 0 {
		argv = append(argv, "--clear-groups")
	} else {
		var gs []string
		for _, g := range r.groups {
			gs = append(gs, strconv.Itoa(g))
		}
		argv = append(argv, "--groups="+strings.Join(gs, ","))
	}
	argv = append(argv, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs")
	if r.userns {
		if err := usernsWorks(); err != nil {
			t.Logf("no unprivileged user namespace here (%v): running without one", err)
		} else {
			argv = append(argv, "unshare", "--user", "--map-current-user")
		}
	}
	argv = append(append(argv, bin), args...)
	if r.roDir != "" {
		// Every step execs: the pid started() stops is linkgate's.
		argv = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount --bind -o ro "$0" "$0" && exec "$@"`, r.roDir}, argv...)
	}
	return argv
}

// openDir is a temporary directory that any user may enter.
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "linkgate-h2k")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// fakeDaemon answers hyper2kvm's control protocol (one JSON command per
// connection: status, pause, resume) and records the commands.
type fakeDaemon struct {
	mu     sync.Mutex
	cmds   []string
	paused bool
}

func (d *fakeDaemon) commands() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.cmds)
}

// startFakeDaemon listens on path, owned by uid:uid with mode, as the
// daemon's bind(2) under its umask leaves it.
func startFakeDaemon(t *testing.T, path string, uid int, mode os.FileMode) *fakeDaemon {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	d := &fakeDaemon{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4096)
			n, _ := c.Read(buf)
			var req struct {
				Command string `json:"command"`
			}
			_ = json.Unmarshal(buf[:n], &req)
			d.mu.Lock()
			d.cmds = append(d.cmds, req.Command)
			var reply any
			switch req.Command {
			case "status":
				reply = map[string]any{"status": "ok", "paused": d.paused, "draining": false}
			case "pause":
				d.paused = true
				reply = map[string]any{"status": "ok", "message": "Daemon paused"}
			case "resume":
				d.paused = false
				reply = map[string]any{"status": "ok", "message": "Daemon resumed"}
			default:
				reply = map[string]any{"status": "error", "message": "Unknown command: " + req.Command}
			}
			d.mu.Unlock()
			b, _ := json.Marshal(reply)
			_, _ = c.Write(b)
			c.Close()
		}
	}()
	return d
}

// waitMetric waits until linkgate's /metrics has a line containing want.
func waitMetric(t *testing.T, addr, want string, out *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var body string
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			for _, line := range strings.Split(body, "\n") {
				if strings.Contains(line, want) && !strings.HasPrefix(line, "#") && !strings.HasSuffix(line, " 0") {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	var lines []string
	for _, line := range strings.Split(body, "\n") {
		if strings.Contains(line, "hyper2kvm") && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	t.Fatalf("no metric line with %s in 20 s; hyper2kvm lines:\n%s\nlinkgate output:\n%s", want, strings.Join(lines, "\n"), out.String())
}
