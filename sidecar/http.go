package sidecar

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/linkgate/linkgate/internal/clock"
)

// HandlerOptions configure the HTTP endpoints.
type HandlerOptions struct {
	// MaxWait caps ?wait= (default 5m).
	MaxWait time.Duration
	// MaxWaiters bounds concurrent long-polls; beyond it /ready?wait=
	// answers 429 (default 1024).
	MaxWaiters int
	// MaxSubscribers bounds concurrent /events streams; beyond it 429
	// (default 64).
	MaxSubscribers int
	// Heartbeat is the /events comment interval (default 15s).
	Heartbeat time.Duration
	// WriteTimeout bounds each /events write, so a stuck client cannot
	// pin a stream forever, and is added to a long-poll's write deadline
	// (default 10s).
	WriteTimeout time.Duration
	// Inventory enables /ready/host/NAME: the ESXi hosts and datastores
	// of every vCenter target (nil: every host is unknown, 404).
	Inventory InventorySource
	// Reach are the reachability probes of the targets' hosts, one per
	// target (matched by Reachability.Target); a target without one has
	// no host-reachable check.
	Reach []ReachSource
	// VMs enables /ready/vm/NAME: it resolves a VM to its host and
	// datastores (nil: every VM is unknown, 404).
	VMs VMSource
}

// Handler serves the gate over HTTP:
//
//	GET /ready                 200 "ok" or 503 with "[-]name failed: reason" lines
//	GET /ready?verbose         every check as "[+]name ok" / "[-]name failed: reason",
//	                           then "readyz check passed" or "readyz check failed"
//	GET /ready?exclude=NAME    judge without NAME (repeatable); damping still applies
//	GET /ready/NAME            one check's current result, undamped; 404 if unknown
//	GET /ready/host/HOST       the gate (damped, as /ready) plus the ESXi host's own
//	                           checks (see judgeHost); 404 if no inventory lists it
//	                           (and none in doubt might)
//	GET /ready/vm/VM           as /ready/host for the host the VM (name or instance
//	                           UUID) runs on, plus its datastores; 404 if no vCenter has it
//	GET /ready?wait=30s        long-poll: answer as soon as ready, or 503 when the
//	                           wait (capped at MaxWait; bare numbers are seconds) ends
//	GET /events                Server-Sent Events, see serveEvents
//
// A failing /ready lists every check, as ?verbose does. With
// "Accept: application/json" /ready answers
// {"ready":..., "since":..., "checks":[{"name","ok","reason","since"}]}.
// The status code always carries the verdict: 200 ready, 503 not; 429
// when too many long-polls or streams are open. Waits and heartbeats run
// on the gate's Clock.
type Handler struct {
	gate        *Gate
	inventory   InventorySource
	reach       []ReachSource
	vms         VMSource
	clock       clock.Clock
	opts        HandlerOptions
	waiters     chan struct{}
	subscribers chan struct{}
	done        chan struct{}
	closeOnce   sync.Once

	// onWait, if set, is called when a long-poll starts blocking (tests).
	onWait func()
}

// NewHandler returns the HTTP handler for g. Close it on shutdown.
func NewHandler(g *Gate, opts HandlerOptions) *Handler {
	if opts.MaxWait <= 0 {
		opts.MaxWait = 5 * time.Minute
	}
	if opts.MaxWaiters <= 0 {
		opts.MaxWaiters = 1024
	}
	if opts.MaxSubscribers <= 0 {
		opts.MaxSubscribers = 64
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	return &Handler{
		gate:        g,
		inventory:   opts.Inventory,
		reach:       opts.Reach,
		vms:         opts.VMs,
		clock:       g.clock,
		opts:        opts,
		waiters:     make(chan struct{}, opts.MaxWaiters),
		subscribers: make(chan struct{}, opts.MaxSubscribers),
		done:        make(chan struct{}),
	}
}

// Register mounts the handler's paths on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.Handle("/ready", h)
	mux.Handle("/ready/", h)
	mux.Handle("/events", h)
}

