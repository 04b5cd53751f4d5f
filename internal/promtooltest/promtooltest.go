// Package promtooltest runs `promtool check metrics` on an exposition in
// tests. promtool comes from Debian's prometheus package; CI installs it
// and sets LINKGATE_REQUIRE_ROOT_TESTS, which makes its absence a failure
// instead of a skipped check.
package promtooltest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/internal/netnstest"
)

// CheckMetrics fails t if promtool reports anything about exposition.
func CheckMetrics(t testing.TB, exposition string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv(netnstest.RequireEnv) != "" {
			t.Fatalf("promtool not found and %s is set", netnstest.RequireEnv)
		}
		t.Log("promtool not installed; skipping promtool check metrics")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || out.Len() > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
}
