package sidecar

import (
	"container/list"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// limitedListener bounds the connections open through one listener.
//
// At the limit, a new connection displaces the one that has waited longest
// without a request in progress: an idle keep-alive connection, or one
// whose request has not fully arrived (nothing sent yet, or headers
// trickling in: the server reports a connection active only once it has
// read a whole request header). A scrape or a kubelet probe sends its
// request as soon as it connects, so a flood of idle or slow connections
// cannot lock it out; closing an idle connection is what an idle timeout
// does anyway, and HTTP clients retry a request on a fresh connection
// then. When every connection has a request in progress (long-polls,
// event streams, responses being sent), the new one is closed at once:
// its client fails fast instead of waiting in the accept queue until its
// own timeout (netutil.LimitListener's way).
//
// The server must report connection states to trackConnState.
type limitedListener struct {
	net.Listener
	limit  int
	logger *slog.Logger

	mu      sync.Mutex
	open    int       // connections accepted and not yet closed
	waiting list.List // *limitedConn without a request in progress, longest-waiting first
	shed    int       // displaced since the last log line
	refused int       // closed at accept since the last log line
	logged  time.Time
}

// limitLogInterval spaces the log lines about the limit: a flood must not
// flood the log too.
const limitLogInterval = time.Minute

func limitConnections(l net.Listener, limit int, logger *slog.Logger) *limitedListener {
	return &limitedListener{Listener: l, limit: limit, logger: logger}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc := &limitedConn{Conn: c, l: l}
		admitted, victim := l.admit(lc)
		if victim != nil {
			victim.Conn.Close()
		}
		if victim != nil || !admitted {
			l.logLimit()
		}
		if admitted {
			return lc, nil
		}
		c.Close()
	}
}

// admit counts c in, displacing the longest-waiting connection at the
// limit (returned, for the caller to close outside the lock).
func (l *limitedListener) admit(c *limitedConn) (admitted bool, victim *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open >= l.limit {
		front := l.waiting.Front()
		if front == nil {
			l.refused++
			return false, nil
		}
		// The victim's place passes to c: open stays the same.
		victim = l.waiting.Remove(front).(*limitedConn)
		victim.elem, victim.done = nil, true
		l.shed++
	} else {
		l.open++
	}
	c.elem = l.waiting.PushBack(c) // nothing read yet
	return true, victim
}

// logLimit reports displaced and refused connections, at most once per
// limitLogInterval.
func (l *limitedListener) logLimit() {
	l.mu.Lock()
	shed, refused := l.shed, l.refused
	if shed+refused == 0 || time.Since(l.logged) < limitLogInterval {
		l.mu.Unlock()
		return
	}
	l.shed, l.refused, l.logged = 0, 0, time.Now()
	l.mu.Unlock()
	l.logger.Warn("connection limit reached: idle connections closed to make room, new ones refused when none was idle",
		"address", l.Addr().String(), "limit", l.limit, "closed_idle", shed, "refused", refused)
}

// setState moves c in or out of the waiting list as the server reports
// its state.
func (l *limitedListener) setState(c *limitedConn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.done {
		return
	}
	switch s {
	case http.StateIdle:
		if c.elem != nil {
			l.waiting.MoveToBack(c.elem)
		} else {
			c.elem = l.waiting.PushBack(c)
		}
	case http.StateActive, http.StateHijacked:
		if c.elem != nil {
			l.waiting.Remove(c.elem)
			c.elem = nil
		}
	case http.StateClosed:
		l.release(c)
	}
}

// release counts c out. l.mu is held.
func (l *limitedListener) release(c *limitedConn) {
	if c.done {
		return
	}
	if c.elem != nil {
		l.waiting.Remove(c.elem)
		c.elem = nil
	}
	c.done = true
	l.open--
}

// limitedConn is a connection counted by its listener.
type limitedConn struct {
	net.Conn
	l *limitedListener
	// Guarded by l.mu:
	elem *list.Element // in l.waiting, nil while a request is in progress
	done bool          // counted out (closed, or displaced)
}

func (c *limitedConn) Close() error {
	c.l.mu.Lock()
	c.l.release(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// trackConnState is the http.Server's ConnState hook for limitedListener
// connections; others are ignored. A TLS connection is unwrapped.
func trackConnState(c net.Conn, s http.ConnState) {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	if lc, ok := c.(*limitedConn); ok {
		lc.l.setState(lc, s)
	}
}