// Close ends every long-poll (with 503) and every event stream, and makes
// later requests answer at once. It does not wait for handlers to return;
// http.Server.Shutdown does.
func (h *Handler) Close() {
	h.closeOnce.Do(func() { close(h.done) })
}

func (h *Handler) closed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch p := r.URL.Path; {
	case p == "/events":
		h.serveEvents(w, r)
	case p == "/ready" || p == "/ready/":
		h.serveReady(w, r, "", subject{})
	case strings.HasPrefix(p, "/ready/vm/"):
		name := strings.TrimPrefix(p, "/ready/vm/")
		if h.vms == nil || name == "" {
			http.Error(w, subject{subjectVM, name}.notFound(), http.StatusNotFound)
			return
		}
		// A VM no vCenter has is a 404, found by the verdict's own lookup
		// (one lookup per request, not one to decide and one to judge).
		h.serveReady(w, r, "", subject{subjectVM, name})
	case strings.HasPrefix(p, "/ready/host/"):
		name := strings.TrimPrefix(p, "/ready/host/")
		if h.inventory == nil || name == "" {
			http.Error(w, subject{subjectHost, name}.notFound(), http.StatusNotFound)
			return
		}
		// A host no inventory lists (and none in doubt might) is a 404,
		// found by the verdict's own lookup, as for a VM.
		h.serveReady(w, r, "", subject{subjectHost, name})
	case strings.HasPrefix(p, "/ready/"):
		name := strings.TrimPrefix(p, "/ready/")
		if !slices.Contains(h.gate.names, name) {
			http.Error(w, fmt.Sprintf("no such check: %q", name), http.StatusNotFound)
			return
		}
		h.serveReady(w, r, name, subject{})
	default:
		http.NotFound(w, r)
	}
}

// durationSyntax is what time.ParseDuration accepts, to tell a duration
// too long to represent from text that is not a duration.
var durationSyntax = regexp.MustCompile(`^[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$`)

// parseWait reads ?wait=: a Go duration ("30s") or a number of seconds
// ("30", "1.5"), not negative. A wait longer than limit, however long
// (1e308, 9999999h), is limit: a client may ask for its own timeout and be
// answered within it.
func parseWait(s string, limit time.Duration) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	bad := func(why string) error {
		return fmt.Errorf("wait %q: %s; want a duration like 30s or a number of seconds, 0 or more (a wait longer than %s is cut to %s)",
			s, why, limit, limit)
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return 0, bad("negative")
		}
		return min(d, limit), nil
	}
	if durationSyntax.MatchString(s) { // valid, but beyond ±292 years
		if strings.HasPrefix(s, "-") {
			return 0, bad("negative")
		}
		return limit, nil
	}
	secs, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return 0, bad("not a duration or a number")
	case math.IsNaN(secs) || (math.IsInf(secs, 0) && err == nil):
		// NaN and Inf spelled out; 1e400 is out of range, and merely long.
		return 0, bad("not a finite number")
	case secs < 0:
		return 0, bad("negative")
	case secs >= limit.Seconds():
		return limit, nil
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// subject is what /ready/host/NAME and /ready/vm/NAME judge besides the
// gate: an ESXi host or a VM (at most one of them).
type subject struct {
	kind subjectKind
	name string
}

type subjectKind int

const (
	subjectGate subjectKind = iota
	subjectHost
	subjectVM
)

// notFound is the 404's text for a host or VM that does not exist.
func (s subject) notFound() string {
	if s.kind == subjectVM {
		return fmt.Sprintf("no such VM in vCenter: %q", s.name)
	}
	return fmt.Sprintf("no such host in the vSphere inventory: %q", s.name)
}

