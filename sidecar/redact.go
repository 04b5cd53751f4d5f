package sidecar

import (
	"errors"
	"net/url"
	"strings"
)

// redactURL reduces a URL to scheme://host for logs, errors and labels:
// webhook paths and queries carry tokens (Slack, Discord), user info
// carries passwords.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "<invalid URL>"
	}
	return u.Scheme + "://" + u.Host
}

// redactURLError strips the URL that *url.Error carries in full.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// safeURL prints u without a password: user info is dropped, and so is
// anything before an "@" in an opaque URL ("user:pass@host:port/ready"
// parses with scheme "user" and the password in Opaque).
func safeURL(u *url.URL) string {
	c := *u
	c.User = nil
	if i := strings.LastIndex(c.Opaque, "@"); i >= 0 {
		c.Opaque = c.Opaque[i+1:]
	}
	return c.String()
}
