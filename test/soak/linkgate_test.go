package soak

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/testkit"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// buildLinkgate builds the real binary (testkit.BuildLinkgate).
func buildLinkgate(t *testing.T) string { return testkit.BuildLinkgate(t) }

// sidecar is `linkgate sidecar` running as a child process.
type sidecar struct {
	t      *testing.T
	cmd    *exec.Cmd
	base   string // http://127.0.0.1:port
	stdout *testkit.Buffer
	stderr *testkit.Buffer
	done   chan struct{}
	exit   error
}

func startSidecar(t *testing.T, bin string, args ...string) *sidecar {
	t.Helper()
	addr := testkit.ClosedAddr(t)
	s := &sidecar{t: t, base: "http://" + addr, stdout: new(testkit.Buffer), stderr: new(testkit.Buffer), done: make(chan struct{})}
	s.cmd = exec.Command(bin, append([]string{"sidecar", "--web.listen-address=" + addr}, args...)...)
	// Nothing of the test's environment: no LINKGATE_* variable leaks in.
	s.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.exit = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		if s.running() {
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(s.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if !s.running() || time.Now().After(deadline) {
			t.Fatalf("linkgate sidecar did not come up (exit %v, last error %v):\n%s%s", s.exit, err, s.stdout, s.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *sidecar) pid() int { return s.cmd.Process.Pid }

func (s *sidecar) running() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits; it returns how long the exit took.
func (s *sidecar) stop() (time.Duration, error) {
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	select {
	case <-s.done:
		return time.Since(start), s.exit
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		return time.Since(start), errors.New("no exit within 15s of SIGTERM: killed")
	}
}

// logTail returns the last n lines of the child's stderr and stdout.
func (s *sidecar) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(s.stderr.String()+s.stdout.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// procFile reads /proc/<pid>/<name> of the child.
func (s *sidecar) procFile(name string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", s.pid(), name))
	return string(b), err
}

// peakRSS is the child's VmHWM, in bytes.
func (s *sidecar) peakRSS() (int64, error) {
	status, err := s.procFile("status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(status, "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc/PID/status")
}

// metrics is one parsed scrape: the samples of each counter, gauge or
// untyped family by name (histograms and summaries are left out).
type metrics map[string][]series

type series struct {
	labels map[string]string
	value  float64
}

func parseMetrics(text string) (metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	m := metrics{}
	for name, mf := range mfs {
		for _, x := range mf.GetMetric() {
			s := series{labels: map[string]string{}}
			for _, lp := range x.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case x.Counter != nil:
				s.value = x.GetCounter().GetValue()
			case x.Gauge != nil:
				s.value = x.GetGauge().GetValue()
			case x.Untyped != nil:
				s.value = x.GetUntyped().GetValue()
			default:
				continue
			}
			m[name] = append(m[name], s)
		}
	}
	return m, nil
}

// value returns the value of the first series of name that has the given
// label pairs, and whether there is one.
func (m metrics) value(name string, labels ...string) (float64, bool) {
	for _, s := range m[name] {
		if s.has(labels...) {
			return s.value, true
		}
	}
	return 0, false
}

// sum adds up every series of name.
func (m metrics) sum(name string) float64 {
	total := 0.0
	for _, s := range m[name] {
		total += s.value
	}
	return total
}

func (s series) has(pairs ...string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		if s.labels[pairs[i]] != pairs[i+1] {
			return false
		}
	}
	return true
}