// serveReady answers for the gate, for one of its checks (single), or for
// the gate and an ESXi host's or a VM's checks (subj).
func (h *Handler) serveReady(w http.ResponseWriter, r *http.Request, single string, subj subject) {
	q := r.URL.Query()
	wait, err := parseWait(q.Get("wait"), h.opts.MaxWait)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	excluded := map[string]bool{}
	var unknown []string
	for _, name := range q["exclude"] {
		if slices.Contains(h.gate.names, name) {
			excluded[name] = true
		} else {
			unknown = append(unknown, name)
		}
	}
	// Every answer is judged from a state no older than the kernel state
	// current when it is looked at (Gate.Current).
	look := func() verdict {
		st, fresh, evaluated := h.gate.Current(r.Context())
		now := h.clock.Now()
		v := h.gate.judge(st, single, excluded, now)
		switch {
		case subj.kind == subjectHost:
			v = h.judgeHost(v, subj.name, now)
		case subj.kind == subjectVM:
			v = h.judgeVM(r.Context(), v, subj.name, now)
		}
		if !fresh {
			v.ready, v.lagging = false, true
			v.wake[3] = evaluated
		}
		return v
	}
	v := look()
	if v.noSuch {
		http.Error(w, subj.notFound(), http.StatusNotFound)
		return
	}
	if wait > 0 && !v.ready && !h.closed() {
		select {
		case h.waiters <- struct{}{}:
			defer func() { <-h.waiters }()
		default:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many waiting requests", http.StatusTooManyRequests)
			return
		}
		// Outlive a server-wide WriteTimeout for the length of the wait.
		rc := http.NewResponseController(w)
		_ = rc.SetWriteDeadline(time.Now().Add(wait + h.opts.WriteTimeout))
		var stay bool
		if v, stay = h.await(r, look, v, wait); !stay {
			return
		}
	}
	_, verbose := q["verbose"]
	h.respond(w, r, v, verbose, unknown)
}

// await long-polls from v, the verdict just looked at (its channels say
// when to look again): it returns the verdict once it is ready, the wait has
// ended or the handler is closed; stay is false when the client has left.
func (h *Handler) await(r *http.Request, look func() verdict, v verdict, wait time.Duration) (verdict, bool) {
	deadline := h.clock.NewTimer(wait)
	defer deadline.Stop()
	if h.onWait != nil {
		h.onWait()
	}
	for ; !v.ready; v = look() {
		// With exclusions the damping deadline is this request's own:
		// the gate publishes nothing when it passes.
		var damp clock.Timer
		var dampC <-chan time.Time
		if v.damped {
			damp = h.clock.NewTimer(max(v.readyAt.Sub(h.clock.Now()), 0))
			dampC = damp.C()
		}
		var poll clock.Timer
		var pollC <-chan time.Time
		if v.poll > 0 {
			poll = h.clock.NewTimer(v.poll)
			pollC = poll.C()
		}
		done, gone := false, false
		select {
		case <-v.state.Changed():
		case <-v.wake[0]:
		case <-v.wake[1]:
		case <-v.wake[2]:
		case <-v.wake[3]:
		case <-dampC:
		case <-pollC:
		case <-deadline.C():
			done = true
		case <-h.done:
			done = true
		case <-r.Context().Done():
			done, gone = true, true
		}
		if damp != nil {
			damp.Stop()
		}
		if poll != nil {
			poll.Stop()
		}
		if done {
			return look(), !gone
		}
	}
	return v, true
}

// readyDoc is the JSON form of /ready and of /events payloads.
type readyDoc struct {
	Ready    bool       `json:"ready"`
	Since    time.Time  `json:"since"`
	ReadyAt  time.Time  `json:"ready_at,omitzero"`
	Checks   []checkDoc `json:"checks"`
	Warnings []string   `json:"warnings,omitempty"`
	Version  uint64     `json:"version,omitempty"`
}

type checkDoc struct {
	CheckStatus
	Excluded bool `json:"excluded,omitempty"`
}

func newReadyDoc(v verdict) readyDoc {
	d := readyDoc{Ready: v.ready, Since: v.since.UTC(), ReadyAt: v.readyAt.UTC(), Checks: make([]checkDoc, 0, len(v.checks))}
	for _, c := range v.checks {
		c.Since = c.Since.UTC()
		d.Checks = append(d.Checks, checkDoc{CheckStatus: c, Excluded: v.excluded[c.Name]})
	}
	return d
}

func wantsJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/json" {
			return true
		}
	}
	return false
}

