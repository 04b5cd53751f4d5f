// Package netnstest creates private network namespaces and veth pairs for
// tests, runs code inside them, and removes everything it created.
//
// Tests that need root call New (or RequireRoot). Without root they skip,
// unless LINKGATE_REQUIRE_ROOT_TESTS=1 is set (as .ci/run does), in which
// case the missing privilege fails the test instead of hiding it.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireEnv is the environment variable that turns a root skip into a failure.
const RequireEnv = "LINKGATE_REQUIRE_ROOT_TESTS"

// RequireRoot skips t when not running as root with the ip command, or
// fails it when RequireEnv is set.
func RequireRoot(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs the ip command (iproute2)"
	}
	if why == "" {
		return
	}
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("%s, and %s is set", why, RequireEnv)
	}
	t.Skip(why)
}

// NS is a named network namespace under /run/netns.
type NS struct {
	Name string
	Path string
}

// New creates a fresh network namespace with a unique name, brings its
// loopback up, and deletes it when the test ends.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "lgt-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name, Path: "/run/netns/" + name}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns.IP(t, "link", "set", "lo", "up")
	return ns
}

// IP runs `ip -n <ns> args...` and fails the test on error. It returns stdout.
func (n *NS) IP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.TryIP(args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// TryIP runs `ip -n <ns> args...` and returns its error instead of failing.
func (n *NS) TryIP(args ...string) (string, error) {
	full := append([]string{"-n", n.Name}, args...)
	cmd := exec.Command("ip", full...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %v: %s", strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Veth creates a veth pair with end aName in a and end bName in b (b may be
// a itself) and sets both ends administratively up. Deleting the namespace
// removes the pair.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	a.IP(t, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.IP(t, "link", "set", aName, "up")
	b.IP(t, "link", "set", bName, "up")
}

// Do runs fn on a locked OS thread switched into the namespace. Sockets
// created by fn (listeners, dialed connections) stay in the namespace after
// Do returns. The thread is not returned to the Go scheduler's pool if the
// switch back fails.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(n.Path)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- fmt.Errorf("setns back: %w (fn: %v)", err, ferr)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
