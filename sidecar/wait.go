package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/boundedfile"
	"github.com/linkgate/linkgate/internal/redact"
)

// ErrTimeout is wrapped by WaitURL and WaitLocal when the timeout ends
// before the condition holds. Any other error is a hard error. (The exit
// codes of `linkgate wait` follow from this: cmd/linkgate/exit.go.)
var ErrTimeout = errors.New("timed out")

const (
	waitGrace      = 5 * time.Second // server's answer beyond the requested wait
	waitMinBackoff = 100 * time.Millisecond
	waitMaxBackoff = 2 * time.Second
)

// WaitOptions configure WaitURL.
type WaitOptions struct {
	// Client makes the requests (default http.DefaultClient).
	Client *http.Client
	// Timeout bounds the whole wait; <= 0 asks once.
	Timeout time.Duration
	// User and PasswordFile are HTTP basic-auth credentials for a sidecar
	// behind --web.config.file; the file is read (bounded) at each request,
	// so it may be rotated. User info in the URL is refused instead.
	User, PasswordFile string
	// Progress, if set, is told every ProgressEvery (default 10s) why the
	// gate is not ready yet.
	Progress      func(waited time.Duration, why string)
	ProgressEvery time.Duration
}

// DefaultProgressEvery is how often a wait reports why it still waits.
const DefaultProgressEvery = 10 * time.Second

// ErrNotGate is wrapped when a URL answers, but not as a linkgate gate
// does: /healthz, /metrics or another service would otherwise pass for
// "ready" with any 200.
var ErrNotGate = errors.New("not a linkgate readiness endpoint")

// WaitURL long-polls a running sidecar's /ready (?wait=) until the gate
// says ready (nil), the timeout ends (an error wrapping ErrTimeout), or
// something is wrong that waiting will not fix (any other error: a bad URL,
// 401, 404, a TLS failure, an unknown host, an answer that is not the
// gate's JSON document, wrapping ErrNotGate). Connection refused or reset,
// 503, 502, 504 and 429 are retried with a small backoff: the sidecar may
// be starting, restarting or shedding waiters. A URL without a path means
// /ready; its query (exclude=, ...) is kept. Each long-poll lasts at most
// ProgressEvery, after which Progress hears why the gate is not ready.
// When ctx ends first, ctx.Err() is returned.
func WaitURL(ctx context.Context, rawURL string, o WaitOptions) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("wait: bad URL: %w", redact.Error(err))
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("wait: bad URL %s: want http(s)://host[:port][/ready]", redact.URL(u.String()))
	}
	if u.User != nil {
		return fmt.Errorf("wait: %s: user info in the URL is not accepted; give the user and a password file (--basic-auth.user, --basic-auth.password-file)", redact.URL(u.String()))
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/ready"
	}
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = DefaultProgressEvery
	}
	start := time.Now()
	deadline := start.Add(max(o.Timeout, 0))
	nextReport := start.Add(o.ProgressEvery)
	backoff := waitMinBackoff
	last := "no answer yet"
	for {
		remaining := max(time.Until(deadline), 0)
		poll := min(remaining, o.ProgressEvery)
		q := u.Query()
		q.Set("wait", poll.Round(time.Millisecond).String())
		u.RawQuery = q.Encode()
		started := time.Now()
		done, reason, err := o.waitOnce(ctx, u, poll)
		if err != nil || done {
			return err
		}
		last = reason
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w after %s waiting for %s: %s", ErrTimeout, o.Timeout, redact.URL(u.String()), last)
		}
		if o.Progress != nil && !time.Now().Before(nextReport) {
			o.Progress(time.Since(start).Round(time.Second), last)
			nextReport = time.Now().Add(o.ProgressEvery)
		}
		// An answer that came back quickly (refused, shedding, shutting
		// down) must not turn into a busy loop.
		if pause := backoff - time.Since(started); pause > 0 {
			t := time.NewTimer(min(pause, time.Until(deadline)))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			backoff = min(backoff*2, waitMaxBackoff)
		} else {
			backoff = waitMinBackoff
		}
	}
}

// gateDoc is the gate's JSON answer (readyDoc, the server's own type),
// with ready as a pointer: a document without it is not the gate's.
type gateDoc struct {
	readyDoc
	Ready *bool `json:"ready"`
}

