package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fuzz targets for what a client sends to /ready (issue 8). Long runs:
//
//	go test -run '^$' -fuzz '^FuzzParseWait$' -fuzztime 10m ./sidecar/
//	go test -run '^$' -fuzz '^FuzzReadyHandler$' -fuzztime 10m ./sidecar/

// FuzzParseWait checks parseWait against the rules its comment states,
// computed here from time.ParseDuration and strconv.ParseFloat directly:
//   - "" is no wait; a duration or a number of seconds of 0 or more is that
//     long, cut to the limit, whatever the limit (however long the value:
//     a duration or a number too large to represent is the limit);
//   - a negative one is refused as "negative", NaN and spelled-out
//     infinities as "not a finite number", anything else as "not a
//     duration or a number", each naming the value, quoted;
//   - the result is never negative nor above the limit.
func FuzzParseWait(f *testing.F) {
	for _, s := range waitSeeds {
		f.Add(s.wait, s.limit)
	}
	f.Fuzz(func(t *testing.T, s string, limitNs int64) {
		limit := time.Duration(limitNs)
		if limit <= 0 {
			limit = 5 * time.Minute // NewHandler's default for MaxWait <= 0
		}
		d, err := parseWait(s, limit)
		if err != nil {
			if d != 0 {
				t.Errorf("parseWait(%q) = %v with an error", s, d)
			}
			checkWaitError(t, s, limit, err, expectWait(s, limit))
			return
		}
		if d < 0 || d > limit {
			t.Fatalf("parseWait(%q, %v) = %v: outside [0, %v]", s, limit, d, limit)
		}
		want := expectWait(s, limit)
		if want.why != "" {
			t.Fatalf("parseWait(%q, %v) = %v, want an error: %s", s, limit, d, want.why)
		}
		if want.exact && d != want.d {
			t.Fatalf("parseWait(%q, %v) = %v, want %v", s, limit, d, want.d)
		}
		if !want.exact && (d-want.d > time.Nanosecond || want.d-d > time.Nanosecond) { // float seconds to nanoseconds
			t.Fatalf("parseWait(%q, %v) = %v, want %v ±1ns", s, limit, d, want.d)
		}
	})
}

// digitsRE finds the numbers in a duration, to shrink them (expectWait).
var digitsRE = regexp.MustCompile(`[0-9]+`)

// waitSeeds: TestParseWait's cases and a few limits; also committed under
// testdata/fuzz/FuzzParseWait.
var waitSeeds = func() []struct {
	wait  string
	limit int64
} {
	type seed = struct {
		wait  string
		limit int64
	}
	var out []seed
	for _, s := range []string{"", "0", "-0", "30s", "1m30s", "+2s", "30", "1.5", ".5", "1.", "0.25", "300", "1h",
		"1e308", "1e400", "9999999h", "2562048h1s", "-1s", "-1", "-1e308", "-1e400", "-9999999h", "NaN", "nan",
		"Inf", "+Inf", "-Inf", "infinity", "soon", "30 s", "0x1p-2", "1_000", "1µs", "1μs", "-0x1p1024"} {
		out = append(out, seed{s, int64(5 * time.Minute)})
	}
	return append(out, seed{"9223372036.8547758", math.MaxInt64}, seed{"292y", int64(20 * time.Millisecond)}, seed{"1ns", 1})
}()

type waitWant struct {
	d     time.Duration
	exact bool
	why   string // the error's reason, or ""
}

// expectWait is parseWait's contract, spelled out.
func expectWait(s string, limit time.Duration) waitWant {
	if s == "" {
		return waitWant{exact: true}
	}
	negative := waitWant{why: "negative"}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return negative
		}
		return waitWant{d: min(d, limit), exact: true}
	}
	// Valid duration syntax that overflows: with every number shrunk to 1
	// it parses (overflow is ParseDuration's only error for valid syntax).
	if shrunk := digitsRE.ReplaceAllString(s, "1"); shrunk != s {
		if _, err := time.ParseDuration(shrunk); err == nil {
			if strings.HasPrefix(s, "-") {
				return negative
			}
			return waitWant{d: limit, exact: true}
		}
	}
	secs, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return waitWant{why: "not a duration or a number"}
	case math.IsNaN(secs), err == nil && math.IsInf(secs, 0):
		return waitWant{why: "not a finite number"}
	case secs < 0:
		return negative
	case secs >= limit.Seconds():
		return waitWant{d: limit, exact: true}
	}
	return waitWant{d: time.Duration(secs * 1e9)}
}

