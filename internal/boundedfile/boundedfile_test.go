package boundedfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func write(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, bytes.Repeat([]byte("x"), size), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadLimits(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(write(t, 10), link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		file File
		want error  // nil: read succeeds
		text string // the whole error text
	}{
		{"at the limit", write(t, PasswordLimit), Password, nil, ""},
		{"empty", write(t, 0), Password, nil, ""},
		{"symlink to a regular file", link, Password, nil, ""},
		{"one byte over", write(t, PasswordLimit+1), Password, ErrTooLarge, "@ is larger than the 4 KiB limit"},
		{"config over", write(t, ConfigLimit+1), Config, ErrTooLarge, "@ is larger than the 64 KiB limit"},
		{"CA bundle over", write(t, CABundleLimit+1), CABundle, ErrTooLarge, "@ is larger than the 1 MiB limit"},
		{"/dev/zero claims size 0", "/dev/zero", Config, ErrNotRegular, "/dev/zero is a character device, not a regular file"},
		{"FIFO without a writer does not block", fifo, CABundle, ErrNotRegular, "@ is a FIFO (named pipe), not a regular file"},
		{"directory", t.TempDir(), CABundle, ErrNotRegular, "@ is a directory, not a regular file"},
		{"missing", "/nonexistent/pw", Password, fs.ErrNotExist, "open /nonexistent/pw: no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.file.Failures()
			done := make(chan struct{})
			var b []byte
			var err error
			go func() { defer close(done); b, err = Read(tc.path, tc.file) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Read blocked")
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if tc.file.Failures() != before {
					t.Error("a successful read was counted")
				}
				return
			}
			if b != nil || !errors.Is(err, tc.want) {
				t.Fatalf("got %d bytes, err %v; want %v", len(b), err, tc.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Path != tc.path || e.Limit != tc.file.Limit() {
				t.Errorf("err = %#v", err)
			}
			if want := string(bytes.ReplaceAll([]byte(tc.text), []byte("@"), []byte(tc.path))); err.Error() != want {
				t.Errorf("text %q, want %q", err.Error(), want)
			}
			if got := tc.file.Failures() - before; got != 1 {
				t.Errorf("failures counted %d, want 1", got)
			}
		})
	}
}

func TestReadLimitDoesNotCount(t *testing.T) {
	before := Config.Failures()
	if _, err := ReadLimit("/dev/zero", 10); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("err = %v", err)
	}
	if Config.Failures() != before {
		t.Error("ReadLimit counted a failure")
	}
}

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{4096: "4 KiB", 1 << 20: "1 MiB", 1000: "1000 bytes", 1536: "1536 bytes"} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestCollectorExportsEveryFile(t *testing.T) {
	_, _ = Read("/dev/zero", WebConfig)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Collector())
	want := fmt.Sprintf(`# HELP linkgate_file_read_errors_total %s
# TYPE linkgate_file_read_errors_total counter
linkgate_file_read_errors_total{file="ca"} %d
linkgate_file_read_errors_total{file="config"} %d
linkgate_file_read_errors_total{file="hyper2kvm_state"} %d
linkgate_file_read_errors_total{file="password"} %d
linkgate_file_read_errors_total{file="web_config"} %d
linkgate_file_read_errors_total{file="web_tls"} %d
`, helpText, CABundle.Failures(), Config.Failures(), Hyper2kvmState.Failures(), Password.Failures(), WebConfig.Failures(), WebTLS.Failures())
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if WebConfig.Failures() == 0 {
		t.Error("the failed read was not counted")
	}
}

func TestCertPool(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := CertPool(notPEM); err == nil || !strings.Contains(err.Error(), "no PEM certificate in "+notPEM) {
		t.Errorf("CertPool(not PEM) = %v", err)
	}
	if _, err := CertPool("/dev/zero"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("CertPool(/dev/zero) = %v", err)
	}
}

// TestReadPassword: the one password-file rule, for every secret file.
func TestReadPassword(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{
		"s3cret\n": "s3cret", "s3cret\r\n": "s3cret", "s3cret": "s3cret", " padded \n": " padded ",
		"": "", "\n": "", "  \t\n": "",
	} {
		p := filepath.Join(dir, "pw")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadPassword(p)
		switch {
		case want == "" && (err == nil || !strings.Contains(err.Error(), "is empty or holds only white space") || strings.Contains(err.Error(), content) && content != ""):
			t.Errorf("%q: %q, %v; want refused, naming the file only", content, got, err)
		case want != "" && (err != nil || got != want):
			t.Errorf("%q: %q, %v; want %q", content, got, err, want)
		}
	}
}
