package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
	col, _ := runningCollector(t)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	ts := httptest.NewServer(metricsHandler(reg, slog.New(slog.DiscardHandler), col))
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

// TestMetricsHandlerLimitsScrapes: the eleventh concurrent scrape is
// refused with 503; the ten running ones complete.
func TestMetricsHandlerLimitsScrapes(t *testing.T) {
	bw := blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	ts := httptest.NewServer(metricsHandler(prometheus.NewRegistry(), slog.New(slog.DiscardHandler), bw))
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
	close(bw.release)
	for range maxScrapesInFlight {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("held scrape: %d", code)
		}
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
	ts := httptest.NewServer(metricsHandler(reg, slog.New(slog.NewTextHandler(&log, nil)), bw))
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