func checkWaitError(t *testing.T, s string, limit time.Duration, err error, want waitWant) {
	t.Helper()
	if want.why == "" {
		t.Fatalf("parseWait(%q, %v): %v; want %v", s, limit, err, want.d)
	}
	msg := fmt.Sprintf("wait %q: %s; want a duration like 30s or a number of seconds, 0 or more (a wait longer than %s is cut to %s)",
		s, want.why, limit, limit)
	if err.Error() != msg {
		t.Fatalf("parseWait(%q, %v): %q\nwant %q", s, limit, err, msg)
	}
}

// FuzzReadyHandler sends fuzzed request targets (path and raw query), an
// Accept header and a method to the Handler over gates in fixed states:
// ready; failing one check; all checks passing but damping (stable-for
// 1h); not evaluated yet; and failing with every long-poll slot taken. It
// computes the answer from that state and the request, without the
// handler's judge, and checks:
//   - no panic; the status is 200, 400, 404, 405, 429 or 503, and it is
//     the one the request calls for: 405 for other methods, 404 for other
//     paths and unknown checks, 400 for a bad ?wait=, 429 for a long-poll
//     without a free slot, 200 exactly when the judged checks (the one
//     named, or all but the excluded ones) hold and damping allows, else
//     503;
//   - every answer but 200 has a body; a text answer's lines agree with
//     the status; a JSON answer (only when Accept asked for JSON) parses,
//     agrees with the status and lists the judged checks with their
//     exclusions and a warning for unknown names;
//   - a long-poll on a gate that does not change answers 503 no sooner
//     than the wait and never later than the cap (HandlerOptions.MaxWait)
//     plus slack; the request context's deadline (cap + hang) never fires;
//   - /events answers 200 with the current state as its first event.
func FuzzReadyHandler(f *testing.F) {
	for _, s := range readySeeds {
		f.Add(s.target, s.accept, s.which)
	}
	fixtures := newReadyFixtures(f)
	f.Fuzz(func(t *testing.T, target, accept string, which uint8) {
		if !validRequestTarget(target) || !validHeaderValue(accept) {
			return // net/http refuses these before any handler runs
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // likewise
		}
		fx := fixtures[int(which)%len(fixtures)]
		method := []string{http.MethodGet, http.MethodHead, http.MethodPost}[int(which)/len(fixtures)%3]
		fx.serve(t, method, target, u, accept)
	})
}

// readySeeds: the documented requests on every fixture, JSON, HEAD and
// POST; also committed under testdata/fuzz/FuzzReadyHandler. which picks
// the fixture (which % 5) and the method (which / 5 % 3: GET, HEAD, POST).
var readySeeds = func() []struct {
	target, accept string
	which          uint8
} {
	type seed = struct {
		target, accept string
		which          uint8
	}
	var out []seed
	for _, target := range []string{
		"/ready", "/ready?verbose", "/ready?exclude=vcenter", "/ready?exclude=vcenter&verbose",
		"/ready?exclude=links&exclude=vcenter&exclude=default-route", "/ready?exclude=nosuch&verbose",
		"/ready/links", "/ready/links?verbose", "/ready/vcenter", "/ready/vcenter?exclude=vcenter", "/ready/nosuch",
		"/ready/", "/ready/%2e%2e/events", "/ready?wait=soon", "/ready?wait=NaN", "/ready?wait=1e308",
		"/ready?wait=9999999h", "/ready?wait=-1s", "/ready?wait=5ms", "/ready?wait=0.003&exclude=vcenter",
		"/ready?wait=1h&exclude=vcenter&verbose", "/ready?wait=&exclude=&verbose=0",
		"/ready?exclude=%22%0A%5B%2B%5Dfake+ok", "/ready?a=1;b=2", "/events", "/events?wait=1s", "/elsewhere", "/", "*",
		"http://linkgate.example/ready?verbose",
	} {
		for which := range uint8(5) {
			out = append(out, seed{target, "", which})
		}
	}
	return append(out,
		seed{"/ready", "application/json", 1},
		seed{"/ready?exclude=vcenter&exclude=nosuch", "text/plain;q=0.5, application/json", 2},
		seed{"/ready/vcenter", "APPLICATION/JSON; charset=utf-8", 0},
		seed{"/ready/vcenter?exclude=vcenter", "application/json", 1},
		seed{"/ready?wait=2ms", "application/json", 4},
		seed{"/ready", "", 5},  // HEAD
		seed{"/events", "", 5}, // HEAD
		seed{"/ready", "", 11}) // POST
}()

