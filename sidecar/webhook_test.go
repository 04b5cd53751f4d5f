package sidecar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkgate/linkgate/probe"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// hookServer answers with the given status codes in turn (the last one
// repeats) and records request bodies.
type hookServer struct {
	*httptest.Server
	mu     sync.Mutex
	codes  []int
	bodies []string
}

func newHookServer(t *testing.T, codes ...int) *hookServer {
	hs := &hookServer{codes: codes}
	hs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hs.mu.Lock()
		code := hs.codes[min(len(hs.bodies), len(hs.codes)-1)]
		hs.bodies = append(hs.bodies, string(b))
		hs.mu.Unlock()
		if r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("content type %q", r.Header.Get("Content-Type"))
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(hs.Close)
	return hs
}

func (hs *hookServer) received() []string {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return append([]string(nil), hs.bodies...)
}

// startWebhooks runs webhooks on g's transitions until the test ends and
// returns a channel of delivery results.
func startWebhooks(t *testing.T, g *Gate, opts WebhookOptions) (*Webhooks, <-chan string) {
	t.Helper()
	if opts.Backoff == 0 {
		opts.Backoff = time.Millisecond
	}
	opts.Host = "migrate-01"
	w, err := NewWebhooks(g, opts)
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan string, 16)
	w.onDelivered = func(r string) { results <- r }
	run(t, w.Run)
	return w, results
}

func result(t *testing.T, results <-chan string) string {
	t.Helper()
	select {
	case r := <-results:
		return r
	case <-time.After(hang):
		t.Fatal("no webhook delivery result")
	}
	return ""
}

func TestWebhookRetriesServerErrors(t *testing.T) {
	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{}, vc)
	waitState(t, g, "not ready", isNotReady)
	hs := newHookServer(t, 500, 500, 200)
	w, results := startWebhooks(t, g, WebhookOptions{Hooks: []Webhook{{URL: hs.URL + "/notify"}}})

	vc.set(vcUp(time.Now()))
	st := waitState(t, g, "ready", isReady)
	if r := result(t, results); r != DeliverySuccess {
		t.Fatalf("result %s, want success", r)
	}
	bodies := hs.received()
	if len(bodies) != 3 {
		t.Fatalf("%d requests, want 3 (two 500s retried)", len(bodies))
	}
	var n struct {
		Title, Message, Level, Source, Timestamp string
		Details                                  struct {
			Ready   bool
			Host    string
			Checks  map[string]string
			Reasons map[string]string
		}
	}
	if err := json.Unmarshal([]byte(bodies[2]), &n); err != nil {
		t.Fatal(err)
	}
	if n.Title != "linkgate ready on migrate-01" || n.Level != "info" || n.Source != "linkgate" ||
		n.Timestamp != st.Since.UTC().Format(time.RFC3339) || !n.Details.Ready || n.Details.Host != "migrate-01" ||
		n.Details.Checks["links"] != "ok" || n.Details.Checks["vcenter"] != "ok" || len(n.Details.Reasons) != 0 {
		t.Errorf("notification: %s", bodies[2])
	}
	if err := testutil.CollectAndCompare(w, strings.NewReader(`
# HELP linkgate_webhook_deliveries_total Webhook notifications by final result: success (2xx), rejected (4xx, not retried), failed (gave up after retries).
# TYPE linkgate_webhook_deliveries_total counter
linkgate_webhook_deliveries_total{result="failed"} 0
linkgate_webhook_deliveries_total{result="rejected"} 0
linkgate_webhook_deliveries_total{result="success"} 1
# HELP linkgate_webhook_retries_total Webhook delivery attempts that were retried after a 5xx, 429 or connection error.
# TYPE linkgate_webhook_retries_total counter
linkgate_webhook_retries_total 2
`), "linkgate_webhook_deliveries_total", "linkgate_webhook_retries_total"); err != nil {
		t.Error(err)
	}

	// The way down: a warning naming the failing check.
	vc.set(probe.Status{Target: "vc.example", Class: "permanent", Kind: "auth", Reason: "incorrect user name or password", Permanent: true})
	waitState(t, g, "not ready", isNotReady)
	if r := result(t, results); r != DeliverySuccess {
		t.Fatalf("result %s", r)
	}
	bodies = hs.received()
	if err := json.Unmarshal([]byte(bodies[3]), &n); err != nil {
		t.Fatal(err)
	}
	if n.Level != "error" || n.Details.Ready || n.Details.Checks["vcenter"] != "failed" ||
		n.Details.Reasons["vcenter"] != "permanent: auth: incorrect user name or password" {
		t.Errorf("not-ready notification: %s", bodies[3])
	}
}

func TestWebhookNoRetryOnClientError(t *testing.T) {
	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{}, vc)
	waitState(t, g, "not ready", isNotReady)
	hs := newHookServer(t, 400, 200)
	_, results := startWebhooks(t, g, WebhookOptions{Hooks: []Webhook{{URL: hs.URL}}})
	vc.set(vcUp(time.Now()))
	if r := result(t, results); r != DeliveryRejected {
		t.Errorf("result %s, want rejected", r)
	}
	if n := len(hs.received()); n != 1 {
		t.Errorf("%d requests after a 400, want 1", n)
	}
}

