package main

import (
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// expositionWriter writes metric families in the text format.
type expositionWriter interface{ WriteText(w io.Writer) error }

// maxScrapesInFlight bounds concurrent scrapes, as promhttp's
// MaxRequestsInFlight does: a scrape holds a few buffers and, with a
// counter refresh due, a kernel dump.
const maxScrapesInFlight = 10

// gzipWriters are reused across scrapes: a gzip.Writer carries about a
// megabyte of compressor state. BestSpeed because at 1000 interfaces the
// body is about 1.4 MB of very repetitive text, which the fastest level
// already shrinks more than tenfold.
var gzipWriters = sync.Pool{New: func() any {
	gz, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return gz
}}

// metricsHandler serves reg's families followed by each fast writer's, in text format 0.0.4,
// gzip-compressed when the client accepts it; errors are logged and answered with 500.
//
// The fast writers (the collector) format their series directly, which is
// most of a scrape at 1000 interfaces; reg holds the few process, Go and
// build series. Family names must not repeat across the parts: nothing
// here checks it.
//
// A gather error is answered with 500 before anything is sent. A write
// error comes from the client's connection after the status line has
// gone out; it is logged and the response is cut short.
func metricsHandler(reg prometheus.Gatherer, logger *slog.Logger, fast ...expositionWriter) http.Handler {
	inFlight := make(chan struct{}, maxScrapesInFlight)
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case inFlight <- struct{}{}:
			defer func() { <-inFlight }()
		default:
			http.Error(rw, fmt.Sprintf("Limit of concurrent requests reached (%d), try again later.", maxScrapesInFlight),
				http.StatusServiceUnavailable)
			return
		}
		mfs, err := reg.Gather()
		if err != nil {
			logger.Error("gathering metrics failed", "err", err)
			http.Error(rw, "An error has occurred while gathering metrics:\n\n"+err.Error(), http.StatusInternalServerError)
			return
		}

		h := rw.Header()
		h.Set("Content-Type", string(expfmt.FmtText))
		h.Add("Vary", "Accept-Encoding")
		var w io.Writer = rw
		if acceptsGzip(r.Header.Values("Accept-Encoding")) {
			h.Set("Content-Encoding", "gzip")
			gz := gzipWriters.Get().(*gzip.Writer)
			gz.Reset(rw)
			defer func() {
				if err := gz.Close(); err != nil {
					logger.Warn("sending metrics failed", "err", err)
				}
				gz.Reset(io.Discard) // drop the ResponseWriter
				gzipWriters.Put(gz)
			}()
			w = gz
		}
		enc := expfmt.NewEncoder(w, expfmt.FmtText)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				logger.Warn("sending metrics failed", "family", mf.GetName(), "err", err)
				return
			}
		}
		for _, f := range fast {
			if err := f.WriteText(w); err != nil {
				logger.Warn("sending metrics failed", "err", err)
				return
			}
		}
	})
}

// acceptsGzip reports whether Accept-Encoding values allow gzip: listed
// (or x-gzip), or covered by "*", with a non-zero quality.
func acceptsGzip(values []string) bool {
	star := false
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				if k, val, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(k, "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
						q = f
					}
				}
			}
			switch strings.ToLower(strings.TrimSpace(coding)) {
			case "gzip", "x-gzip":
				return q > 0
			case "*":
				star = q > 0
			}
		}
	}
	return star
}
