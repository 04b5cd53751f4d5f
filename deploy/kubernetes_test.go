package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// manifest is one document of a file under kubernetes/, decoded strictly.
type manifest struct {
	file string // relative to deploy/
	dir  string // the example set it belongs to: kubernetes or kubernetes/secured
	obj  any
}

// apiTypes are the kinds the examples may use; a new kind needs its type
// here so that it is checked too.
var apiTypes = map[string]func() any{
	"v1/ConfigMap":      func() any { return &corev1.ConfigMap{} },
	"v1/Service":        func() any { return &corev1.Service{} },
	"apps/v1/DaemonSet": func() any { return &appsv1.DaemonSet{} },
	"batch/v1/Job":      func() any { return &batchv1.Job{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PodMonitor":     func() any { return &monitoringv1.PodMonitor{} },
}

// externalConfigMaps and secretSources are what the examples mount but do
// not define: created with kubectl as deploy/README.md says.
var externalConfigMaps = map[string]map[string]string{
	"hyper2kvm-migration": {"migration.yaml": "# the migration's own configuration\n"},
}

// secretFiles returns the files of a Secret the examples expect to exist,
// as deploy/README.md and the manifests' comments create it.
func secretFiles(t *testing.T, name string) map[string]string {
	t.Helper()
	switch name {
	case "linkgate-vcenter":
		return map[string]string{"vcenter-password": "test-password\n", "ca.crt": vcenterCA(t)}
	case "hyper2kvm-vcenter":
		return map[string]string{"password": "test-password\n", "ca.crt": vcenterCA(t)}
	case "linkgate-web", "linkgate-wait", "linkgate-scrape":
		dir := filepath.Join(madeSecrets(t), name)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]string{}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			files[e.Name()] = string(b)
		}
		return files
	}
	t.Fatalf("Secret %q is not one the examples document (add it to deploy/README.md and secretFiles)", name)
	return nil
}

func loadManifests(t *testing.T) []manifest {
	t.Helper()
	var all []manifest
	err := filepath.WalkDir("kubernetes", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("%s: document %d: %v", path, i, err)
				break
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Errorf("%s: document %d: %v", path, i, err)
				continue
			}
			if tm.APIVersion == "" && tm.Kind == "" && len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			newObj, ok := apiTypes[tm.APIVersion+"/"+tm.Kind]
			if !ok {
				t.Errorf("%s: document %d: %s %s is not a kind this test knows (add its type to apiTypes)", path, i, tm.APIVersion, tm.Kind)
				continue
			}
			obj := newObj()
			// Strict: an unknown or duplicate field is an error, as for
			// kubectl apply --validate=strict.
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s: document %d (%s): %v", path, i, tm.Kind, err)
				continue
			}
			all = append(all, manifest{file: path, dir: filepath.Dir(path), obj: obj})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

// workload is a pod template of the examples, with where it comes from.
type workload struct {
	where string
	dir   string
	meta  metav1.ObjectMeta
	spec  corev1.PodSpec
}

func workloads(ms []manifest) []workload {
	var ws []workload
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *appsv1.DaemonSet:
			ws = append(ws, workload{m.file + " DaemonSet " + o.Name, m.dir, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec})
		case *batchv1.Job:
			ws = append(ws, workload{m.file + " Job " + o.Name, m.dir, o.Spec.Template.ObjectMeta, o.Spec.Template.Spec})
		}
	}
	return ws
}

// configMaps are the ConfigMaps of every file: the secured examples use
// kubernetes/configmap.yaml too.
func configMaps(ms []manifest) map[string]map[string]string {
	cms := map[string]map[string]string{}
	for name, data := range externalConfigMaps {
		cms[name] = data
	}
	for _, m := range ms {
		if cm, ok := m.obj.(*corev1.ConfigMap); ok {
			cms[cm.Name] = cm.Data
		}
	}
	return cms
}

func TestManifestsDecodeStrictly(t *testing.T) {
	ms := loadManifests(t)
	kinds := map[string]int{}
	for _, m := range ms {
		kinds[m.dir+" "+typeName(m.obj)]++
	}
	// Both example sets are complete.
	for _, want := range []string{
		"kubernetes ConfigMap", "kubernetes Job", "kubernetes DaemonSet", "kubernetes Service", "kubernetes ServiceMonitor",
		"kubernetes/secured Job", "kubernetes/secured DaemonSet", "kubernetes/secured Service",
		"kubernetes/secured ServiceMonitor", "kubernetes/secured PodMonitor",
	} {
		if kinds[want] == 0 {
			t.Errorf("no %s among the manifests (found %v)", want, kinds)
		}
	}
}

