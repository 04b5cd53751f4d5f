package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// longPollWait is the ?wait= of the long-polling clients.
const longPollWait = 5 * time.Second

// observer is every client of the sidecar: scrapers, long-pollers,
// /events subscribers and the quiet-point checks. It sees every byte
// linkgate sends back and keeps what the invariants need: counters as
// scraped, resource peaks, anomalies, and any secret in a body.
type observer struct {
	base    string
	client  *http.Client // requests with a deadline
	stream  *http.Client // /events: no overall deadline
	secrets []string

	mu        sync.Mutex
	leaks     []string
	anomalies []string // broken contracts seen by the clients (long-poll, /events, scrape status)

	// Scrapes are serialized so that counters are seen in order.
	scrapeMu      sync.Mutex
	scrapes       int
	counters      map[string]counterSeen
	decreases     []string
	pending       []decrease // of per-device series, judged at the next scrape
	peakRSS       float64
	maxGoroutines float64
	maxFDs        float64

	polls          atomic.Int64
	pollMaxLatency atomic.Int64 // of the answers that waited, in nanoseconds

	sseOpen    atomic.Int64
	sseStreams atomic.Int64
	sseEvents  atomic.Int64
	sseMu      sync.Mutex
	sseLast    map[int]bool // client → ready in the last event of its open stream
}

// decrease is a per-device counter that went back; whether the link was
// still there at the next scrape says which path it took (see recordLocked).
type decrease struct {
	text, device, mac string
}

type counterSeen struct {
	value  float64
	scrape int // the scrape that saw it
}

func newObserver(base string, secrets ...string) *observer {
	return &observer{
		base:     base,
		client:   &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		stream:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
		secrets:  secrets,
		counters: map[string]counterSeen{},
		sseLast:  map[int]bool{},
	}
}

// scan records any secret in text, received from where.
func (o *observer) scan(where, text string) {
	for i, s := range o.secrets {
		if strings.Contains(text, s) {
			o.mu.Lock()
			if len(o.leaks) < 20 {
				o.leaks = append(o.leaks, fmt.Sprintf("%s contains secret #%d", where, i))
			}
			o.mu.Unlock()
		}
	}
}

func (o *observer) anomaly(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.anomalies) < 50 {
		o.anomalies = append(o.anomalies, fmt.Sprintf(time.Now().Format("15:04:05.000 ")+format, args...))
	}
}

// get fetches a path and returns status and body, scanned for secrets.
func (o *observer) get(ctx context.Context, path string, accept string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.base+path, nil)
	if err != nil {
		return 0, "", err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	o.scan("GET "+path, string(b))
	return resp.StatusCode, string(b), err
}

// scrape fetches and parses /metrics and feeds the counter and resource
// bookkeeping.
func (o *observer) scrape(ctx context.Context) (metrics, error) {
	o.scrapeMu.Lock()
	defer o.scrapeMu.Unlock()
	code, body, err := o.get(ctx, "/metrics", "")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		o.anomaly("/metrics answered %d: %.200s", code, body)
		return nil, fmt.Errorf("/metrics: %d", code)
	}
	m, err := parseMetrics(body)
	if err != nil {
		o.anomaly("/metrics does not parse: %v", err)
		return nil, err
	}
	o.recordLocked(m)
	return m, nil
}

// recordLocked checks that no counter went back since the previous
// scrape. A series that was absent from the previous scrape starts
// afresh (a new series to Prometheus too); per-device series are keyed
// by the link's MAC address as well, so that a link deleted and created
// again under the same name between two scrapes is a new series, not a
// decrease.
func (o *observer) recordLocked(m metrics) {
	o.scrapes++
	mac := map[string]string{}
	for _, s := range m["linkgate_link_info"] {
		mac[s.labels["device"]] = s.labels["address"]
	}
	for _, d := range o.pending {
		after := "the link was gone at the next scrape"
		if mac[d.device] == d.mac {
			after = "the link was still there at the next scrape"
		}
		o.decreases = append(o.decreases, d.text+"; "+after)
	}
	o.pending = o.pending[:0]
	for name, ss := range m {
		if !strings.HasSuffix(name, "_total") {
			continue
		}
		for _, s := range ss {
			key := seriesKey(name, s.labels)
			dev, perDevice := s.labels["device"]
			if perDevice {
				a, ok := mac[dev]
				if !ok {
					continue
				}
				key += "@" + a
			}
			prev, ok := o.counters[key]
			if ok && prev.scrape == o.scrapes-1 && s.value < prev.value && len(o.decreases)+len(o.pending) < 20 {
				text := fmt.Sprintf("%s %s: %g → %g", time.Now().Format("15:04:05.000"), key, prev.value, s.value)
				if perDevice {
					o.pending = append(o.pending, decrease{text: text, device: dev, mac: mac[dev]})
				} else {
					o.decreases = append(o.decreases, text)
				}
			}
			o.counters[key] = counterSeen{value: s.value, scrape: o.scrapes}
		}
	}
	if o.scrapes%200 == 0 {
		for k, c := range o.counters {
			if c.scrape < o.scrapes-1 {
				delete(o.counters, k)
			}
		}
	}
	if v, ok := m.value("process_resident_memory_bytes"); ok {
		o.peakRSS = max(o.peakRSS, v)
	}
	if v, ok := m.value("go_goroutines"); ok {
		o.maxGoroutines = max(o.maxGoroutines, v)
	}
	if v, ok := m.value("process_open_fds"); ok {
		o.maxFDs = max(o.maxFDs, v)
	}
}