// fuzzMaxWait is the long-poll cap of the fixtures' handlers; fuzzSlack
// bounds how late a capped long-poll may answer.
const (
	fuzzMaxWait = 20 * time.Millisecond
	fuzzSlack   = 2 * time.Second
)

// readyFixture is a handler over a gate whose state does not change, and
// what that state is.
type readyFixture struct {
	name      string
	h         *Handler
	evaluated bool
	ready     bool            // the gate's own verdict
	ok        map[string]bool // each check's result
	reasons   map[string]string
	stableFor time.Duration
	saturated bool // every long-poll slot is taken
}

// newReadyFixtures starts the gates once per fuzzing process and stops
// them at cleanup.
func newReadyFixtures(f *testing.F) []*readyFixture {
	ok := func(name string) Check { return NewCheck(name, func(context.Context, *Input) error { return nil }) }
	failing := func(name, reason string) Check {
		return NewCheck(name, func(context.Context, *Input) error { return errors.New(reason) })
	}
	reason := "transient: refused: connection refused"
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	f.Cleanup(func() { cancel(); wg.Wait() })
	gate := func(stableFor time.Duration, run bool, checks ...Check) *Gate {
		g, err := NewGate(GateOptions{Snapshots: healthySnapshot(), Checks: checks, StableFor: stableFor})
		if err != nil {
			f.Fatal(err)
		}
		if !run {
			return g
		}
		wg.Go(func() {
			if err := g.Run(ctx); err != nil {
				f.Errorf("gate: %v", err)
			}
		})
		deadline := time.After(hang)
		for st := g.State(); st.Version == 0; st = g.State() {
			select {
			case <-st.Changed():
			case <-deadline:
				f.Fatal("the gate never evaluated")
			}
		}
		return g
	}
	handler := func(g *Gate, maxWaiters int) *Handler {
		h := NewHandler(g, HandlerOptions{MaxWait: fuzzMaxWait, MaxWaiters: maxWaiters})
		f.Cleanup(h.Close)
		return h
	}
	all := map[string]bool{CheckLinks: true, CheckDefaultRoute: true, CheckVCenter: true}
	oneFails := map[string]bool{CheckLinks: true, CheckDefaultRoute: true, CheckVCenter: false}
	reasons := map[string]string{CheckVCenter: reason}

	readyGate := gate(0, true, ok(CheckLinks), ok(CheckDefaultRoute), ok(CheckVCenter))
	failingGate := gate(0, true, ok(CheckLinks), ok(CheckDefaultRoute), failing(CheckVCenter, reason))
	dampingGate := gate(time.Hour, true, ok(CheckLinks), ok(CheckDefaultRoute), ok(CheckVCenter))
	freshGate := gate(0, false, ok(CheckLinks), failing(CheckVCenter, reason))
	saturated := handler(failingGate, 1)
	saturated.waiters <- struct{}{} // the one slot, held for good

	return []*readyFixture{
		{name: "ready", h: handler(readyGate, 0), evaluated: true, ready: true, ok: all},
		{name: "failing", h: handler(failingGate, 0), evaluated: true, ok: oneFails, reasons: reasons},
		{name: "damping", h: handler(dampingGate, 0), evaluated: true, ok: all, stableFor: time.Hour},
		{name: "not evaluated", h: handler(freshGate, 0), ok: map[string]bool{CheckLinks: true, CheckVCenter: false}},
		{name: "saturated", h: saturated, evaluated: true, ok: oneFails, reasons: reasons, saturated: true},
	}
}

