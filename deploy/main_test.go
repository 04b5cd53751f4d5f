// Package deploy checks the deployment examples as a person would use them:
// every Kubernetes manifest decodes strictly into its API type and its
// references (volumes, ports, selectors, Secrets) resolve; every linkgate
// command line in the manifests, the systemd units and deploy/README.md
// passes --config.check against the files the example mounts or installs;
// the secured examples work end to end (TLS and basic auth on the main
// listener, probes on the health listener, `linkgate wait` and a
// Prometheus-style scrape with the Secrets make-secrets.sh writes); the
// socket-activated unit serves on the socket systemd-socket-activate hands
// it; systemd-analyze accepts the units; and the hyper2kvm examples give
// linkgate the daemon's configuration, its control socket and the right
// to connect to it.
//
// It is a module of its own, so that the Kubernetes and Prometheus Operator
// API types stay out of linkgate's go.mod. Run it from deploy/:
//
//	go test -count=1 ./...
package deploy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// linkgate is the binary built from this repository for the tests; tmpDir
// holds it and what the tests share.
var linkgate, tmpDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "linkgate-deploy-test")
	tmpDir = dir
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// LINKGATE_DEPLOY_TEST_BINARY checks the examples against a given
	// binary (a release, say) instead of one built from ../cmd/linkgate.
	if linkgate = os.Getenv("LINKGATE_DEPLOY_TEST_BINARY"); linkgate == "" {
		linkgate = filepath.Join(dir, "linkgate")
		build := exec.Command("go", "build", "-o", linkgate, "./cmd/linkgate")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build ./cmd/linkgate: %v\n%s", err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need skips a test whose tool is missing, or fails it where CI requires
// every tool (LINKGATE_REQUIRE_ROOT_TESTS, as in the rest of the project).
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("LINKGATE_REQUIRE_ROOT_TESTS") != "" {
				t.Fatalf("%s missing (Debian: openssl, apache2-utils for htpasswd, systemd)", tool)
			}
			t.Skipf("%s missing: skipping", tool)
		}
	}
}

// cleanEnv is the test's environment without LINKGATE_* variables, which
// would act as flags.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LINKGATE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// runLinkgate runs the binary to completion and returns its exit code and
// output.
func runLinkgate(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, linkgate, args...)
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("linkgate %q did not finish in a minute", args)
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("linkgate %q: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}

// configCheck runs a command line with --config.check and fails the test
// unless linkgate says it is valid.
func configCheck(t *testing.T, where string, args []string) {
	t.Helper()
	args = append(append([]string(nil), args...), "--config.check")
	code, out := runLinkgate(t, args...)
	if code != 0 || !strings.Contains(out, "configuration is valid") {
		t.Errorf("%s: linkgate %s: exit %d:\n%s", where, strings.Join(args, " "), code, out)
	}
}

// started runs linkgate (or a wrapper, argv[0]) in the background until the
// test ends; it is stopped by its own pid.
func started(t *testing.T, argv []string, env ...string) *syncBuffer {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = cleanEnv(env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", argv[0], out.String())
		}
	})
	return out
}

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.String()
}

// freeAddr is a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// testCA is a self-signed PEM certificate, standing for a vCenter CA.
var testCA = sync.OnceValues(func() (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test vCenter CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
})

func vcenterCA(t *testing.T) string {
	t.Helper()
	ca, err := testCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// secretsDir is the output of kubernetes/secured/make-secrets.sh, made
// once: OUT/<secret name>/<key>.
var (
	secretsOnce sync.Once
	secretsOut  string
	secretsErr  error
)

func madeSecrets(t *testing.T) string {
	t.Helper()
	need(t, "openssl", "htpasswd")
	secretsOnce.Do(func() {
		secretsOut = filepath.Join(tmpDir, "secrets")
		cmd := exec.Command("sh", "kubernetes/secured/make-secrets.sh", secretsOut)
		if out, err := cmd.CombinedOutput(); err != nil {
			secretsErr = fmt.Errorf("make-secrets.sh: %v\n%s", err, out)
		}
	})
	if secretsErr != nil {
		t.Fatal(secretsErr)
	}
	return secretsOut
}

// rewriter maps absolute paths under the given prefixes into root, so that
// a command line or file written for a container or a host reads the test's
// copy. A prefix counts at the start of a word or after = : ' ", and only
// as whole path elements.
func rewriter(root string, prefixes []string) func(string) string {
	sorted := append([]string(nil), prefixes...)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i]) > len(sorted[j]) })
	return func(s string) string {
		var b strings.Builder
		for i := 0; i < len(s); {
			if i == 0 || strings.IndexByte(" \t\n=:'\"", s[i-1]) >= 0 {
				if p := prefixAt(s[i:], sorted); p != "" {
					b.WriteString(root)
					b.WriteString(p)
					i += len(p)
					continue
				}
			}
			b.WriteByte(s[i])
			i++
		}
		return b.String()
	}
}

func prefixAt(s string, prefixes []string) string {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) && (len(s) == len(p) || strings.IndexByte("/ \t\n'\"", s[len(p)]) >= 0) {
			return p
		}
	}
	return ""
}

// withoutFlags drops flags (--name=value or --name value) from args.
func withoutFlags(args []string, names ...string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		name, _, hasValue := strings.Cut(args[i], "=")
		if !slices.Contains(names, name) {
			out = append(out, args[i])
		} else if !hasValue {
			i++ // its value is the next word
		}
	}
	return out
}
