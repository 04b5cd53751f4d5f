package sidecar

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// maxScrapesInFlight bounds concurrent renders, as promhttp's
// MaxRequestsInFlight does: a render holds a compressor, the collector's
// view and, with a counter refresh due, a kernel dump. Sending the
// rendered response does not hold a slot, so a client that does not read
// cannot keep another from being served.
const maxScrapesInFlight = 10

// renderQueueWait is how long a scrape waits for a free render slot
// before it is answered 503. Waiting costs a goroutine, and connections
// are bounded per listener (--web.max-connections).
const renderQueueWait = 2 * time.Second

// metricsWriteTimeout bounds sending one rendered response. A client that
// reads slower is cut off and its buffer released; Prometheus gives up on
// a scrape after its scrape_timeout (10s by default) anyway.
const metricsWriteTimeout = 10 * time.Second

// maxUnsentBytes bounds the rendered responses (compressed) still waiting
// for their clients: at 2000 interfaces a response is about 170 KB, so
// some 190 clients that do not read. Beyond it a scrape is answered 503
// until the write deadline cuts the slowest off.
const maxUnsentBytes = 32 << 20

// gzipWriters are reused across scrapes: a gzip.Writer carries about a
// megabyte of compressor state. BestSpeed because at 1000 interfaces the
// body is about 1.4 MB of very repetitive text, which the fastest level
// already shrinks more than tenfold.
var gzipWriters = sync.Pool{New: func() any {
	gz, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return gz
}}

var (
	bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	gzipReaders sync.Pool // *gzip.Reader, for clients that do not accept gzip
)

// metricsHandler serves reg's families followed by each fast writer's, in
// text format 0.0.4, gzip-compressed when the client accepts it.
//
// The fast writers (the collector) format their series directly, which is
// most of a scrape at 1000 interfaces; reg holds the few process, Go and
// build series. Family names must not repeat across the parts: nothing
// here checks it.
//
// A scrape is rendered whole, compressed, into a buffer while it holds
// one of maxScrapesInFlight slots; the slot is released before the
// response is sent, under a write deadline. So an error (of the gather or
// of a writer) is a 500 before anything is sent, and a slow or stalled
// client holds only its compressed buffer, for at most the deadline.
// A client that does not accept gzip gets the buffer decompressed as it
// reads.
type metricsHandler struct {
	reg    prometheus.Gatherer
	fast   []ExpositionWriter
	logger *slog.Logger

	renders      chan struct{} // render slots
	writeTimeout time.Duration
	maxUnsent    int64
	unsent       atomic.Int64 // compressed bytes rendered and not yet sent
	sending      atomic.Int64 // responses being sent
}

func newMetricsHandler(reg prometheus.Gatherer, logger *slog.Logger, fast ...ExpositionWriter) *metricsHandler {
	return &metricsHandler{
		reg:          reg,
		fast:         fast,
		logger:       logger,
		renders:      make(chan struct{}, maxScrapesInFlight),
		writeTimeout: metricsWriteTimeout,
		maxUnsent:    maxUnsentBytes,
	}
}

// rendered is a response body, always compressed: a tenth of the memory
// while it waits for a slow client.
type rendered struct {
	gz   *bytes.Buffer
	size int64 // uncompressed
}

func (b *rendered) release() {
	b.gz.Reset()
	bodyBuffers.Put(b.gz)
}

func (h *metricsHandler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if h.unsent.Load() >= h.maxUnsent {
		http.Error(rw, "Too many scrape responses are waiting for slow clients, try again later.", http.StatusServiceUnavailable)
		return
	}
	// Wait a little for a render slot rather than refusing at once: a
	// render costs a couple of milliseconds of CPU, so a burst of
	// concurrent scrapes is served in turn instead of mostly with 503.
	wait := time.NewTimer(renderQueueWait)
	select {
	case h.renders <- struct{}{}:
		wait.Stop()
	case <-r.Context().Done():
		wait.Stop()
		return
	case <-wait.C:
		http.Error(rw, fmt.Sprintf("Limit of concurrent requests reached (%d renders, none free within %s), try again later.",
			maxScrapesInFlight, renderQueueWait), http.StatusServiceUnavailable)
		return
	}
	body, err := h.render()
	if err != nil {
		<-h.renders
		h.logger.Error("gathering metrics failed", "err", err)
		http.Error(rw, "An error has occurred while gathering metrics:\n\n"+err.Error(), http.StatusInternalServerError)
		return
	}
	defer body.release()
	n := int64(body.gz.Len())
	h.unsent.Add(n) // before the slot is free, so the check above sees it
	defer h.unsent.Add(-n)
	<-h.renders
	h.sending.Add(1)
	defer h.sending.Add(-1)
	if err := h.send(rw, r, body); err != nil {
		// The client's problem (gone, or too slow), not linkgate's: a
		// flood of them must not flood the log.
		h.logger.Debug("sending metrics failed", "err", err)
	}
}

// render gathers and formats one scrape into a compressed buffer.
func (h *metricsHandler) render() (*rendered, error) {
	mfs, err := h.reg.Gather()
	if err != nil {
		return nil, err
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	gz := gzipWriters.Get().(*gzip.Writer)
	gz.Reset(buf)
	defer func() {
		gz.Reset(io.Discard) // drop buf
		gzipWriters.Put(gz)
	}()
	fail := func(err error) (*rendered, error) {
		buf.Reset()
		bodyBuffers.Put(buf)
		return nil, err
	}
	w := &countingWriter{w: gz}
	enc := expfmt.NewEncoder(w, expfmt.FmtText)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return fail(fmt.Errorf("encoding %s: %w", mf.GetName(), err))
		}
	}
	for _, f := range h.fast {
		if err := f.WriteText(w); err != nil {
			return fail(err)
		}
	}
	if err := gz.Close(); err != nil {
		return fail(err)
	}
	return &rendered{gz: buf, size: w.n}, nil
}

// send writes body as the response, within the write deadline.
func (h *metricsHandler) send(rw http.ResponseWriter, r *http.Request, body *rendered) error {
	// The deadline covers the whole body, and the server's final flush
	// after the handler returns: whatever the client's pace, the buffer is
	// released by then. The server clears it before the next request.
	if err := http.NewResponseController(rw).SetWriteDeadline(time.Now().Add(h.writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	hd := rw.Header()
	hd.Set("Content-Type", string(expfmt.FmtText))
	hd.Add("Vary", "Accept-Encoding")
	if acceptsGzip(r.Header.Values("Accept-Encoding")) {
		hd.Set("Content-Encoding", "gzip")
		hd.Set("Content-Length", strconv.Itoa(body.gz.Len()))
		_, err := rw.Write(body.gz.Bytes())
		return err
	}
	hd.Set("Content-Length", strconv.FormatInt(body.size, 10))
	zr, _ := gzipReaders.Get().(*gzip.Reader)
	src := bytes.NewReader(body.gz.Bytes())
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(src)
	} else {
		err = zr.Reset(src)
	}
	if err != nil {
		return err // cannot happen: render wrote a gzip stream
	}
	defer gzipReaders.Put(zr)
	_, err = io.Copy(rw, zr)
	return err
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
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
