package probe

import (
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// fingerprint identifies one version of a file. Kubernetes rotates a
// mounted secret by swapping a symlink, so os.Stat (which follows it)
// sees a new inode; the content hash also catches an in-place rewrite
// that keeps size and a coarse mtime.
type fingerprint struct {
	missing bool
	mtime   time.Time
	size    int64
	dev     uint64
	ino     uint64
	sum     [sha256.Size]byte
}

// readFile returns the content of path and its fingerprint.
func readFile(path string) ([]byte, fingerprint, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fingerprint{missing: true}, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fingerprint{missing: true}, err
	}
	fp := fingerprint{mtime: fi.ModTime(), size: fi.Size(), sum: sha256.Sum256(b)}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		fp.dev, fp.ino = uint64(st.Dev), st.Ino
	}
	return b, fp, nil
}

// fileFingerprint is readFile without the content; "" has the zero print.
func fileFingerprint(path string) fingerprint {
	if path == "" {
		return fingerprint{}
	}
	_, fp, _ := readFile(path)
	return fp
}

// credentials yields the password for a login: from the file when one is
// configured, else the literal. The file is read at every login, so a
// rotated secret is picked up without a restart; logins are rare (one per
// session), so there is nothing to gain from caching it.
type credentials struct {
	file    string
	literal string

	mu   sync.Mutex
	last string // last password read from the file, for redaction
}

func (c *credentials) password() (string, error) {
	if c.file == "" {
		return c.literal, nil
	}
	b, _, err := readFile(c.file)
	if err != nil {
		return "", &ConfigError{Field: "PasswordFile", Err: err}
	}
	// A secret file usually ends in a newline the password does not.
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", &ConfigError{Field: "PasswordFile", Err: errors.New("password file " + c.file + " is empty")}
	}
	c.mu.Lock()
	c.last = pw
	c.mu.Unlock()
	return pw, nil
}

// secrets returns the password values this target may have used, for
// redaction.
func (c *credentials) secrets() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return []string{c.literal, c.last}
}