func TestWebhookQueueDropsOldest(t *testing.T) {
	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{}, vc)
	waitState(t, g, "not ready", isNotReady)
	release := make(chan struct{})
	arrived := make(chan struct{})
	var mu sync.Mutex
	var levels []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n struct{ Level string }
		_ = json.NewDecoder(r.Body).Decode(&n)
		mu.Lock()
		levels = append(levels, n.Level)
		first := len(levels) == 1
		mu.Unlock()
		if first {
			close(arrived)
			<-release
		}
	}))
	t.Cleanup(srv.Close)
	defer close(release)
	dropped := make(chan struct{}, 4)
	w, err := NewWebhooks(g, WebhookOptions{Hooks: []Webhook{{URL: srv.URL}}, QueueSize: 1, Timeout: hang})
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan string, 4)
	w.onDelivered = func(r string) { results <- r }
	w.onDropped = func() { dropped <- struct{}{} }
	run(t, w.Run)

	vc.set(vcUp(time.Now())) // 1: in flight, held by the server
	waitState(t, g, "ready", isReady)
	<-arrived
	vc.set(vcRefused()) // 2: queued
	waitState(t, g, "not ready", isNotReady)
	vc.set(vcUp(time.Now())) // 3: pushes 2 out
	waitState(t, g, "ready", isReady)
	select {
	case <-dropped:
	case <-time.After(hang):
		t.Fatal("nothing dropped")
	}
	release <- struct{}{}
	result(t, results)
	result(t, results)
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(levels, ",") != "info,info" {
		t.Errorf("delivered levels %v, want the first and the newest (info,info)", levels)
	}
}

func TestWebhookURLNeverLogged(t *testing.T) {
	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{}, vc)
	waitState(t, g, "not ready", isNotReady)
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	secret := "http://127.0.0.1:1/services/T0000/B0000/XXXXsecretXXXX?token=abc"
	_, results := startWebhooks(t, g, WebhookOptions{Hooks: []Webhook{{URL: secret, Format: WebhookSlack}}, MaxAttempts: 2, Logger: logger})
	vc.set(vcUp(time.Now()))
	if r := result(t, results); r != DeliveryFailed {
		t.Errorf("result %s, want failed", r)
	}
	mu.Lock()
	out := logs.String()
	mu.Unlock()
	if strings.Contains(out, "secret") || strings.Contains(out, "token") || !strings.Contains(out, "webhook=http://127.0.0.1:1 ") {
		t.Errorf("logs:\n%s", out)
	}
	if _, err := NewWebhooks(g, WebhookOptions{Hooks: []Webhook{{URL: secret, Format: "teams"}}}); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("bad format error: %v", err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestWebhookFormats(t *testing.T) {
	st := &State{Version: 3, Since: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Checks: []CheckStatus{
		{CheckResult: CheckResult{Name: "links", OK: true}},
		{CheckResult: CheckResult{Name: "vcenter", Reason: "transient: refused: connection refused"}},
	}}
	b, err := webhookPayload(WebhookSlack, st, "migrate-01")
	if err != nil {
		t.Fatal(err)
	}
	var slack struct {
		Text        string
		Attachments []struct {
			Color, Title, Text string
			Fields             []struct {
				Title, Value string
			}
			TS int64
		}
	}
	if err := json.Unmarshal(b, &slack); err != nil || slack.Text != "linkgate not ready on migrate-01" || len(slack.Attachments) != 1 ||
		slack.Attachments[0].Color != "#ff9900" || len(slack.Attachments[0].Fields) != 2 ||
		slack.Attachments[0].Fields[1].Value != "failed: transient: refused: connection refused" || slack.Attachments[0].TS != st.Since.Unix() {
		t.Errorf("slack: %s (%v)", b, err)
	}

	b, err = webhookPayload(WebhookDiscord, st, "migrate-01")
	if err != nil {
		t.Fatal(err)
	}
	var discord struct {
		Content string
		Embeds  []struct {
			Title, Description, Timestamp string
			Color                         int
			Fields                        []struct{ Name, Value string }
		}
	}
	if err := json.Unmarshal(b, &discord); err != nil || discord.Content != "linkgate not ready on migrate-01" || len(discord.Embeds) != 1 ||
		discord.Embeds[0].Timestamp != "2030-01-02T03:04:05Z" || discord.Embeds[0].Fields[0].Name != "links" ||
		!strings.Contains(discord.Embeds[0].Description, "vcenter: transient: refused: connection refused") {
		t.Errorf("discord: %s (%v)", b, err)
	}
}

// TestWebhooksKeepNoOldStates: each State points to the next, so a
// notifier that held the state it started from would keep every state
// published since. The first one must become garbage.
func TestWebhooksKeepNoOldStates(t *testing.T) {
	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{}, vc)
	waitState(t, g, "not ready", isNotReady)
	collected := make(chan struct{})
	first := g.State()
	runtime.SetFinalizer(first, func(*State) { close(collected) })
	wh, err := NewWebhooks(g, WebhookOptions{Hooks: []Webhook{{URL: "http://127.0.0.1:9/hook", Format: WebhookGeneric}}})
	if err != nil {
		t.Fatal(err)
	}
	first = nil
	run(t, wh.Run)
	// Change the state a few times (the reason changes, no transition).
	for i := range 5 {
		vc.set(probe.Status{Target: "vc.example", Class: "transient", Kind: "refused", Reason: fmt.Sprint("connection refused ", i)})
		waitState(t, g, "reason changed", checkFails(CheckVCenter, fmt.Sprint("refused ", i)))
	}
	deadline := time.Now().Add(hang)
	for {
		runtime.GC()
		select {
		case <-collected:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the state the notifier started from is still reachable")
		}
	}
}
