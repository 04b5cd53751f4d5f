package deploy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// TestSecuredEndToEnd runs each linkgate of kubernetes/secured/ with the
// Secrets make-secrets.sh writes, on loopback ports instead of 9977/9978,
// and checks what each client of the example sees: the kubelet's probes
// answered on the health listener without credentials, the migration
// container's `linkgate wait` over https with the CA and its user, and the
// ServiceMonitor's or PodMonitor's scrape with its tlsConfig and basicAuth.
// The ConfigMap's vCenter target is left out (nothing leaves the machine);
// the gate waits on lo.
func TestSecuredEndToEnd(t *testing.T) {
	ms := loadManifests(t)
	cms := configMaps(ms)
	ran := 0
	for _, w := range workloads(ms) {
		if w.dir != "kubernetes/secured" {
			continue
		}
		for _, c := range allContainers(w.spec) {
			if !isLinkgate(c) {
				continue
			}
			ran++
			t.Run(w.where, func(t *testing.T) {
				runSecured(t, ms, cms, w, c)
			})
		}
	}
	if ran != 2 {
		t.Errorf("ran %d secured linkgate containers, want 2 (Job, DaemonSet)", ran)
	}
}

func runSecured(t *testing.T, ms []manifest, cms map[string]map[string]string, w workload, c corev1.Container) {
	rw := podRoot(t, t.TempDir(), w.spec, c, cms)
	main, health := freeAddr(t), freeAddr(t)
	_, mainPort, _ := net.SplitHostPort(main)
	_, healthPort, _ := net.SplitHostPort(health)
	ports := map[string]string{} // the example's port -> the test's

	var args []string
	// The vCenter part stays out: nothing leaves the machine.
	for _, a := range withoutFlags(c.Args, "--config", "--vcenter.password-file") {
		name, val, _ := strings.Cut(a, "=")
		switch name {
		case "--web.listen-address":
			_, p, _ := net.SplitHostPort(val)
			ports[p] = mainPort
			a = name + "=" + main
		case "--web.health-listen-address":
			_, p, _ := net.SplitHostPort(val)
			ports[p] = healthPort
			a = name + "=" + health
		}
		args = append(args, rw(a))
	}
	if len(flagValues(args, "--web.config.file")) == 0 {
		t.Fatal("no --web.config.file: not a secured example")
	}
	args = append(args, "--network.required-interfaces=lo", "--gate.stable-for=0s")
	started(t, append([]string{linkgate}, args...))

	// The kubelet: every probe, as written, answered 200 without
	// credentials (the gate opens on lo).
	for name, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if p == nil {
			continue
		}
		port, _ := containerPort(c, p.HTTPGet.Port.String())
		url := "http://127.0.0.1:" + ports[strconv.Itoa(int(port))] + p.HTTPGet.Path
		if code, body := poll(t, http.DefaultClient, url, "", "", http.StatusOK); code != http.StatusOK {
			t.Errorf("%s %s: %d %s", name, url, code, body)
		}
	}
	// Nothing but health and readiness on the plain listener.
	if code, _ := poll(t, http.DefaultClient, "http://"+health+"/metrics", "", "", http.StatusNotFound); code != http.StatusNotFound {
		t.Errorf("health listener /metrics: %d, want 404", code)
	}

	// The main listener: TLS, and 401 without credentials.
	monitors := monitorsOf(ms, w)
	if len(monitors) == 0 {
		t.Fatalf("no ServiceMonitor or PodMonitor scrapes %s", w.where)
	}
	for _, m := range monitors {
		if m.scheme == nil || !strings.EqualFold(string(*m.scheme), "https") {
			t.Errorf("%s: scheme %v, want https", m.file, m.scheme)
			continue
		}
		client, user, password := scrapeClient(t, m)
		url := "https://" + main + m.path
		if code, body := poll(t, client, url, "", "", http.StatusUnauthorized); code != http.StatusUnauthorized {
			t.Errorf("%s: %s without credentials: %d %s, want 401", m.file, url, code, body)
		}
		if code, body := poll(t, client, url, user, password, http.StatusOK); code != http.StatusOK || !strings.Contains(body, "linkgate_build_info") {
			t.Errorf("%s: %s as %s: %d, want 200 with linkgate's metrics:\n%.300s", m.file, url, user, code, body)
		}
		if code, _ := poll(t, http.DefaultClient, "http://"+main+m.path, user, password, http.StatusBadRequest); code != http.StatusBadRequest {
			t.Errorf("%s: plain http on the main listener: %d, want 400 (TLS only)", m.file, code)
		}
	}

	// The migration container: its `linkgate wait` as written, to this
	// linkgate's port.
	waited := false
	for _, mc := range allContainers(w.spec) {
		words, ok := waitCommand(mc)
		if !ok {
			continue
		}
		waited = true
		rwc := podRoot(t, t.TempDir(), w.spec, mc, map[string]map[string]string{})
		for i, word := range words {
			for from, to := range ports {
				word = strings.ReplaceAll(word, "localhost:"+from+"/", "localhost:"+to+"/")
			}
			if i > 0 && words[i-1] == "--timeout" {
				word = "30s"
			}
			words[i] = rwc(word)
		}
		if !strings.HasPrefix(flagValues(words, "--url")[0], "https://") {
			t.Errorf("%s: container %s waits without TLS: %q", w.where, mc.Name, words)
		}
		if code, out := runLinkgate(t, words...); code != 0 {
			t.Errorf("%s: container %s: linkgate %s: exit %d\n%s", w.where, mc.Name, strings.Join(words, " "), code, out)
		}
	}
	if w.spec.HostNetwork {
		// Host-level tools on the node wait on the loopback health
		// listener, without credentials (deploy/README.md).
		if code, out := runLinkgate(t, "wait", "--url", "http://"+health+"/ready", "--timeout", "30s"); code != 0 {
			t.Errorf("wait on the health listener: exit %d\n%s", code, out)
		}
	} else if !waited {
		t.Errorf("%s: no container waits on the gate", w.where)
	}
}