func seriesKey(name string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(name + "{")
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, labels[k])
	}
	b.WriteByte('}')
	return b.String()
}

// scraper scrapes like an impatient Prometheus until ctx ends.
func (o *observer) scraper(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		if _, err := o.scrape(ctx); err != nil && ctx.Err() == nil {
			o.anomaly("scrape: %v", err)
		}
		sleep(ctx, time.Duration(50+rng.IntN(200))*time.Millisecond)
	}
}

// longPoller waits on /ready?wait=5s again and again. The contract: an
// answer is 200 as soon as the gate is ready, or 503 when the wait ends,
// never earlier and not much later.
func (o *observer) longPoller(ctx context.Context, rng *rand.Rand) {
	path := fmt.Sprintf("/ready?wait=%s", longPollWait)
	for ctx.Err() == nil {
		start := time.Now()
		code, body, err := o.get(ctx, path, "")
		took := time.Since(start)
		if ctx.Err() != nil {
			return
		}
		o.polls.Add(1)
		switch {
		case err != nil:
			o.anomaly("long-poll: %v", err)
			sleep(ctx, 200*time.Millisecond)
		case code == http.StatusOK:
			sleep(ctx, time.Duration(100+rng.IntN(300))*time.Millisecond)
		case code == http.StatusServiceUnavailable:
			if took < longPollWait-50*time.Millisecond {
				o.anomaly("long-poll answered 503 after %v, before its %v wait ended: %.200s", took, longPollWait, body)
			}
			if took > longPollWait+3*time.Second {
				o.anomaly("long-poll answered 503 after %v, %v past its wait", took, took-longPollWait)
			}
			for {
				cur := o.pollMaxLatency.Load()
				if int64(took) <= cur || o.pollMaxLatency.CompareAndSwap(cur, int64(took)) {
					break
				}
			}
		default:
			o.anomaly("long-poll answered %d: %.200s", code, body)
			sleep(ctx, 200*time.Millisecond)
		}
	}
}

// subscriber holds /events streams open, each for a few seconds, and
// checks every event: its name matches its document, its id does not go
// back, and the stream never ends on its own.
func (o *observer) subscriber(ctx context.Context, id int, rng *rand.Rand) {
	for ctx.Err() == nil {
		hold := time.Duration(2000+rng.IntN(15000)) * time.Millisecond
		o.holdStream(ctx, id, hold)
		sleep(ctx, time.Duration(rng.IntN(300))*time.Millisecond)
	}
}

func (o *observer) holdStream(ctx context.Context, id int, hold time.Duration) {
	sctx, cancel := context.WithTimeout(ctx, hold)
	defer cancel()
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, o.base+"/events", nil)
	if err != nil {
		return
	}
	resp, err := o.stream.Do(req)
	if err != nil {
		if sctx.Err() == nil {
			o.anomaly("/events: %v", err)
		}
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		o.anomaly("/events answered %d: %.200s", resp.StatusCode, b)
		return
	}
	o.sseOpen.Add(1)
	o.sseStreams.Add(1)
	defer func() {
		o.sseMu.Lock()
		delete(o.sseLast, id)
		o.sseMu.Unlock()
		o.sseOpen.Add(-1)
	}()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var event, data string
	lastID := int64(-1)
	for sc.Scan() {
		line := sc.Text()
		o.scan("/events", line)
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case strings.HasPrefix(line, "id: "):
			var n int64
			if _, err := fmt.Sscan(strings.TrimPrefix(line, "id: "), &n); err != nil || n < lastID {
				o.anomaly("/events id %q after %d", line, lastID)
			}
			lastID = n
		case line == "" && data != "":
			var doc struct {
				Ready bool `json:"ready"`
			}
			if err := json.Unmarshal([]byte(data), &doc); err != nil {
				o.anomaly("/events data does not parse: %v: %.200s", err, data)
			} else if (event == "ready") != doc.Ready {
				o.anomaly("/events event %q with ready=%v", event, doc.Ready)
			}
			o.sseEvents.Add(1)
			o.sseMu.Lock()
			o.sseLast[id] = doc.Ready
			o.sseMu.Unlock()
			event, data = "", ""
		}
	}
	if sctx.Err() == nil {
		o.anomaly("/events stream ended by the server: %v", sc.Err())
	}
}

// streamsAgree reports whether every open stream's last event says ready.
func (o *observer) streamsAgree(ready bool) (bool, string) {
	o.sseMu.Lock()
	defer o.sseMu.Unlock()
	for id, r := range o.sseLast {
		if r != ready {
			return false, fmt.Sprintf("/events stream %d last said ready=%v", id, r)
		}
	}
	return true, ""
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
