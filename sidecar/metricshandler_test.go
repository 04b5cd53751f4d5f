package sidecar

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/promtooltest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeMetrics GETs url like Prometheus does, with or without gzip, and
// returns the response and its decompressed body.
func scrapeMetrics(t *testing.T, url string, gz bool) (*http.Response, string) {
	t.Helper()
	resp, body, err := fetchMetrics(url, gz)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func fetchMetrics(url string, gz bool) (*http.Response, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	} else {
		req.Header.Set("Accept-Encoding", "identity")
	}
	// A Transport of its own: the default one would ask for gzip itself
	// and decompress transparently, hiding what the handler sent.
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return nil, "", err
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	return resp, string(b), err
}

// TestMetricsHandler serves a registry (process, Go) and a real collector
// watching a private namespace as the fast writer, as the exporter does,
// and checks what Prometheus would get, compressed and not.
func TestMetricsHandler(t *testing.T) {
	a, b := netnstest.New(t), netnstest.New(t)
	netnstest.Veth(t, a, "va", b, "vb")
	col := startCollector(t, a, "va")

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	ts := httptest.NewServer(newMetricsHandler(reg, slog.New(slog.DiscardHandler), col))
	defer ts.Close()

	for _, gz := range []bool{false, true} {
		resp, body := scrapeMetrics(t, ts.URL, gz)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("gzip=%v: status %d: %s", gz, resp.StatusCode, body)
		}
		if got := resp.Header.Get("Content-Type"); got != "text/plain; version=0.0.4; charset=utf-8" {
			t.Errorf("gzip=%v: Content-Type %q", gz, got)
		}
		if got, want := resp.Header.Get("Content-Encoding"), map[bool]string{true: "gzip"}[gz]; got != want {
			t.Errorf("gzip=%v: Content-Encoding %q, want %q", gz, got, want)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("gzip=%v: the exposition does not parse: %v", gz, err)
		}
		for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "linkgate_link_up", "linkgate_network_up"} {
			if _, ok := mfs[name]; !ok {
				t.Errorf("gzip=%v: no %s", gz, name)
			}
		}
		if !strings.Contains(body, `linkgate_link_up{device="va"} 1`) {
			t.Errorf("gzip=%v: va is not up in:\n%s", gz, body)
		}
		seen := map[string]bool{}
		for line := range strings.Lines(body) {
			if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
				name = strings.Fields(name)[0]
				if seen[name] {
					t.Errorf("gzip=%v: family %s twice", gz, name)
				}
				seen[name] = true
			}
		}
		promtooltest.CheckMetrics(t, body)
	}
}

// blockingWriter holds every WriteText until release is closed.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
}

func (b blockingWriter) WriteText(w io.Writer) error {
	b.entered <- struct{}{}
	<-b.release
	_, err := io.WriteString(w, "# HELP x_up X.\n# TYPE x_up gauge\nx_up 1\n")
	return err
}

// TestMetricsHandlerLimitsScrapes: the eleventh scrape while ten are
// rendering waits for a slot: 503 if none frees within renderQueueWait,
// served once one does; the ten running ones complete.
func TestMetricsHandlerLimitsScrapes(t *testing.T) {
	bw := blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	ts := httptest.NewServer(newMetricsHandler(prometheus.NewRegistry(), slog.New(slog.DiscardHandler), bw))
	defer ts.Close()
	codes := make(chan int, maxScrapesInFlight)
	for range maxScrapesInFlight {
		go func() {
			resp, _, err := fetchMetrics(ts.URL, false)
			if err != nil {
				t.Error(err)
				codes <- 0
				return
			}
			codes <- resp.StatusCode
		}()
	}
	for range maxScrapesInFlight {
		<-bw.entered
	}
	if resp, body := scrapeMetrics(t, ts.URL, true); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("scrape beyond the limit: %d %q, want 503", resp.StatusCode, body)
	}
	waiting := make(chan int, 1)
	go func() {
		resp, _, err := fetchMetrics(ts.URL, true)
		if err != nil {
			t.Error(err)
			waiting <- 0
			return
		}
		waiting <- resp.StatusCode
	}()
	time.Sleep(renderQueueWait / 4) // the eleventh is queued by now (nothing asserts on it)
	close(bw.release)
	for range maxScrapesInFlight {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("held scrape: %d", code)
		}
	}
	<-bw.entered // the waiting scrape got a slot and renders
	if code := <-waiting; code != http.StatusOK {
		t.Errorf("scrape waiting for a slot: %d, want 200", code)
	}
}