func (h *Handler) respond(w http.ResponseWriter, r *http.Request, v verdict, verbose bool, unknown []string) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	code := http.StatusOK
	if !v.ready {
		code = http.StatusServiceUnavailable
	}
	if wantsJSON(r) {
		doc := newReadyDoc(v)
		if v.lagging {
			doc.Warnings = append(doc.Warnings, lagReason)
		}
		if len(unknown) > 0 {
			doc.Warnings = append(doc.Warnings, excludeWarning(unknown))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(doc)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	if v.ready && !verbose {
		fmt.Fprint(w, "ok")
		return
	}
	var b strings.Builder
	for _, c := range v.checks {
		switch {
		case v.excluded[c.Name]:
			fmt.Fprintf(&b, "[+]%s excluded: ok\n", c.Name)
		case c.OK:
			fmt.Fprintf(&b, "[+]%s ok\n", c.Name)
		default:
			fmt.Fprintf(&b, "[-]%s failed: %s\n", c.Name, c.Reason)
		}
	}
	if !v.ready && !v.readyAt.IsZero() {
		fmt.Fprintf(&b, "[-]stable-for failed: checks must hold for %s, ready at %s\n",
			h.gate.stableFor, v.readyAt.UTC().Format(time.RFC3339Nano))
	}
	if !v.ready && len(v.checks) == 0 {
		b.WriteString("[-]gate failed: checks not evaluated yet\n")
	}
	if v.lagging {
		b.WriteString(lagReason + "\n")
	}
	if len(unknown) > 0 {
		b.WriteString(excludeWarning(unknown) + "\n")
	}
	if v.ready {
		b.WriteString("readyz check passed\n")
	} else {
		b.WriteString("readyz check failed\n")
	}
	fmt.Fprint(w, b.String())
}

// lagReason explains a "not ready" that comes from the gate being behind
// the kernel state, not from a check.
var lagReason = fmt.Sprintf("[-]gate failed: the latest kernel state is not evaluated yet (after %s); not answering ready from an older one", maxEvalLag)

func excludeWarning(unknown []string) string {
	q := make([]string, len(unknown))
	for i, u := range unknown {
		q[i] = strconv.Quote(u)
	}
	return "warn: some checks cannot be excluded: no matches for " + strings.Join(q, ",")
}

// serveEvents streams gate transitions as Server-Sent Events. The first
// event is the current state; after that one event per transition, in
// order, none skipped:
//
//	id: <state version>
//	event: ready | not_ready
//	data: <the /ready JSON document>
//
// A ": heartbeat" comment is sent every Heartbeat. The stream ends when
// the client goes away or the handler is closed.
func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	select {
	case h.subscribers <- struct{}{}:
		defer func() { <-h.subscribers }()
	default:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many event subscribers", http.StatusTooManyRequests)
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush() // the stream is open, even while the first event waits for the gate
	write := func(s string) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(h.opts.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		if _, err := fmt.Fprint(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	event := func(st *State) bool {
		name := "not_ready"
		if st.Ready {
			name = "ready"
		}
		doc := newReadyDoc(verdict{ready: st.Ready, readyAt: st.ReadyAt, since: st.Since, checks: st.Checks})
		doc.Version = st.Version
		data, err := json.Marshal(doc)
		if err != nil {
			return false
		}
		return write(fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", st.Version, name, data))
	}

	// The first event, like every /ready answer, is no older than the
	// kernel state current now: it waits while the gate catches up.
	st, fresh, evaluated := h.gate.Current(r.Context())
	for !fresh {
		select {
		case <-evaluated:
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		}
		st, fresh, evaluated = h.gate.Current(r.Context())
	}
	if !event(st) {
		return
	}
	last := st.Ready
	heartbeat := h.clock.NewTimer(h.opts.Heartbeat)
	defer func() { heartbeat.Stop() }()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case <-heartbeat.C():
			if !write(": heartbeat\n\n") {
				return
			}
			heartbeat = h.clock.NewTimer(h.opts.Heartbeat)
		case <-st.Changed():
			for n := st.Next(); n != nil; n = n.Next() {
				st = n
				if st.Ready != last {
					if !event(st) {
						return
					}
					last = st.Ready
				}
			}
		}
	}
}
