package sidecar

import (
	"errors"
	"net/url"
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
