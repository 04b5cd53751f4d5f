// Package redact is the one rule for showing a URL in logs, errors, labels
// and output: user info (a password), the query and the fragment (tokens)
// are never shown. A URL whose path is itself a secret, as a webhook's
// (Slack, Discord and most others put the token there), shows only its
// origin. Every place that prints a URL goes through this package.
package redact

import (
	"errors"
	"net/url"
	"strings"
)

// URL drops user info, query and fragment, keeping scheme, host and path.
// It also cuts user info from scheme-less "user:pass@host/path" forms,
// which parse as opaque URLs with the password in them.
func URL(raw string) string {
	// User info ends at the last @ of the authority, which ends at the
	// first / ? or # after the scheme: an @ in the path is not user info.
	start := 0
	if j := strings.Index(raw, "://"); j >= 0 {
		start = j + 3
	}
	end := len(raw)
	if k := strings.IndexAny(raw[start:], "/?#"); k >= 0 {
		end = start + k
	}
	if i := strings.LastIndex(raw[start:end], "@"); i >= 0 {
		raw = raw[:start] + raw[start+i+1:]
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// Origin reduces a URL whose path holds a secret to scheme://host[:port].
func Origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "<URL without a host>"
	}
	return u.Scheme + "://" + u.Host
}

// Target shows a vCenter target: a URL as URL does, a bare host[:port]
// as it is.
func Target(t string) string {
	if strings.Contains(t, "://") || strings.Contains(t, "@") {
		return URL(t)
	}
	return t
}

// Error strips the URL that a *url.Error carries in full (net/http wraps
// every client error in one), keeping the cause.
func Error(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
