package sidecar

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// limitedServer serves handler on loopback through a limitedListener.
func limitedServer(t *testing.T, limit int, handler http.Handler) (*limitedListener, *http.Server) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := limitConnections(inner, limit, slog.New(slog.DiscardHandler))
	srv := &http.Server{Handler: handler, ConnState: trackConnState, ReadHeaderTimeout: hang}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), hang)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		<-done
		if n := l.openConns(); n != 0 {
			t.Errorf("%d connections still counted after shutdown", n)
		}
	})
	return l, srv
}

func (l *limitedListener) openConns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

func (l *limitedListener) waitingConns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiting.Len()
}

// request sends GET / on c and reads the answer, keeping c open.
func request(c net.Conn, br *bufio.Reader) (int, error) {
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: linkgate\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// closedByServer reports whether the server has closed c: a read returns
// EOF (or a reset) rather than waiting.
func closedByServer(t *testing.T, c net.Conn) bool {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 1))
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })

// TestLimitedListenerShedsIdle: with a limit of 8, 50 idle connections
// (keep-alive after a request, nothing sent at all, or a header that never
// ends) leave at most 8 open, and a scrape arriving on top is served.
func TestLimitedListenerShedsIdle(t *testing.T) {
	const limit, flood = 8, 50
	l, _ := limitedServer(t, limit, okHandler)
	addr := l.Addr().String()

	conns := make([]net.Conn, flood)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
		switch i % 3 {
		case 0:
			if code, err := request(c, bufio.NewReader(c)); err != nil || code != http.StatusOK {
				t.Fatalf("connection %d: %d %v", i, code, err)
			}
		case 1: // connected, sends nothing
		case 2:
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: linkgate\r\n"); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Accepted after all of the flood (the accept queue is in order).
	scrape, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer scrape.Close()
	if code, err := request(scrape, bufio.NewReader(scrape)); err != nil || code != http.StatusOK {
		t.Errorf("scrape on top of %d idle connections: %d %v", flood, code, err)
	}
	if n := l.openConns(); n > limit {
		t.Errorf("%d connections open, limit %d", n, limit)
	}
	open := 0
	for _, c := range conns {
		if !closedByServer(t, c) {
			open++
		}
	}
	if open > limit-1 { // the scrape holds one place
		t.Errorf("%d of the %d idle connections still open, limit %d with the scrape's", open, flood, limit)
	}
}

// TestLimitedListenerShedsLongestIdle: the connection displaced is the
// one idle longest, whether it sent a request or nothing at all.
func TestLimitedListenerShedsLongestIdle(t *testing.T) {
	l, _ := limitedServer(t, 3, okHandler)
	addr := l.Addr().String()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	silent := dial() // sends nothing
	waitFor(t, "the silent connection to be accepted", func() bool { return l.waitingConns() == 1 })
	a, b := dial(), dial()
	for _, c := range []net.Conn{a, b} {
		if code, err := request(c, bufio.NewReader(c)); err != nil || code != http.StatusOK {
			t.Fatalf("%d %v", code, err)
		}
	}
	// a went idle before b, after silent was accepted.
	waitFor(t, "a and b to be idle", func() bool { return l.waitingConns() == 3 })
	if _, err := request(a, bufio.NewReader(a)); err != nil {
		t.Fatal(err) // a is now idle after b
	}
	waitFor(t, "a to be idle again", func() bool { return l.waitingConns() == 3 })

	for i, name := range []string{"silent", "b", "a"} {
		c := dial()
		if code, err := request(c, bufio.NewReader(c)); err != nil || code != http.StatusOK {
			t.Fatalf("new connection %d: %d %v", i, code, err)
		}
		if !closedByServer(t, map[string]net.Conn{"silent": silent, "b": b, "a": a}[name]) {
			t.Errorf("new connection %d: %s, idle longest, is still open", i, name)
		}
		waitFor(t, "the new connection to be idle", func() bool { return l.waitingConns() == 3 })
	}
	if n := l.openConns(); n != 3 {
		t.Errorf("%d connections counted, want 3", n)
	}
}

// TestLimitedListenerRefusesWhenBusy: when every connection has a request
// in progress, a new connection is closed at once (the client fails fast
// rather than queueing); the requests in progress complete, and once they
// have, new connections are served again.
func TestLimitedListenerRefusesWhenBusy(t *testing.T) {
	const limit = 4
	entered, release := make(chan struct{}), make(chan struct{})
	l, _ := limitedServer(t, limit, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "ok")
	}))
	addr := l.Addr().String()

	codes := make(chan int, limit)
	for range limit {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			code, err := request(c, bufio.NewReader(c))
			if err != nil {
				t.Error(err)
			}
			codes <- code
		}()
	}
	for range limit {
		recv(t, entered, "a request to be in progress")
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(hang)); err != nil {
		t.Fatal(err)
	}
	if code, err := request(c, bufio.NewReader(c)); err == nil {
		t.Errorf("connection beyond the limit while all are busy: answered %d, want it closed", code)
	}

	close(release)
	for range limit {
		if code := recv(t, codes, "a request in progress to complete"); code != http.StatusOK {
			t.Errorf("request in progress: %d", code)
		}
	}
	// The four are idle now: a new connection displaces one.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	go func() { <-entered }()
	if code, err := request(c2, bufio.NewReader(c2)); err != nil || code != http.StatusOK {
		t.Errorf("after the busy ones went idle: %d %v", code, err)
	}
}