// failingCollector makes a registry's Gather fail.
type failingCollector struct{ desc *prometheus.Desc }

func (f failingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }
func (f failingCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(f.desc, errors.New("collector exploded"))
}

// TestMetricsHandlerGatherError: a failed gather is a 500 with the error,
// logged, and no fast writer runs.
func TestMetricsHandlerGatherError(t *testing.T) {
	var log bytes.Buffer
	bw := blockingWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	close(bw.release)
	reg := prometheus.NewRegistry()
	reg.MustRegister(failingCollector{prometheus.NewDesc("x_up", "X.", nil, nil)})
	ts := httptest.NewServer(newMetricsHandler(reg, slog.New(slog.NewTextHandler(&log, nil)), bw))
	defer ts.Close()
	resp, body := scrapeMetrics(t, ts.URL, true)
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, "collector exploded") {
		t.Errorf("status %d, body %q", resp.StatusCode, body)
	}
	if !strings.Contains(log.String(), "collector exploded") {
		t.Errorf("not logged: %q", log.String())
	}
	select {
	case <-bw.entered:
		t.Error("fast writer ran after a failed gather")
	default:
	}
}

func TestMetricsAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		header []string
		want   bool
	}{
		{nil, false},
		{[]string{"gzip"}, true},
		{[]string{"deflate, gzip;q=1.0, *;q=0.5"}, true},
		{[]string{"GZIP"}, true},
		{[]string{"identity"}, false},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip;q=0", "*"}, false},
		{[]string{"br", "*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"x-gzip"}, true},
	} {
		if got := acceptsGzip(tc.header); got != tc.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tc.header, got, tc.want)
		}
	}
}

// waitFor polls cond until it holds, failing the test after hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// smallSendBuffers fixes the send buffer of accepted connections. On
// loopback the kernel grows it to 4 MB, which swallows a test exposition
// whole, so a client that does not read would never stall the server;
// with a bigger exposition (3000 links is 4.4 MB) it does.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		err = c.(*net.TCPConn).SetWriteBuffer(256 << 10)
	}
	return c, err
}