// parseGateDoc reads a gate's JSON answer; ok is false for anything else.
func parseGateDoc(body []byte) (gateDoc, bool) {
	var d gateDoc
	if json.Unmarshal(body, &d) != nil || d.Ready == nil || d.Checks == nil {
		return d, false
	}
	return d, true
}

// why says why the gate is not ready, from its document.
func (d gateDoc) why() string {
	var out []string
	for _, c := range d.Checks {
		if !c.OK && !c.Excluded {
			out = append(out, c.Name+" failed: "+c.Reason)
		}
	}
	out = append(out, d.Warnings...)
	switch {
	case len(out) > 0:
	case !d.ReadyAt.IsZero():
		out = append(out, "every check holds; damping until "+d.ReadyAt.UTC().Format(time.RFC3339))
	case len(d.Checks) == 0:
		out = append(out, "checks not evaluated yet")
	}
	if len(out) == 0 {
		return "not ready"
	}
	return "not ready: " + strings.Join(out, "; ")
}

// waitOnce makes one long-poll request. It returns done for the gate's
// "ready", a reason for a retryable answer, or a hard error.
func (o WaitOptions) waitOnce(ctx context.Context, u *url.URL, wait time.Duration) (bool, string, error) {
	rctx, cancel := context.WithTimeout(ctx, wait+waitGrace)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, "", fmt.Errorf("wait %s: %w", redact.URL(u.String()), redact.Error(err))
	}
	req.Header.Set("Accept", "application/json")
	if o.User != "" {
		pw, err := boundedfile.ReadPassword(o.PasswordFile)
		if err != nil {
			return false, "", fmt.Errorf("wait: password file: %w", err)
		}
		req.SetBasicAuth(o.User, pw)
	}
	resp, err := o.Client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return false, "", ctx.Err()
		}
		inner := redact.Error(err)
		if retryableTransport(inner) || errors.Is(inner, context.DeadlineExceeded) {
			return false, inner.Error(), nil
		}
		return false, "", fmt.Errorf("wait %s: %w", redact.URL(u.String()), inner)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	doc, isGate := parseGateDoc(body)
	switch resp.StatusCode {
	case http.StatusOK:
		if !isGate || !*doc.Ready {
			return false, "", fmt.Errorf("wait %s: %w: it answered 200 without the gate's JSON document (is it /healthz or /metrics? want the sidecar's /ready or /ready/NAME)",
				redact.URL(u.String()), ErrNotGate)
		}
		return true, "", nil
	case http.StatusServiceUnavailable:
		if isGate {
			return false, doc.why(), nil
		}
		return false, resp.Status, nil // a proxy, or the sidecar shutting down
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusGatewayTimeout:
		return false, resp.Status, nil
	}
	return false, "", fmt.Errorf("wait %s: %s: %s", redact.URL(u.String()), resp.Status, oneLine(string(body)))
}

func retryableTransport(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// LinkRequirement is one `linkgate wait` interface argument, IF[:STATE]:
// the link must reach at least STATE in kernel operstate order
//
//	notpresent < down < lowerlayerdown < testing < dormant < up
//
// STATE defaults to up. A link counts as up by the collector's rule
// (collector.IsUp), so an "unknown" link that is admin up with carrier is
// up; one without carrier ranks as lowerlayerdown, one admin down as down.
type LinkRequirement struct {
	Name     string
	MinState collector.OperState
}

var operOrder = []collector.OperState{
	collector.OperNotPresent, collector.OperDown, collector.OperLowerLayerDown,
	collector.OperTesting, collector.OperDormant, collector.OperUp,
}

func operRank(o collector.OperState) int {
	for i, s := range operOrder {
		if s == o {
			return i
		}
	}
	return -1
}

// effectiveOperState places a link in operOrder.
func effectiveOperState(l collector.Link) collector.OperState {
	switch {
	case l.Up:
		return collector.OperUp
	case l.OperState == collector.OperUnknown && !l.AdminUp:
		return collector.OperDown
	case l.OperState == collector.OperUnknown:
		return collector.OperLowerLayerDown
	}
	return l.OperState
}

// ParseLinkRequirement parses IF[:STATE], e.g. "eth0", "eth0:up", "wlan0:dormant".
func ParseLinkRequirement(s string) (LinkRequirement, error) {
	name, state, hasState := strings.Cut(s, ":")
	if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t") {
		return LinkRequirement{}, fmt.Errorf("interface %q: not a valid interface name", name)
	}
	r := LinkRequirement{Name: name, MinState: collector.OperUp}
	if hasState {
		o, ok := collector.ParseOperState(state)
		if !ok || operRank(o) < 0 {
			return LinkRequirement{}, fmt.Errorf("interface %q: operstate %q: want one of notpresent, down, lowerlayerdown, testing, dormant, up", name, state)
		}
		r.MinState = o
	}
	return r, nil
}