// monitor is one scrape endpoint of a ServiceMonitor or PodMonitor.
type monitor struct {
	file   string
	scheme *monitoringv1.Scheme
	path   string
	tls    *monitoringv1.SafeTLSConfig
	auth   *monitoringv1.BasicAuth
}

// monitorsOf returns the endpoints that scrape a workload: a PodMonitor
// selecting its pods, or a ServiceMonitor selecting a Service that selects
// them.
func monitorsOf(ms []manifest, w workload) []monitor {
	var out []monitor
	matches := func(sel metav1.LabelSelector, l map[string]string) bool {
		s, err := metav1.LabelSelectorAsSelector(&sel)
		return err == nil && s.Matches(labels.Set(l))
	}
	for _, m := range ms {
		if m.dir != w.dir {
			continue
		}
		switch o := m.obj.(type) {
		case *monitoringv1.PodMonitor:
			if matches(o.Spec.Selector, w.meta.Labels) {
				for _, ep := range o.Spec.PodMetricsEndpoints {
					out = append(out, monitor{m.file, ep.Scheme, ep.Path, ep.TLSConfig, ep.BasicAuth})
				}
			}
		case *monitoringv1.ServiceMonitor:
			svc := selectedService(ms, m.dir, o.Spec.Selector)
			if svc != nil && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.meta.Labels)) {
				for _, ep := range o.Spec.Endpoints {
					var tc *monitoringv1.SafeTLSConfig
					if ep.TLSConfig != nil {
						tc = &ep.TLSConfig.SafeTLSConfig
					}
					out = append(out, monitor{m.file, ep.Scheme, ep.Path, tc, ep.BasicAuth})
				}
			}
		}
	}
	return out
}

// scrapeClient is what Prometheus makes of a monitor's tlsConfig and
// basicAuth: the CA and server name to verify, the user and password.
func scrapeClient(t *testing.T, m monitor) (*http.Client, string, string) {
	t.Helper()
	tc, ba := m.tls, m.auth
	if tc == nil || tc.CA.Secret == nil || tc.ServerName == nil || ba == nil {
		t.Fatalf("%s: want tlsConfig.ca.secret, tlsConfig.serverName and basicAuth", m.file)
	}
	if tc.InsecureSkipVerify != nil && *tc.InsecureSkipVerify {
		t.Errorf("%s: insecureSkipVerify", m.file)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(secretFiles(t, tc.CA.Secret.Name)[tc.CA.Secret.Key])) {
		t.Fatalf("%s: no CA certificate in Secret %s key %s", m.file, tc.CA.Secret.Name, tc.CA.Secret.Key)
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: *tc.ServerName, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}
	user := secretFiles(t, ba.Username.Name)[ba.Username.Key]
	password := secretFiles(t, ba.Password.Name)[ba.Password.Key]
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, user, password
}

// poll GETs url until it answers want, or for 20 s while it is refused
// or answers something else (linkgate may still be starting, its gate
// still closed); it returns the last answer.
func poll(t *testing.T, client *http.Client, url, user, password string, want int) (int, string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		code, body := 0, ""
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, body = resp.StatusCode, string(b)
		} else {
			body = err.Error()
		}
		if code == want || time.Now().After(deadline) {
			return code, body
		}
		time.Sleep(50 * time.Millisecond)
	}
}