// serveMetrics serves h on loopback with small send buffers.
func serveMetrics(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	ts.Listener = smallSendBuffers{ts.Listener}
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

// stalledScrape sends GET /metrics (without gzip: the biggest answer) on
// a connection with a small receive buffer, and never reads the answer.
func stalledScrape(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: linkgate\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return c
}

// vethPairs creates n veth pairs in ns (2n links, left down) with one
// `ip -batch`.
func vethPairs(t *testing.T, ns *netnstest.NS, n int) {
	t.Helper()
	var batch strings.Builder
	for i := range n {
		fmt.Fprintf(&batch, "link add lg%da type veth peer name lg%db\n", i, i)
	}
	file := filepath.Join(t.TempDir(), "links.batch")
	if err := os.WriteFile(file, []byte(batch.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ns.IP(t, "-batch", file)
}

// TestMetricsSlowReadersDoNotBlockScrapes is issue 8's case: clients that
// send a scrape and never read used to hold the ten scrape slots, and
// every other scrape was answered 503 for as long as they held on. Now
// they hold only their rendered answer, and a scraper is served while
// they still hang.
func TestMetricsSlowReadersDoNotBlockScrapes(t *testing.T) {
	ns := netnstest.New(t)
	vethPairs(t, ns, 1000)
	col := startCollector(t, ns)

	h := newMetricsHandler(NewRegistry(), slog.New(slog.DiscardHandler), col)
	h.writeTimeout = hang // the stalled clients must still hang at the end
	ts := serveMetrics(t, h)

	stall := func(n int64) {
		// One after another: ten rendering at once would be refused.
		for range n {
			want := h.sending.Load() + 1
			stalledScrape(t, ts.Listener.Addr().String())
			waitFor(t, "a stalled scrape to be rendered", func() bool { return h.sending.Load() == want })
		}
	}
	scrape := func() {
		t.Helper()
		stalled := h.sending.Load()
		for _, gz := range []bool{true, false} {
			resp, body, err := fetchMetrics(ts.URL, gz)
			if err != nil {
				t.Fatalf("gzip=%v: %v", gz, err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("gzip=%v: status %d while %d clients stall: %.200s", gz, resp.StatusCode, stalled, body)
			}
			if !strings.Contains(body, `linkgate_link_up{device="lg999b"} 0`) {
				t.Errorf("gzip=%v: lg999b missing from a %d-byte body", gz, len(body))
			}
			if !gz && int64(len(body)) != resp.ContentLength {
				t.Errorf("Content-Length %d, body %d bytes", resp.ContentLength, len(body))
			}
		}
		if n := h.sending.Load(); n != stalled {
			t.Errorf("%d responses still being sent, want the %d stalled ones: the test did not stall them", n, stalled)
		}
	}
	stall(maxScrapesInFlight) // as many as there are slots
	scrape()
	stall(maxScrapesInFlight) // and as many again
	scrape()
}

// bigWriter writes n series, enough that a client that does not read
// stalls the response.
type bigWriter struct{ n int }

func (b bigWriter) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("# HELP x_up X.\n# TYPE x_up gauge\n")
	for i := range b.n {
		fmt.Fprintf(bw, "x_up{i=\"%d\"} 1\n", i)
	}
	return bw.Flush()
}

// TestMetricsWriteDeadline: a client that does not read is cut off at the
// write deadline, its buffer released, and what it got is detectably
// short of the Content-Length.
func TestMetricsWriteDeadline(t *testing.T) {
	h := newMetricsHandler(prometheus.NewRegistry(), slog.New(slog.DiscardHandler), bigWriter{200_000})
	h.writeTimeout = 200 * time.Millisecond
	ts := serveMetrics(t, h)

	c := stalledScrape(t, ts.Listener.Addr().String())
	waitFor(t, "the stalled scrape to be rendered", func() bool { return h.sending.Load() == 1 })
	waitFor(t, "the write deadline to cut the stalled scrape off", func() bool { return h.sending.Load() == 0 })
	if n := h.unsent.Load(); n != 0 {
		t.Errorf("%d unsent bytes still counted", n)
	}
	// Now read what made it out.
	if err := c.SetReadDeadline(time.Now().Add(hang)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.Copy(io.Discard, resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || got >= resp.ContentLength {
		t.Errorf("read %d of %d bytes, err %v; want a short body and io.ErrUnexpectedEOF", got, resp.ContentLength, err)
	}
}

// TestMetricsUnsentLimit: while the rendered answers waiting for slow
// clients exceed the limit, a scrape is answered 503; once they are gone
// scrapes are served again.
func TestMetricsUnsentLimit(t *testing.T) {
	h := newMetricsHandler(prometheus.NewRegistry(), slog.New(slog.DiscardHandler), bigWriter{200_000})
	h.maxUnsent = 1
	ts := serveMetrics(t, h)

	c := stalledScrape(t, ts.Listener.Addr().String())
	waitFor(t, "the stalled scrape to be rendered", func() bool { return h.sending.Load() == 1 })
	resp, body := scrapeMetrics(t, ts.URL, true)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "slow clients") {
		t.Errorf("scrape beyond the limit: %d %q, want 503", resp.StatusCode, body)
	}
	c.Close()
	waitFor(t, "the stalled scrape to end", func() bool { return h.sending.Load() == 0 })
	if resp, body := scrapeMetrics(t, ts.URL, true); resp.StatusCode != http.StatusOK || !strings.Contains(body, `x_up{i="199999"} 1`) {
		t.Errorf("scrape after the slow client left: %d, %d bytes", resp.StatusCode, len(body))
	}
}