// validRequestTarget: what an HTTP/1.1 request line can carry (no space,
// no control character).
func validRequestTarget(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// validHeaderValue: what net/http accepts in a header value.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func (fx *readyFixture) serve(t *testing.T, method, target string, u *url.URL, accept string) {
	names := fx.h.gate.CheckNames()
	ctx, cancel := context.WithTimeout(context.Background(), fuzzMaxWait+hang)
	defer cancel()
	if u.Path == "/events" && method != http.MethodPost {
		// A client that has left: the stream sends the current state and
		// ends instead of streaming until the deadline.
		cancel()
	}
	req := (&http.Request{
		Method: method, URL: u, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Host: "linkgate.test",
	}).WithContext(ctx)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	rec := httptest.NewRecorder()
	start := time.Now()
	fx.h.ServeHTTP(rec, req)
	elapsed := time.Since(start)
	code, body := rec.Code, rec.Body.String()
	where := fmt.Sprintf("%s %s %q (Accept %q) on the %s gate: %d after %v\n%s", method, target, u.Path, accept, fx.name, code, elapsed, body)

	if u.Path != "/events" && ctx.Err() != nil {
		t.Fatalf("%s\nstill open when the request's deadline (cap %v + %v) passed", where, fuzzMaxWait, hang)
	}
	if !slices.Contains([]int{200, 400, 404, 405, 429, 503}, code) {
		t.Fatalf("%s\nstatus not one the handler documents", where)
	}
	if code != 200 && body == "" {
		t.Fatalf("%s\nan answer other than 200 without a body", where)
	}

	want := func(c int, why string) {
		t.Helper()
		if code != c {
			t.Fatalf("%s\nwant %d: %s", where, c, why)
		}
	}
	if method != http.MethodGet && method != http.MethodHead {
		want(405, "only GET and HEAD")
		if rec.Header().Get("Allow") != "GET, HEAD" {
			t.Fatalf("%s\n405 without Allow: GET, HEAD", where)
		}
		return
	}
	single := ""
	switch p := u.Path; {
	case p == "/events":
		want(200, "an event stream")
		fx.checkFirstEvent(t, where, rec)
		return
	case p == "/ready" || p == "/ready/":
	case strings.HasPrefix(p, "/ready/"):
		single = strings.TrimPrefix(p, "/ready/")
		if !slices.Contains(names, single) {
			want(404, "no such check")
			if body != fmt.Sprintf("no such check: %q\n", single) {
				t.Fatalf("%s\n404 body does not name the check, quoted", where)
			}
			return
		}
	default:
		want(404, "not a path of the handler")
		return
	}

	q := u.Query()
	wait, err := parseWait(q.Get("wait"), fuzzMaxWait) // FuzzParseWait checks parseWait
	if err != nil {
		want(400, "a bad wait")
		if body != err.Error()+"\n" {
			t.Fatalf("%s\n400 body is not the wait error", where)
		}
		return
	}
	excluded := map[string]bool{}
	var unknown []string
	for _, n := range q["exclude"] {
		if slices.Contains(names, n) {
			excluded[n] = true
		} else {
			unknown = append(unknown, n)
		}
	}
	ready := fx.expectReady(single, excluded)
	switch {
	case ready:
		want(200, "the judged checks hold")
	case wait > 0 && fx.saturated:
		want(429, "a long-poll without a free slot")
		if rec.Header().Get("Retry-After") == "" {
			t.Fatalf("%s\n429 without Retry-After", where)
		}
		return
	default:
		want(503, "a judged check fails, damping runs or nothing is evaluated yet")
	}
	if wait > 0 && !ready && elapsed < wait {
		t.Fatalf("%s\nanswered before the %v wait ended on a gate that does not change", where, wait)
	}
	if elapsed > fuzzMaxWait+fuzzSlack {
		t.Fatalf("%s\nanswered after %v, beyond the %v cap + %v", where, elapsed, fuzzMaxWait, fuzzSlack)
	}
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("%s\nno Cache-Control: no-store", where)
	}
	judged := names
	if single != "" {
		judged = []string{single}
	}
	if ct := rec.Header().Get("Content-Type"); ct == "application/json" {
		if !strings.Contains(strings.ToLower(accept), "json") {
			t.Fatalf("%s\nJSON that Accept did not ask for", where)
		}
		fx.checkJSON(t, where, body, ready, judged, single, excluded, unknown)
		return
	} else if strings.EqualFold(strings.TrimSpace(accept), "application/json") {
		t.Fatalf("%s\nAccept: application/json answered with %q", where, ct)
	}
	_, verbose := q["verbose"]
	fx.checkText(t, where, body, ready, verbose, judged, single, excluded, unknown)
}

