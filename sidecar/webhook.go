package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkgate/linkgate/internal/redact"
)

// WebhookFormat selects the JSON shape of a webhook.
type WebhookFormat string

// Webhook formats. Generic is hyper2kvm's notification shape.
const (
	WebhookGeneric WebhookFormat = "generic"
	WebhookSlack   WebhookFormat = "slack"
	WebhookDiscord WebhookFormat = "discord"
)

// Webhook is one notification endpoint. Its URL may carry a token; it is
// only ever logged as scheme://host.
type Webhook struct {
	URL    string
	Format WebhookFormat // default generic
}

// WebhookOptions configure Webhooks.
type WebhookOptions struct {
	Hooks []Webhook
	// Client sends the requests (default: a plain http.Client).
	Client *http.Client
	// Timeout bounds each request (default 10s).
	Timeout time.Duration
	// QueueSize bounds each hook's queue of undelivered transitions; when
	// full the oldest is dropped and counted (default 16).
	QueueSize int
	// MaxAttempts per notification, first try included (default 5).
	MaxAttempts int
	// Backoff is the first retry delay, doubling up to MaxBackoff
	// (defaults 1s and 1m).
	Backoff, MaxBackoff time.Duration
	// Host names this machine in the payload (default os.Hostname()).
	Host   string
	Logger *slog.Logger
}

// Delivery results for linkgate_webhook_deliveries_total.
const (
	DeliverySuccess  = "success"  // 2xx
	DeliveryRejected = "rejected" // 4xx other than 429: not retried
	DeliveryFailed   = "failed"   // 5xx, 429 or transport errors after the last attempt
)

var deliveryResults = []string{DeliverySuccess, DeliveryRejected, DeliveryFailed}

// Webhooks POSTs a JSON document to every hook on each gate transition
// (not on the state the gate starts in). Each hook has its own worker and
// bounded queue, so a slow endpoint delays neither the gate nor the other
// hooks. 5xx, 429 and connection errors are retried with exponential
// backoff; other 4xx answers are not. Pending notifications are dropped
// at shutdown.
type Webhooks struct {
	opts  WebhookOptions
	log   *slog.Logger
	hooks []*hookQueue
	// from: transitions after this one are notified. Run moves it along:
	// each State points to the next, so holding an old one would keep
	// every state published since in memory.
	from *State

	deliveries map[string]*atomic.Uint64
	retries    atomic.Uint64
	dropped    atomic.Uint64
	running    atomic.Bool

	// onDelivered and onDropped, if set, are called after each
	// notification's final result and each drop (tests).
	onDelivered func(result string)
	onDropped   func()
}

type hookQueue struct {
	hook  Webhook
	label string // scheme://host, safe to log
	*stateQueue
}

// NewWebhooks validates the hooks and returns Webhooks that will notify
// every transition of g after this call; start it with Run.
func NewWebhooks(g *Gate, opts WebhookOptions) (*Webhooks, error) {
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	deliveryDefaults(&opts.QueueSize, &opts.MaxAttempts, &opts.Backoff, &opts.MaxBackoff)
	if opts.Host == "" {
		opts.Host, _ = os.Hostname()
	}
	w := &Webhooks{opts: opts, log: opts.Logger, from: g.State(), deliveries: map[string]*atomic.Uint64{}}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range deliveryResults {
		w.deliveries[r] = new(atomic.Uint64)
	}
	for i, h := range opts.Hooks {
		u, err := url.Parse(h.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("webhook %d (%s): want an http(s) URL", i+1, redact.Origin(h.URL))
		}
		switch h.Format {
		case "":
			h.Format = WebhookGeneric
		case WebhookGeneric, WebhookSlack, WebhookDiscord:
		default:
			return nil, fmt.Errorf("webhook %d (%s): format %q: want generic, slack or discord", i+1, redact.Origin(h.URL), h.Format)
		}
		w.hooks = append(w.hooks, &hookQueue{hook: h, label: redact.Origin(h.URL), stateQueue: newStateQueue(opts.QueueSize)})
	}
	return w, nil
}

// Run follows the gate's transitions and delivers them until ctx ends; it
// returns after every worker has stopped.
func (w *Webhooks) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("webhooks: already running")
	}
	defer w.running.Store(false)
	var wg sync.WaitGroup
	for _, h := range w.hooks {
		wg.Go(func() { w.work(ctx, h) })
	}
	followTransitions(ctx, &w.from, w.enqueue)
	wg.Wait()
	// What was queued after a worker stopped will not be sent either.
	for _, h := range w.hooks {
		w.dropped.Add(uint64(h.clear()))
	}
	return nil
}

func (w *Webhooks) enqueue(st *State) {
	for _, h := range w.hooks {
		if h.push(st) {
			w.dropped.Add(1)
			w.log.Warn("webhook queue full; dropped the oldest notification", "webhook", h.label)
			if w.onDropped != nil {
				w.onDropped()
			}
		}
	}
}

func (w *Webhooks) work(ctx context.Context, h *hookQueue) {
	for {
		st := h.next(ctx)
		if st == nil {
			return
		}
		if ctx.Err() != nil {
			w.dropped.Add(uint64(1 + h.clear()))
			return
		}
		w.deliver(ctx, h, st)
	}
}

