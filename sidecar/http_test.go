package sidecar

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkgate/linkgate/collector"
	"go.uber.org/goleak"
)

// vcenterGate runs a gate over a healthy static snapshot and a fake vCenter.
func vcenterGate(t *testing.T, opts GateOptions, vc *fakeVCenter) *Gate {
	t.Helper()
	opts.Snapshots = healthySnapshot()
	opts.VCenter = vc
	opts.Checks = []Check{LinksCheck(), VCenterCheck(0)}
	return startGate(t, opts)
}

func TestReadyEndpoints(t *testing.T) {
	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{}, vc)
	h := NewHandler(g, HandlerOptions{})
	t.Cleanup(h.Close)
	mux := http.NewServeMux()
	h.Register(mux)
	waitState(t, g, "vcenter failing", checkFails(CheckVCenter, "refused"))

	failed := "[+]links ok\n[-]vcenter failed: transient: refused: connection refused\nreadyz check failed\n"
	for _, tc := range []struct {
		target string
		code   int
		body   string
	}{
		{"/ready", 503, failed},
		{"/ready?verbose", 503, failed},
		{"/ready?exclude=vcenter", 200, "ok"},
		{"/ready?exclude=vcenter&verbose", 200, "[+]links ok\n[+]vcenter excluded: ok\nreadyz check passed\n"},
		{"/ready?exclude=links&exclude=vcenter", 200, "ok"},
		{"/ready?exclude=nosuch&verbose", 503, "[+]links ok\n[-]vcenter failed: transient: refused: connection refused\n" +
			"warn: some checks cannot be excluded: no matches for \"nosuch\"\nreadyz check failed\n"},
		{"/ready/links", 200, "ok"},
		{"/ready/links?verbose", 200, "[+]links ok\nreadyz check passed\n"},
		{"/ready/vcenter", 503, "[-]vcenter failed: transient: refused: connection refused\nreadyz check failed\n"},
		{"/ready/nosuch", 404, "no such check: \"nosuch\"\n"},
		{"/ready?wait=soon", 400, "wait \"soon\": not a duration or a number; want a duration like 30s or a number of seconds, 0 or more (a wait longer than 5m0s is cut to 5m0s)\n"},
		{"/ready?wait=NaN", 400, "wait \"NaN\": not a finite number; want a duration like 30s or a number of seconds, 0 or more (a wait longer than 5m0s is cut to 5m0s)\n"},
		{"/elsewhere", 404, "404 page not found\n"},
	} {
		code, body := get(t, mux, tc.target)
		if code != tc.code || body != tc.body {
			t.Errorf("GET %s: %d %q, want %d %q", tc.target, code, body, tc.code, tc.body)
		}
	}

	code, body := get(t, h, "/ready", "Accept", "text/plain;q=0.5, application/json")
	var doc struct {
		Ready  bool      `json:"ready"`
		Since  time.Time `json:"since"`
		Checks []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Reason string `json:"reason"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("JSON: %v: %s", err, body)
	}
	if code != 503 || doc.Ready || doc.Since.IsZero() || len(doc.Checks) != 2 ||
		doc.Checks[0].Name != "links" || !doc.Checks[0].OK ||
		doc.Checks[1].Name != "vcenter" || doc.Checks[1].OK || doc.Checks[1].Reason != "transient: refused: connection refused" {
		t.Errorf("JSON: %d %+v", code, doc)
	}

	req := httptest.NewRequest(http.MethodPost, "/ready", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
}

func TestExcludeKeepsDamping(t *testing.T) {
	clk := newFakeClock()
	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{StableFor: 10 * time.Second, Clock: clk}, vc)
	h := NewHandler(g, HandlerOptions{})
	waiting := make(chan struct{})
	h.onWait = func() { close(waiting) }
	srv := serve(t, h)
	t0 := clk.Now()
	waitState(t, g, "evaluated", isNotReady)

	code, body := get(t, h, "/ready?exclude=vcenter&verbose")
	if code != 503 || !strings.Contains(body, "[-]stable-for failed: checks must hold for 10s, ready at 2030-01-02T03:04:15Z\n") {
		t.Errorf("excluded but damping: %d %q", code, body)
	}

	// A long-poll with the exclusion wakes at its own damping deadline.
	resp := make(chan int, 1)
	go func() { resp <- fetch(t, srv, "/ready?exclude=vcenter&wait=1h") }()
	recv(t, waiting, "long-poll parked")
	clk.WaitTimer(t, t0.Add(10*time.Second), hang)
	clk.Advance(10 * time.Second)
	if code := recv(t, resp, "long-poll answer"); code != 200 {
		t.Errorf("long-poll with exclusion after damping: %d", code)
	}
	if code, _ := get(t, h, "/ready"); code != 503 {
		t.Errorf("gate without exclusion: %d, want 503", code)
	}
}

func TestParseWait(t *testing.T) {
	const limit = 5 * time.Minute
	want := func(why string) string {
		return why + "; want a duration like 30s or a number of seconds, 0 or more (a wait longer than 5m0s is cut to 5m0s)"
	}
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"", 0, ""},
		{"0", 0, ""},
		{"-0", 0, ""},
		{"30s", 30 * time.Second, ""},
		{"1m30s", 90 * time.Second, ""},
		{"+2s", 2 * time.Second, ""},
		{"30", 30 * time.Second, ""},
		{"1.5", 1500 * time.Millisecond, ""},
		{"0.25", 250 * time.Millisecond, ""},
		{"300", limit, ""},
		// Longer than the limit, however long, is the limit: a client
		// asks for its own timeout.
		{"1h", limit, ""},
		{"301", limit, ""},
		{"1e308", limit, ""},
		{"1e400", limit, ""},      // beyond float64: out of range, still a number
		{"9999999h", limit, ""},   // beyond time.Duration
		{"2562048h1s", limit, ""}, // likewise
		{"-1s", 0, `wait "-1s": ` + want("negative")},
		{"-1", 0, `wait "-1": ` + want("negative")},
		{"-1e308", 0, `wait "-1e308": ` + want("negative")},
		{"-1e400", 0, `wait "-1e400": ` + want("negative")},
		{"-9999999h", 0, `wait "-9999999h": ` + want("negative")},
		{"NaN", 0, `wait "NaN": ` + want("not a finite number")},
		{"nan", 0, `wait "nan": ` + want("not a finite number")},
		{"Inf", 0, `wait "Inf": ` + want("not a finite number")},
		{"+Inf", 0, `wait "+Inf": ` + want("not a finite number")},
		{"-Inf", 0, `wait "-Inf": ` + want("not a finite number")},
		{"infinity", 0, `wait "infinity": ` + want("not a finite number")},
		{"soon", 0, `wait "soon": ` + want("not a duration or a number")},
		{"30 s", 0, `wait "30 s": ` + want("not a duration or a number")},
		{"5ss", 0, `wait "5ss": ` + want("not a duration or a number")},
		{"s", 0, `wait "s": ` + want("not a duration or a number")},
		{"1e3s", 0, `wait "1e3s": ` + want("not a duration or a number")},
	} {
		got, err := parseWait(tc.in, limit)
		errText := ""
		if err != nil {
			errText = err.Error()
		}
		if got != tc.want || errText != tc.err {
			t.Errorf("parseWait(%q) = %v, %q; want %v, %q", tc.in, got, errText, tc.want, tc.err)
		}
	}
}

// TestLongPollCappedWait: a wait beyond MaxWait, even one too long to
// represent, long-polls for MaxWait and answers 503.
func TestLongPollCappedWait(t *testing.T) {
	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{}, vc)
	h := NewHandler(g, HandlerOptions{MaxWait: 20 * time.Millisecond})
	waiting := make(chan struct{}, 1)
	h.onWait = func() { waiting <- struct{}{} }
	srv := serve(t, h)
	waitState(t, g, "not ready", isNotReady)
	for _, wait := range []string{"1e308", "9999999h"} {
		if code := fetch(t, srv, "/ready?wait="+wait); code != 503 {
			t.Errorf("wait=%s: %d, want 503 after MaxWait", wait, code)
		}
		recv(t, waiting, "the long-poll parked")
	}
}

func TestLongPoll(t *testing.T) {
	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{}, vc)
	h := NewHandler(g, HandlerOptions{MaxWaiters: 1})
	waiting := make(chan struct{}, 1)
	h.onWait = func() { waiting <- struct{}{} }
	srv := serve(t, h)
	waitState(t, g, "not ready", isNotReady)

	// The wait ends with 503.
	if code := fetch(t, srv, "/ready?wait=20ms"); code != 503 {
		t.Errorf("short wait: %d, want 503", code)
	}
	recv(t, waiting, "the short long-poll parked")

	resp := make(chan int, 1)
	go func() { resp <- fetch(t, srv, "/ready?wait=1m") }()
	recv(t, waiting, "long-poll parked")

	// Only one waiter fits.
	if code := fetch(t, srv, "/ready?wait=1m"); code != http.StatusTooManyRequests {
		t.Errorf("second waiter: %d, want 429", code)
	}

	vc.set(vcUp(time.Now()))
	if code := recv(t, resp, "waiter woken by the transition"); code != 200 {
		t.Errorf("waiter after transition: %d, want 200", code)
	}

	// Shutdown answers a pending waiter with 503.
	vc.set(vcRefused())
	waitState(t, g, "not ready", isNotReady)
	go func() { resp <- fetch(t, srv, "/ready?wait=1m") }()
	recv(t, waiting, "long-poll parked")
	h.Close()
	if code := recv(t, resp, "waiter released by Close"); code != 503 {
		t.Errorf("waiter at shutdown: %d, want 503", code)
	}
}

func fetch(t *testing.T, srv *httptest.Server, path string) int {
	r, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Error(err)
		return 0
	}
	_, _ = io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return r.StatusCode
}

type sseEvent struct{ id, event, data string }

// readEvents parses an SSE stream until EOF, then closes out.
func readEvents(body io.Reader, out chan<- sseEvent, heartbeats chan<- struct{}) {
	defer close(out)
	sc := bufio.NewScanner(body)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.event != "" {
				out <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ": heartbeat"):
			select {
			case heartbeats <- struct{}{}:
			default:
			}
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
}

func TestEventStream(t *testing.T) {
	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{}, vc)
	h := NewHandler(g, HandlerOptions{MaxSubscribers: 1, Heartbeat: 5 * time.Millisecond})
	srv := serve(t, h)
	waitState(t, g, "not ready", isNotReady)

	resp, err := srv.Client().Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, ct)
	}
	events := make(chan sseEvent)
	heartbeats := make(chan struct{}, 1)
	go readEvents(resp.Body, events, heartbeats)
	next := func() sseEvent {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("stream ended early")
			}
			return ev
		case <-time.After(hang):
			t.Fatal("no event")
		}
		return sseEvent{}
	}

	if ev := next(); ev.event != "not_ready" || !strings.Contains(ev.data, `"reason":"transient: refused: connection refused"`) {
		t.Errorf("initial event: %+v", ev)
	}
	if code := fetch(t, srv, "/events"); code != http.StatusTooManyRequests {
		t.Errorf("second subscriber: %d, want 429", code)
	}
	vc.set(vcUp(time.Now()))
	ev := next()
	var doc struct {
		Ready   bool   `json:"ready"`
		Version uint64 `json:"version"`
		Checks  []any  `json:"checks"`
	}
	if err := json.Unmarshal([]byte(ev.data), &doc); ev.event != "ready" || err != nil || !doc.Ready || len(doc.Checks) != 2 || ev.id == "" {
		t.Errorf("ready event: %+v (%v)", ev, err)
	}
	vc.set(vcRefused())
	if ev := next(); ev.event != "not_ready" {
		t.Errorf("third event: %+v", ev)
	}
	select {
	case <-heartbeats:
	case <-time.After(hang):
		t.Error("no heartbeat comment")
	}
	h.Close()
	select {
	case _, ok := <-events:
		if ok {
			t.Error("event after Close")
		}
	case <-time.After(hang):
		t.Fatal("stream did not end on Close")
	}
}

// TestGracefulShutdown starts every long-running part, with a waiter and
// a stream open, then shuts down and checks nothing is left running.
func TestGracefulShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(context.Background())
	vc := newFakeVCenter(vcRefused())
	g, err := NewGate(GateOptions{Snapshots: healthySnapshot(), VCenter: vc, Checks: []Check{LinksCheck(), VCenterCheck(0)}})
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := NewWebhooks(g, WebhookOptions{Hooks: []Webhook{{URL: "http://127.0.0.1:1/hook"}}, Backoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(g, HandlerOptions{})
	waiting := make(chan struct{})
	h.onWait = func() { close(waiting) }
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { _ = g.Run(ctx) })
	wg.Go(func() { _ = hooks.Run(ctx) })
	waitState(t, g, "not ready", isNotReady)
	vc.set(vcUp(time.Now())) // a transition for the webhook to retry forever
	waitState(t, g, "ready", isReady)
	vc.set(vcRefused())
	waitState(t, g, "not ready", isNotReady)

	code := make(chan int, 1)
	go func() { code <- fetch(t, srv, "/ready?wait=1h") }()
	recv(t, waiting, "long-poll parked")
	stream, err := srv.Client().Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}

	cancel()
	h.Close()
	if c := recv(t, code, "waiter released"); c != 503 {
		t.Errorf("waiter at shutdown: %d", c)
	}
	_, _ = io.Copy(io.Discard, stream.Body) // ends because the handler returned
	stream.Body.Close()
	wg.Wait()
	srv.Close()
}

// TestReadyNeverPredatesSnapshot: the gate evaluates a snapshot a moment
// after the collector publishes it. A /ready that arrives in that moment
// waits for the evaluation instead of answering from the state before
// (ready with the required link already seen down), and one that cannot
// get it within maxEvalLag is not ready, saying why.
func TestReadyNeverPredatesSnapshot(t *testing.T) {
	a, b := pair(t)
	col := startCollector(t, a, "va")
	release := make(chan struct{}, 100)
	var hold atomic.Bool
	slow := NewCheck("slow", func(ctx context.Context, _ *Input) error {
		if hold.Load() {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	})
	g := startGate(t, GateOptions{Snapshots: col, Checks: []Check{LinksCheck(), slow}})
	waitState(t, g, "ready", isReady)
	h := NewHandler(g, HandlerOptions{})
	t.Cleanup(h.Close)

	hold.Store(true)
	b.IP(t, "link", "set", "vb", "down") // va loses carrier
	waitSnapshot(t, col, "va down", func(s *collector.Snapshot) bool { l, ok := s.LinkByName("va"); return ok && !l.Up })
	// The collector has seen it; the gate is evaluating, held in slow.
	answered := make(chan int, 1)
	go func() {
		code, _ := get(t, h, "/ready")
		answered <- code
	}()
	// An /events subscriber's first event waits for the gate too.
	srv := httptest.NewServer(h)
	defer srv.Close()
	stream, err := srv.Client().Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	events := make(chan sseEvent, 4)
	go readEvents(stream.Body, events, nil)
	select {
	case code := <-answered:
		t.Fatalf("/ready answered %d before the gate evaluated the snapshot with va down", code)
	case ev := <-events:
		t.Fatalf("/events sent %+v before the gate evaluated the snapshot with va down", ev)
	case <-time.After(50 * time.Millisecond): // it waits; nothing is asserted on time
	}
	release <- struct{}{}
	if code := recv(t, answered, "/ready after the evaluation"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready after va went down: %d, want 503", code)
	}
	if ev := recv(t, events, "the first event after the evaluation"); ev.event != "not_ready" {
		t.Errorf("/events' first event after va went down: %+v, want not_ready", ev)
	}

	// An evaluation stuck beyond maxEvalLag: not ready, and why.
	b.IP(t, "link", "set", "vb", "up")
	waitSnapshot(t, col, "va up", func(s *collector.Snapshot) bool { l, ok := s.LinkByName("va"); return ok && l.Up })
	code, body := get(t, h, "/ready?verbose")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, lagReason) {
		t.Errorf("/ready with the gate stuck: %d\n%s\nwant 503 with %q", code, body, lagReason)
	}
	hold.Store(false)
	release <- struct{}{}
	waitState(t, g, "ready again", isReady)
	if code, _ := get(t, h, "/ready"); code != http.StatusOK {
		t.Errorf("/ready once the gate caught up: %d, want 200", code)
	}

	// A long-poll parked on a lagging gate wakes when the late evaluation
	// ends, even though it publishes no new State (an address changes
	// nothing the checks read). Found in review: it slept to its deadline.
	waiting := make(chan struct{}, 1)
	h.onWait = func() { waiting <- struct{}{} }
	hold.Store(true)
	a.IP(t, "addr", "add", "10.99.9.1/24", "dev", "va")
	waitSnapshot(t, col, "address added", func(s *collector.Snapshot) bool {
		l, ok := s.LinkByName("va")
		return ok && len(s.AddressesOf(l.Index)) > 0
	})
	polled := make(chan int, 1)
	go func() { code, _ := get(t, h, "/ready?wait=1h"); polled <- code }()
	recv(t, waiting, "long-poll parked on the lagging gate")
	hold.Store(false)
	release <- struct{}{}
	if code := recv(t, polled, "the long-poll's answer after the late evaluation"); code != http.StatusOK {
		t.Errorf("long-poll after the late evaluation: %d, want 200", code)
	}
}