func typeName(o any) string {
	switch o.(type) {
	case *corev1.ConfigMap:
		return "ConfigMap"
	case *corev1.Service:
		return "Service"
	case *appsv1.DaemonSet:
		return "DaemonSet"
	case *batchv1.Job:
		return "Job"
	case *monitoringv1.ServiceMonitor:
		return "ServiceMonitor"
	case *monitoringv1.PodMonitor:
		return "PodMonitor"
	}
	return "unknown"
}

// TestManifestReferences: volumes, ports, selectors and Secret keys that
// the manifests name exist.
func TestManifestReferences(t *testing.T) {
	ms := loadManifests(t)
	cms := configMaps(ms)
	ws := workloads(ms)
	for _, w := range ws {
		vols := map[string]corev1.Volume{}
		for _, v := range w.spec.Volumes {
			vols[v.Name] = v
			if v.ConfigMap != nil && cms[v.ConfigMap.Name] == nil {
				t.Errorf("%s: volume %s: ConfigMap %q is defined nowhere", w.where, v.Name, v.ConfigMap.Name)
			}
			if v.Secret != nil && v.Secret.DefaultMode != nil && *v.Secret.DefaultMode&0o007 != 0 {
				t.Errorf("%s: volume %s: Secret readable by others (mode %#o)", w.where, v.Name, *v.Secret.DefaultMode)
			}
		}
		for _, c := range allContainers(w.spec) {
			for _, vm := range c.VolumeMounts {
				if _, ok := vols[vm.Name]; !ok {
					t.Errorf("%s: container %s mounts volume %q, which the pod does not have", w.where, c.Name, vm.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.SecretKeyRef
				if _, ok := secretFiles(t, ref.Name)[ref.Key]; !ok {
					t.Errorf("%s: container %s: env %s: Secret %s has no key %q", w.where, c.Name, e.Name, ref.Name, ref.Key)
				}
			}
			for _, p := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if p != nil && p.HTTPGet != nil {
					if _, ok := containerPort(c, p.HTTPGet.Port.String()); !ok {
						t.Errorf("%s: container %s: probe port %s is not a port of the container", w.where, c.Name, p.HTTPGet.Port.String())
					}
				}
			}
		}
		if port := w.meta.Annotations["prometheus.io/port"]; port != "" {
			if _, ok := anyContainerPort(w.spec, port); !ok {
				t.Errorf("%s: prometheus.io/port %s is not a container port", w.where, port)
			}
		}
	}
	for _, m := range ms {
		switch o := m.obj.(type) {
		case *corev1.Service:
			w := selected(ws, m.dir, o.Spec.Selector)
			if w == nil {
				t.Errorf("%s: Service %s selects no pod template of %s", m.file, o.Name, m.dir)
				continue
			}
			for _, p := range o.Spec.Ports {
				if _, ok := anyContainerPort(w.spec, p.TargetPort.String()); !ok {
					t.Errorf("%s: Service %s port %s: targetPort %s is not a container port", m.file, o.Name, p.Name, p.TargetPort.String())
				}
			}
		case *monitoringv1.ServiceMonitor:
			svc := selectedService(ms, m.dir, o.Spec.Selector)
			if svc == nil {
				t.Errorf("%s: ServiceMonitor %s selects no Service of %s", m.file, o.Name, m.dir)
				continue
			}
			for _, ep := range o.Spec.Endpoints {
				if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("%s: endpoint port %q is not a port of Service %s", m.file, ep.Port, svc.Name)
				}
				var tc *monitoringv1.SafeTLSConfig
				if ep.TLSConfig != nil {
					tc = &ep.TLSConfig.SafeTLSConfig
				}
				t.Run(m.file+" secrets", func(t *testing.T) { checkScrapeSecrets(t, m.file, tc, ep.BasicAuth) })
			}
		case *monitoringv1.PodMonitor:
			sel, err := metav1.LabelSelectorAsSelector(&o.Spec.Selector)
			if err != nil {
				t.Fatal(err)
			}
			var w *workload
			for i := range ws {
				if ws[i].dir == m.dir && sel.Matches(labels.Set(ws[i].meta.Labels)) {
					w = &ws[i]
				}
			}
			if w == nil {
				t.Errorf("%s: PodMonitor %s selects no pod template of %s", m.file, o.Name, m.dir)
				continue
			}
			for _, ep := range o.Spec.PodMetricsEndpoints {
				if ep.Port == nil {
					t.Errorf("%s: endpoint without a port name", m.file)
				} else if _, ok := anyContainerPort(w.spec, *ep.Port); !ok {
					t.Errorf("%s: endpoint port %q is not a container port of %s", m.file, *ep.Port, w.where)
				}
				t.Run(m.file+" secrets", func(t *testing.T) { checkScrapeSecrets(t, m.file, ep.TLSConfig, ep.BasicAuth) })
			}
		}
	}
}