// deliver sends one notification with retries.
func (w *Webhooks) deliver(ctx context.Context, h *hookQueue, st *State) {
	body, err := webhookPayload(h.hook.Format, st, w.opts.Host)
	if err != nil {
		w.finish(h, DeliveryRejected, "cannot encode payload", "err", err)
		return
	}
	delay := w.opts.Backoff
	for attempt := 1; ; attempt++ {
		code, retryAfter, err := w.post(ctx, h, body)
		switch {
		case err == nil && code >= 200 && code < 300:
			w.finish(h, DeliverySuccess, "", "status", code, "attempts", attempt)
			return
		case err == nil && code >= 400 && code < 500 && code != http.StatusTooManyRequests:
			w.finish(h, DeliveryRejected, "webhook rejected the notification; not retrying", "status", code)
			return
		case ctx.Err() != nil:
			w.dropped.Add(1)
			return
		case attempt >= w.opts.MaxAttempts:
			w.finish(h, DeliveryFailed, "webhook delivery failed; giving up", "status", code, "err", err, "attempts", attempt)
			return
		}
		pause := delay
		if retryAfter > 0 {
			pause = min(retryAfter, w.opts.MaxBackoff)
		}
		w.retries.Add(1)
		w.log.Debug("webhook delivery failed; retrying", "webhook", h.label, "status", code, "err", err, "in", pause)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			w.dropped.Add(1)
			return
		case <-t.C:
		}
		delay = min(delay*2, w.opts.MaxBackoff)
	}
}

func (w *Webhooks) finish(h *hookQueue, result, msg string, attrs ...any) {
	w.deliveries[result].Add(1)
	if msg != "" {
		w.log.Warn(msg, append([]any{"webhook", h.label}, attrs...)...)
	}
	if w.onDelivered != nil {
		w.onDelivered(result)
	}
}

// post makes one attempt. Errors never carry the URL (it may hold a token).
func (w *Webhooks) post(ctx context.Context, h *hookQueue, body []byte) (int, time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, h.hook.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, redact.Error(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "linkgate")
	resp, err := w.opts.Client.Do(req)
	if err != nil {
		return 0, 0, redact.Error(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	var retryAfter time.Duration
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	return resp.StatusCode, retryAfter, nil
}

// notification is hyper2kvm's generic notification document.
type notification struct {
	Title     string              `json:"title"`
	Message   string              `json:"message"`
	Level     string              `json:"level"`
	Details   notificationDetails `json:"details"`
	Source    string              `json:"source"`
	Timestamp string              `json:"timestamp"`
}

type notificationDetails struct {
	Ready   bool              `json:"ready"`
	Host    string            `json:"host"`
	Checks  map[string]string `json:"checks"`  // name -> ok | failed
	Reasons map[string]string `json:"reasons"` // failing checks only
}

// Notification levels and their Slack / Discord colours.
const (
	levelInfo    = "info"
	levelWarning = "warning"
	levelError   = "error"
)

func describeTransition(st *State, host string) notification {
	n := notification{
		Source:    "linkgate",
		Timestamp: st.Since.UTC().Format(time.RFC3339),
		Details:   notificationDetails{Ready: st.Ready, Host: host, Checks: map[string]string{}, Reasons: map[string]string{}},
	}
	for _, c := range st.Checks {
		if c.OK {
			n.Details.Checks[c.Name] = "ok"
		} else {
			n.Details.Checks[c.Name] = "failed"
			n.Details.Reasons[c.Name] = c.Reason
		}
	}
	if st.Ready {
		n.Title = "linkgate ready on " + host
		n.Message = "All readiness checks pass; migrations may start."
		n.Level = levelInfo
		return n
	}
	n.Title = "linkgate not ready on " + host
	n.Message = st.Summary()
	n.Level = levelWarning
	if st.Permanent() {
		n.Level = levelError
	}
	return n
}

func webhookPayload(format WebhookFormat, st *State, host string) ([]byte, error) {
	n := describeTransition(st, host)
	switch format {
	case WebhookSlack:
		fields := make([]map[string]any, 0, len(st.Checks))
		for _, c := range st.Checks {
			fields = append(fields, map[string]any{"title": c.Name, "value": checkLine(c), "short": false})
		}
		color := map[string]string{levelInfo: "#36a64f", levelWarning: "#ff9900", levelError: "#ff0000"}[n.Level]
		return json.Marshal(map[string]any{
			"text": n.Title,
			"attachments": []map[string]any{{
				"color": color, "title": n.Title, "text": n.Message, "fields": fields,
				"footer": "linkgate", "ts": st.Since.Unix(),
			}},
		})
	case WebhookDiscord:
		fields := make([]map[string]any, 0, len(st.Checks))
		for _, c := range st.Checks {
			fields = append(fields, map[string]any{"name": c.Name, "value": truncate(checkLine(c), 1024), "inline": false})
		}
		color := map[string]int{levelInfo: 3066993, levelWarning: 16753920, levelError: 15158332}[n.Level]
		return json.Marshal(map[string]any{
			"content": n.Title,
			"embeds": []map[string]any{{
				"title": n.Title, "description": truncate(n.Message, 4096), "color": color, "fields": fields,
				"footer": map[string]string{"text": "linkgate"}, "timestamp": n.Timestamp,
			}},
		})
	}
	return json.Marshal(n)
}

func checkLine(c CheckStatus) string {
	if c.OK {
		return "ok"
	}
	return "failed: " + c.Reason
}

// truncate shortens s to at most n bytes without splitting a rune.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-3], "") + "..."
}