func (r LinkRequirement) String() string { return r.Name + ":" + r.MinState.String() }

// LocalWait is what `linkgate wait` waits for without a running sidecar,
// like systemd-networkd-wait-online.
type LocalWait struct {
	// Links to wait for. Empty: any non-loopback link up.
	Links []LinkRequirement
	// Any: one of Links is enough (default: all).
	Any bool
	// IPv4, IPv6 (-4/-6): a satisfying link must also have a global
	// address of that family; both set, of both.
	IPv4, IPv6 bool
}

// Satisfied reports whether s meets the wait, and if not, why.
func (w LocalWait) Satisfied(s *collector.Snapshot) (bool, string) {
	if err := stateError(s); err != nil {
		return false, err.Error()
	}
	reqs, any := w.Links, w.Any
	if len(reqs) == 0 {
		any = true
		for _, l := range s.Links {
			if !l.Loopback {
				reqs = append(reqs, LinkRequirement{Name: l.Name, MinState: collector.OperUp})
			}
		}
		if len(reqs) == 0 {
			return false, "no non-loopback link"
		}
	}
	var problems []string
	for _, r := range reqs {
		if p := w.unmet(s, r); p != "" {
			problems = append(problems, p)
		} else if any {
			return true, ""
		}
	}
	if len(problems) == 0 {
		return true, ""
	}
	return false, strings.Join(problems, "; ")
}

func (w LocalWait) unmet(s *collector.Snapshot, r LinkRequirement) string {
	l, ok := s.LinkByName(r.Name)
	if !ok {
		return r.Name + ": missing"
	}
	if st := effectiveOperState(l); operRank(st) < operRank(r.MinState) {
		return fmt.Sprintf("%s: operstate %s, want %s", r.Name, st, r.MinState)
	}
	var lacking []string
	if w.IPv4 && !hasGlobalAddress(s, l.Index, collector.FamilyIPv4) {
		lacking = append(lacking, "inet")
	}
	if w.IPv6 && !hasGlobalAddress(s, l.Index, collector.FamilyIPv6) {
		lacking = append(lacking, "inet6")
	}
	if len(lacking) > 0 {
		return fmt.Sprintf("%s: no global %s address", r.Name, strings.Join(lacking, "/"))
	}
	return ""
}

// WaitLocal waits on src's change signal until w is satisfied (nil), the
// timeout ends (an error wrapping ErrTimeout, with what is missing), or
// ctx ends (ctx.Err()). A timeout <= 0 checks the current snapshot once.
// src must be running; a snapshot before its first dump never satisfies.
// progress, if not nil, hears what is missing every DefaultProgressEvery.
func WaitLocal(ctx context.Context, src Snapshots, w LocalWait, timeout time.Duration, progress func(waited time.Duration, why string)) error {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	start := time.Now()
	var report <-chan time.Time
	if progress != nil {
		tick := time.NewTicker(DefaultProgressEvery)
		defer tick.Stop()
		report = tick.C
	}
	for {
		s := src.Snapshot()
		ok, why := w.Satisfied(s)
		if ok {
			return nil
		}
		if timeout <= 0 {
			return fmt.Errorf("%w: %s", ErrTimeout, why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-expired:
			return fmt.Errorf("%w after %s: %s", ErrTimeout, timeout, why)
		case <-report:
			progress(time.Since(start).Round(time.Second), why)
			continue
		case <-s.Changed():
		}
	}
}
