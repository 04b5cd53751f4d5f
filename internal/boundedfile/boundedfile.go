// Package boundedfile reads the small files linkgate is given (the
// configuration file, the vCenter password, CA bundles, the web
// configuration) or keeps (the hyper2kvm pause it owns) under one rule: a regular file, at most a fixed size.
//
// A wrong path must not take the process down. /dev/zero or a FIFO passed
// as --config would otherwise be read until the kernel kills linkgate, or
// block a reload forever; a multi-megabyte file costs many times its size
// once parsed. So a file is opened without blocking, refused unless it is
// a regular file (after symlinks, so a Kubernetes secret mount is fine),
// and read through an io.LimitReader one byte past the limit: the size the
// file claims is never trusted (/dev/zero and /proc files claim 0).
//
// Failed reads are counted per kind of file for the process, as
// linkgate_file_read_errors_total: a file re-read at run time (SIGHUP, a
// password or CA re-read at login) fails where no exit code can say so.
package boundedfile

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/linkgate/linkgate/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
)

// File is a kind of file linkgate reads; it sets the limit and the label.
type File int

const (
	Config         File = iota // --config: linkgate's YAML configuration
	Password                   // --vcenter.password-file
	CABundle                   // --vcenter.ca-file, wait --tls.ca-file
	WebConfig                  // --web.config.file
	WebTLS                     // the certificate, key and client CA files --web.config.file names
	Hyper2kvmState             // the file where linkgate remembers that it paused hyper2kvm's daemon
	numFiles
)

// Limits. A YAML file costs far more memory parsed than on disk: a
// hostile 1 MiB configuration (half a million list elements) peaks near
// 190 MB, over the 128 MiB the Kubernetes manifests allow, where 64 KiB
// peaks near 35 MB. A real configuration is under 2 KiB, a password a few
// dozen bytes, a certificate chain a few KiB, and the whole Mozilla CA
// bundle about 220 KiB.
const (
	ConfigLimit    = 64 << 10
	PasswordLimit  = 4 << 10
	CABundleLimit  = 1 << 20
	WebConfigLimit = 64 << 10
	WebTLSLimit    = 1 << 20
	// Hyper2kvmStateLimit: the file holds a socket path (at most 107
	// bytes), a time and two numbers.
	Hyper2kvmStateLimit = 4 << 10
)

var files = [numFiles]struct {
	label string
	limit int64
}{
	Config:    {"config", ConfigLimit},
	Password:  {"password", PasswordLimit},
	CABundle:  {"ca", CABundleLimit},
	WebConfig: {"web_config", WebConfigLimit},
	WebTLS:    {"web_tls", WebTLSLimit},

	Hyper2kvmState: {"hyper2kvm_state", Hyper2kvmStateLimit},
}

// Limit is the most bytes a file of this kind may hold.
func (f File) Limit() int64 { return files[f].limit }

// String is the label value of linkgate_file_read_errors_total.
func (f File) String() string { return files[f].label }

// ErrTooLarge and ErrNotRegular are what an *Error wraps when the rule,
// not the file system, refused the file.
var (
	ErrTooLarge   = errors.New("too large")
	ErrNotRegular = errors.New("not a regular file")
)

// Error is a file that could not be read. Its text names the path and,
// for a rule, the limit or what the file is; it never holds the content.
type Error struct {
	Path  string
	Limit int64
	Mode  fs.FileMode // the file's type, with ErrNotRegular
	Err   error       // ErrTooLarge, ErrNotRegular or the *fs.PathError
}

func (e *Error) Error() string {
	switch e.Err {
	case ErrTooLarge:
		return fmt.Sprintf("%s is larger than the %s limit", e.Path, Size(e.Limit))
	case ErrNotRegular:
		return fmt.Sprintf("%s is %s, not a regular file", e.Path, describeMode(e.Mode))
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Size formats a limit: 4 KiB, 1 MiB.
func Size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func describeMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeDir != 0:
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a plain file"
}

// Read returns the content of path if it is a regular file of at most
// f.Limit() bytes. A failure is an *Error and is counted.
func Read(path string, f File) ([]byte, error) {
	b, err := ReadLimit(path, f.Limit())
	if err != nil {
		failures[f].Add(1)
	}
	return b, err
}

// ReadLimit is Read with an explicit limit and without counting, for a
// reader that only watches a file for changes.
func ReadLimit(path string, limit int64) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO with no writer would otherwise wait for
	// one. It changes nothing for a regular file.
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &Error{Path: path, Limit: limit, Err: err}
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil {
		return nil, &Error{Path: path, Limit: limit, Err: err}
	}
	if !fi.Mode().IsRegular() {
		return nil, &Error{Path: path, Limit: limit, Mode: fi.Mode().Type(), Err: ErrNotRegular}
	}
	b, err := io.ReadAll(io.LimitReader(fd, limit+1))
	if err != nil {
		return nil, &Error{Path: path, Limit: limit, Err: &fs.PathError{Op: "read", Path: path, Err: err}}
	}
	if int64(len(b)) > limit {
		return nil, &Error{Path: path, Limit: limit, Err: ErrTooLarge}
	}
	return b, nil
}

// failures counts failed Reads for the whole process: the files are the
// process's, whichever command or component reads them.
var failures [numFiles]atomic.Uint64

// Failures is how many Reads of this kind of file have failed.
func (f File) Failures() uint64 { return failures[f].Load() }

const helpText = "Failed reads of a file linkgate was given or keeps (missing, unreadable, not a regular file, or over its size limit), by file: config, password, ca, web_config, web_tls, hyper2kvm_state. At start such a failure ends linkgate with exit code 2 (hyper2kvm_state: the daemon's pause is then not taken as linkgate's); at run time what is in use is kept."

var readErrorsDesc = metric.NewDesc("file", "read_errors_total", helpText, "file")

// Collector exports the failure counts; every file has a series from the
// start, so increase() sees the first failure.
func Collector() prometheus.Collector { return collector{} }

type collector struct{}

func (collector) Describe(ch chan<- *prometheus.Desc) { ch <- readErrorsDesc }

func (collector) Collect(ch chan<- prometheus.Metric) {
	for f := range numFiles {
		ch <- prometheus.MustNewConstMetric(readErrorsDesc, prometheus.CounterValue, float64(f.Failures()), f.String())
	}
}

// CertPool reads a PEM CA bundle under the CABundle rule: the one way
// linkgate reads a CA file (vCenter's, the sidecar's for wait, SMTP's).
func CertPool(path string) (*x509.CertPool, error) {
	pem, err := Read(path, CABundle)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", path)
	}
	return pool, nil
}

// ReadPassword reads a password file under the Password rule: the one
// way linkgate reads a secret from a file (vCenter's, SMTP's, wait's
// basic auth). A trailing newline is not part of the password; a file
// that is empty or holds only white space is refused. The error names
// the file, never its content.
func ReadPassword(path string) (string, error) {
	b, err := Read(path, Password)
	if err != nil {
		return "", err
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if strings.TrimSpace(pw) == "" {
		return "", fmt.Errorf("%s is empty or holds only white space; want a file holding the password", path)
	}
	return pw, nil
}