// expectReady is the verdict from the fixture's fixed state: one check's
// own result; the gate's verdict; or, with exclusions, every other check
// holding for stable-for (their results are as old as the gate's first
// evaluation, far less than the damping fixture's hour; with every check
// excluded nothing is left to damp).
func (fx *readyFixture) expectReady(single string, excluded map[string]bool) bool {
	if !fx.evaluated {
		return false
	}
	if single != "" {
		return fx.ok[single]
	}
	if len(excluded) == 0 {
		return fx.ready
	}
	judged := 0
	for name, ok := range fx.ok {
		if excluded[name] {
			continue
		}
		if !ok {
			return false
		}
		judged++
	}
	return judged == 0 || fx.stableFor == 0
}

func (fx *readyFixture) checkText(t *testing.T, where, body string, ready, verbose bool, judged []string, single string, excluded map[string]bool, unknown []string) {
	t.Helper()
	if ready && !verbose {
		if body != "ok" {
			t.Fatalf("%s\nready, not verbose: want \"ok\"", where)
		}
		return
	}
	end := "readyz check failed\n"
	if ready {
		end = "readyz check passed\n"
	}
	if !strings.HasSuffix(body, end) {
		t.Fatalf("%s\nwant the last line %q", where, end)
	}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	for _, name := range judged {
		var line string
		switch {
		case !fx.evaluated && single == "":
			continue // the gate lists no checks yet
		case single == "" && excluded[name]:
			line = "[+]" + name + " excluded: ok"
		case !fx.evaluated:
			line = "[-]" + name + " failed: not evaluated yet"
		case fx.ok[name]:
			line = "[+]" + name + " ok"
		default:
			line = "[-]" + name + " failed: " + fx.reasons[name]
		}
		if !slices.Contains(lines, line) {
			t.Fatalf("%s\nno line %q", where, line)
		}
	}
	if !fx.evaluated && single == "" && !slices.Contains(lines, "[-]gate failed: checks not evaluated yet") {
		t.Fatalf("%s\nno line for a gate not evaluated yet", where)
	}
	if len(unknown) > 0 && single == "" && !slices.Contains(lines, excludeWarning(unknown)) {
		t.Fatalf("%s\nno warning for the unknown exclusions %q", where, unknown)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "[+]") && !strings.HasPrefix(l, "[-]") && !strings.HasPrefix(l, "warn: ") && l != strings.TrimSuffix(end, "\n") {
			t.Fatalf("%s\nline %q is none of [+] [-] warn: or the verdict", where, l)
		}
	}
}

func (fx *readyFixture) checkJSON(t *testing.T, where, body string, ready bool, judged []string, single string, excluded map[string]bool, unknown []string) {
	t.Helper()
	var doc struct {
		Ready  bool `json:"ready"`
		Checks []struct {
			Name     string `json:"name"`
			OK       bool   `json:"ok"`
			Excluded bool   `json:"excluded"`
		} `json:"checks"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("%s\nJSON: %v", where, err)
	}
	if doc.Ready != ready {
		t.Fatalf("%s\n\"ready\": %v with that status", where, doc.Ready)
	}
	if !fx.evaluated && single == "" {
		judged = nil // the gate lists no checks yet
	}
	if len(doc.Checks) != len(judged) {
		t.Fatalf("%s\n%d checks, want %v", where, len(doc.Checks), judged)
	}
	for i, c := range doc.Checks {
		if c.Name != judged[i] || c.OK != (fx.evaluated && fx.ok[c.Name]) || c.Excluded != (single == "" && excluded[c.Name]) {
			t.Fatalf("%s\ncheck %d: %+v", where, i, c)
		}
	}
	if (len(unknown) > 0) != (len(doc.Warnings) > 0) {
		t.Fatalf("%s\nwarnings %q for unknown exclusions %q", where, doc.Warnings, unknown)
	}
}

// checkFirstEvent: /events starts with the current state.
func (fx *readyFixture) checkFirstEvent(t *testing.T, where string, rec *httptest.ResponseRecorder) {
	t.Helper()
	st := fx.h.gate.State()
	name := "not_ready"
	if st.Ready {
		name = "ready"
	}
	head := fmt.Sprintf("id: %d\nevent: %s\ndata: {", st.Version, name)
	if rec.Header().Get("Content-Type") != "text/event-stream" || !strings.HasPrefix(rec.Body.String(), head) {
		t.Fatalf("%s\nwant a stream starting %q", where, head)
	}
}