// checkScrapeSecrets: the Secret keys a monitor reads are ones that
// make-secrets.sh writes.
func checkScrapeSecrets(t *testing.T, file string, tc *monitoringv1.SafeTLSConfig, ba *monitoringv1.BasicAuth) {
	t.Helper()
	var refs []corev1.SecretKeySelector
	if ba != nil {
		refs = append(refs, ba.Username, ba.Password)
	}
	if tc != nil && tc.CA.Secret != nil {
		refs = append(refs, *tc.CA.Secret)
	}
	for _, ref := range refs {
		if _, ok := secretFiles(t, ref.Name)[ref.Key]; !ok {
			t.Errorf("%s: Secret %s has no key %q", file, ref.Name, ref.Key)
		}
	}
}

func allContainers(spec corev1.PodSpec) []corev1.Container {
	return append(append([]corev1.Container(nil), spec.InitContainers...), spec.Containers...)
}

// containerPort resolves a port name or number of a container.
func containerPort(c corev1.Container, port string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == port || strconv.Itoa(int(p.ContainerPort)) == port {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

func anyContainerPort(spec corev1.PodSpec, port string) (int32, bool) {
	for _, c := range allContainers(spec) {
		if n, ok := containerPort(c, port); ok {
			return n, true
		}
	}
	return 0, false
}

func selected(ws []workload, dir string, selector map[string]string) *workload {
	for i := range ws {
		if ws[i].dir == dir && labels.SelectorFromSet(selector).Matches(labels.Set(ws[i].meta.Labels)) {
			return &ws[i]
		}
	}
	return nil
}

func selectedService(ms []manifest, dir string, sel metav1.LabelSelector) *corev1.Service {
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		return nil
	}
	for _, m := range ms {
		if svc, ok := m.obj.(*corev1.Service); ok && m.dir == dir && s.Matches(labels.Set(svc.Labels)) {
			return svc
		}
	}
	return nil
}

// isLinkgate tells the linkgate containers by their image.
func isLinkgate(c corev1.Container) bool {
	return strings.Contains(c.Image, "/linkgate/linkgate:")
}

// waitCommand returns the `linkgate wait ...` words of a container that
// runs it before its own program (`sh -c 'linkgate wait ... && exec ...'`).
func waitCommand(c corev1.Container) ([]string, bool) {
	if len(c.Command) != 3 || c.Command[0] != "/bin/sh" || c.Command[1] != "-c" {
		return nil, false
	}
	first, _, ok := strings.Cut(c.Command[2], "&&")
	words := strings.Fields(first)
	if !ok || len(words) < 2 || words[0] != "linkgate" || words[1] != "wait" {
		return nil, false
	}
	return words[1:], true
}

// podRoot lays out, under root, the files a container sees at its mount
// paths (ConfigMap and Secret keys; a key alone with subPath; an empty
// directory for an emptyDir or hostPath volume) and returns the rewriter of
// its paths.
func podRoot(t *testing.T, root string, spec corev1.PodSpec, c corev1.Container, cms map[string]map[string]string) func(string) string {
	t.Helper()
	var mounts []string
	for _, vm := range c.VolumeMounts {
		mounts = append(mounts, vm.MountPath)
	}
	rw := rewriter(root, mounts)
	for _, vm := range c.VolumeMounts {
		var v corev1.Volume
		for _, x := range spec.Volumes {
			if x.Name == vm.Name {
				v = x
			}
		}
		var data map[string]string
		var items []corev1.KeyToPath
		switch {
		case v.ConfigMap != nil:
			data, items = cms[v.ConfigMap.Name], v.ConfigMap.Items
		case v.Secret != nil:
			data, items = secretFiles(t, v.Secret.SecretName), v.Secret.Items
		case v.EmptyDir != nil, v.HostPath != nil:
			// Empty at the start (a hostPath's content is the node's).
			if err := os.MkdirAll(filepath.Join(root, vm.MountPath), 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		default:
			t.Fatalf("container %s: volume %s is not a ConfigMap, Secret, emptyDir or hostPath", c.Name, vm.Name)
		}
		files := map[string]string{}
		if len(items) == 0 {
			for k, val := range data {
				files[k] = val
			}
		}
		for _, it := range items {
			val, ok := data[it.Key]
			if !ok {
				t.Errorf("container %s: volume %s: no key %q", c.Name, vm.Name, it.Key)
			}
			files[it.Path] = val
		}
		if vm.SubPath != "" {
			// One file of the volume, at the mount path itself.
			content, ok := files[vm.SubPath]
			if !ok {
				t.Errorf("container %s: volume %s: subPath %q is none of its files", c.Name, vm.Name, vm.SubPath)
			}
			writeFile(t, filepath.Join(root, vm.MountPath), rw(content))
			continue
		}
		for name, content := range files {
			writeFile(t, filepath.Join(root, vm.MountPath, name), rw(content))
		}
	}
	return rw
}

// TestManifestCommandLines: every linkgate command line of the manifests
// (the linkgate containers' args, the migration container's `linkgate
// wait`) passes --config.check with the files its mounts hold.
func TestManifestCommandLines(t *testing.T) {
	ms := loadManifests(t)
	cms := configMaps(ms)
	checked := 0
	for _, w := range workloads(ms) {
		for _, c := range allContainers(w.spec) {
			var args []string
			if isLinkgate(c) {
				args = slices.Clone(c.Args)
				if len(c.Command) != 0 {
					t.Errorf("%s: container %s overrides the image's command", w.where, c.Name)
				}
			} else if words, ok := waitCommand(c); ok {
				args = words
			} else {
				if strings.Contains(strings.Join(append(c.Command, c.Args...), " "), "linkgate") {
					t.Errorf("%s: container %s runs linkgate in a way this test does not read", w.where, c.Name)
				}
				continue
			}
			checked++
			// A subtest each: one whose Secrets need make-secrets.sh's
			// tools skips alone.
			t.Run(w.where+" "+c.Name, func(t *testing.T) {
				rw := podRoot(t, t.TempDir(), w.spec, c, cms)
				for i := range args {
					args[i] = rw(args[i])
				}
				configCheck(t, w.where+" container "+c.Name, args)
			})
		}
	}
	if checked < 7 {
		t.Errorf("checked %d linkgate command lines, want 7 (2 Jobs with 2 each, 2 DaemonSets, the hyper2kvm worker's sidecar)", checked)
	}
}

// flagValues returns the values of a repeatable --name=value / --name value
// flag.
func flagValues(args []string, name string) []string {
	var vals []string
	for i := 0; i < len(args); i++ {
		if v, ok := strings.CutPrefix(args[i], name+"="); ok {
			vals = append(vals, v)
		} else if args[i] == name && i+1 < len(args) {
			vals = append(vals, args[i+1])
			i++
		}
	}
	return vals
}

// TestProbesReachAListener: each kubelet probe reaches a listener that
// answers it without credentials: with --web.config.file, the health
// listener (on the pod IP, or on 127.0.0.1 with hostNetwork and
// host: 127.0.0.1); without it, the main listener. The /ready probes are
// only for the gate (sidecar).
func TestProbesReachAListener(t *testing.T) {
	for _, w := range workloads(loadManifests(t)) {
		for _, c := range allContainers(w.spec) {
			if !isLinkgate(c) {
				continue
			}
			listeners := flagValues(c.Args, "--web.listen-address")
			secured := len(flagValues(c.Args, "--web.config.file")) > 0
			if secured {
				listeners = flagValues(c.Args, "--web.health-listen-address")
				if len(listeners) == 0 {
					t.Errorf("%s: --web.config.file without --web.health-listen-address: the kubelet cannot probe", w.where)
				}
			}
			probes := 0
			for name, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
				if p == nil {
					continue
				}
				probes++
				if p.HTTPGet == nil {
					t.Errorf("%s: %s is not an httpGet probe", w.where, name)
					continue
				}
				if p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP {
					t.Errorf("%s: %s uses %s; linkgate's probe listener is plain HTTP", w.where, name, p.HTTPGet.Scheme)
				}
				port, _ := containerPort(c, p.HTTPGet.Port.String())
				if !slices.ContainsFunc(listeners, func(l string) bool { return reaches(w.spec, p.HTTPGet.Host, port, l) }) {
					t.Errorf("%s: %s (host %q, port %d) reaches none of %q (secured: %v)", w.where, name, p.HTTPGet.Host, port, listeners, secured)
				}
				switch path := p.HTTPGet.Path; {
				case path == "/healthz":
				case (path == "/ready" || strings.HasPrefix(path, "/ready/")) && c.Args[0] == "sidecar":
				default:
					t.Errorf("%s: %s on %q, want /healthz or /ready (sidecar)", w.where, name, path)
				}
			}
			if probes == 0 {
				t.Errorf("%s: no probes", w.where)
			}
		}
	}
}

// reaches tells whether the kubelet's probe to host:port reaches a
// listener on addr.
func reaches(spec corev1.PodSpec, host string, port int32, addr string) bool {
	h, p, err := net.SplitHostPort(addr)
	if err != nil || p != strconv.Itoa(int(port)) {
		return false
	}
	switch {
	case h == "":
		return true // every address, the pod IP among them
	case net.ParseIP(h) != nil && net.ParseIP(h).IsLoopback():
		// The kubelet's loopback is the pod's only with hostNetwork.
		return spec.HostNetwork && host == h
	}
	return host == h
}
