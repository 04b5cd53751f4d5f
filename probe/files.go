package probe

import (
	"crypto/sha256"

	"github.com/linkgate/linkgate/internal/boundedfile"
)

// fingerprint identifies one version of a file by its content. Only new
// content is a new password or CA: a touch, a chmod, or a symlink swap to
// the same bytes (a secret re-projected, a template re-rendered) is not a
// change and must not buy an extra login attempt against vCenter SSO's
// lockout. Hashing the content also catches an in-place rewrite that
// keeps the size and a coarse mtime.
type fingerprint struct {
	missing bool
	sum     [sha256.Size]byte
}

// readFile returns the content of path and its fingerprint.
func readFile(path string) ([]byte, fingerprint, error) {
	b, err := boundedfile.ReadLimit(path, boundedfile.CABundleLimit) // the larger of the two watched files
	if err != nil {
		return nil, fingerprint{missing: true}, err
	}
	return b, fingerprint{sum: sha256.Sum256(b)}, nil
}

// fileFingerprint is readFile without the content; "" has the zero print.
func fileFingerprint(path string) fingerprint {
	if path == "" {
		return fingerprint{}
	}
	_, fp, _ := readFile(path)
	return fp
}

// secret holds a password so that no output can show it: fmt prints the
// pointer inside a struct as an address, and the type's own methods print
// a placeholder. Only the Login call reads the value.
type secret struct{ p *string }

func newSecret(s string) secret { return secret{&s} }

func (s secret) value() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

func (s secret) String() string   { return "[secret]" }
func (s secret) GoString() string { return "[secret]" }

// credentials yields the password for a login: from the file when one is
// configured, else the literal. The file is read at every login, so a
// rotated secret is picked up without a restart; logins are rare (one per
// session), so there is nothing to gain from caching it.
type credentials struct {
	file    string
	literal secret
}

func (c *credentials) password() (secret, error) {
	if c.file == "" {
		return c.literal, nil
	}
	pw, err := boundedfile.ReadPassword(c.file)
	if err != nil {
		return secret{}, &ConfigError{Field: "PasswordFile", Err: err}
	}
	return newSecret(pw), nil
}
