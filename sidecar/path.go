package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/internal/redact"
	"golang.org/x/sys/unix"
)

// PathOptions configure the path check and required_interfaces: auto.
type PathOptions struct {
	// Targets are the vCenter endpoints: host names, IP literals,
	// host:port or URLs. Only the host part matters.
	Targets []string
	// Routes asks the kernel for its route (the collector).
	Routes RouteLookup
	// Resolver resolves host names (default net.DefaultResolver). IP
	// literals are never resolved.
	Resolver Resolver
	// ResolveTTL is how long a resolution is reused (default 30s). A failed
	// lookup is retried after 5s; meanwhile the previous addresses, if
	// any, are kept. Re-resolution happens on evaluation, never on a timer.
	ResolveTTL time.Duration
}

const (
	defaultResolveTTL = 30 * time.Second
	failedResolveTTL  = 5 * time.Second
	resolveTimeout    = 3 * time.Second
)

// PathCheck holds when, for every target, the kernel's route to one of its
// addresses goes out through a link that is up and the route's gateway
// neighbour, if any, is not FAILED. Addresses are tried in resolver order.
func PathCheck(opts PathOptions) (Check, error) {
	f, err := newPathFinder(opts)
	if err != nil {
		return nil, err
	}
	return NewCheck(CheckPath, func(ctx context.Context, in *Input) error {
		s := in.Snapshot
		if err := stateError(s); err != nil {
			return err
		}
		var problems []string
		for _, h := range f.trace(ctx, s, in.Now) {
			if h.err != nil {
				problems = append(problems, h.describe())
			}
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		return nil
	}), nil
}

type pathTarget struct {
	host    string
	literal netip.Addr // valid when host is an IP literal
}

type resolution struct {
	addrs   []netip.Addr
	err     error
	expires time.Time
}

// pathFinder follows the kernel's route to each target.
type pathFinder struct {
	targets  []pathTarget
	routes   RouteLookup
	resolver Resolver
	ttl      time.Duration

	mu    sync.Mutex
	cache map[string]resolution
}

func newPathFinder(opts PathOptions) (*pathFinder, error) {
	if opts.Routes == nil {
		return nil, errors.New("path check: no route lookup")
	}
	f := &pathFinder{routes: opts.Routes, resolver: opts.Resolver, ttl: opts.ResolveTTL, cache: map[string]resolution{}}
	if f.resolver == nil {
		f.resolver = net.DefaultResolver
	}
	if f.ttl <= 0 {
		f.ttl = defaultResolveTTL
	}
	seen := map[string]bool{}
	for _, raw := range opts.Targets {
		host, err := targetHost(raw)
		if err != nil {
			return nil, err
		}
		if seen[host] {
			continue
		}
		seen[host] = true
		t := pathTarget{host: host}
		if a, err := netip.ParseAddr(host); err == nil {
			t.literal = a.Unmap()
		}
		f.targets = append(f.targets, t)
	}
	if len(f.targets) == 0 {
		return nil, errors.New("path check: no targets")
	}
	return f, nil
}

// targetHost extracts the host of a vCenter endpoint. It never returns
// URL credentials.
func targetHost(raw string) (string, error) {
	host := ""
	switch {
	case strings.Contains(raw, "://"):
		u, err := url.Parse(raw)
		if err != nil {
			return "", fmt.Errorf("vCenter target: %w", redact.Error(err))
		}
		host = u.Hostname()
	default:
		if h, _, err := net.SplitHostPort(raw); err == nil {
			host = h
		} else {
			host = strings.TrimSuffix(strings.TrimPrefix(raw, "["), "]")
		}
	}
	if host == "" || strings.ContainsAny(host, "/@ ") {
		return "", fmt.Errorf("vCenter target %q: no host", redact.URL(raw))
	}
	return host, nil
}

// hop is the path to one target.
type hop struct {
	target string
	addr   netip.Addr // invalid when resolution failed
	link   string     // egress link, "" when there is no route
	err    error
}

func (h hop) describe() string {
	switch {
	case !h.addr.IsValid() || h.addr.String() == h.target:
		return h.target + ": " + h.err.Error()
	}
	return fmt.Sprintf("%s [%s]: %v", h.target, h.addr, h.err)
}

// trace returns one hop per target: the first address with a good path,
// or else the first address the kernel has a route for (so the failure
// names a link), or else the first address.
func (f *pathFinder) trace(ctx context.Context, s *collector.Snapshot, now time.Time) []hop {
	out := make([]hop, 0, len(f.targets))
	for _, t := range f.targets {
		addrs, err := f.addrs(ctx, t, now)
		if err != nil {
			out = append(out, hop{target: t.host, err: fmt.Errorf("resolve: %w", err)})
			continue
		}
		var best hop
		for i, a := range addrs {
			h := f.hop(ctx, s, t.host, a)
			if h.err == nil {
				best = h
				break
			}
			if i == 0 || (best.link == "" && h.link != "") {
				best = h
			}
		}
		out = append(out, best)
	}
	return out
}

func (f *pathFinder) addrs(ctx context.Context, t pathTarget, now time.Time) ([]netip.Addr, error) {
	if t.literal.IsValid() {
		return []netip.Addr{t.literal}, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	prev, ok := f.cache[t.host]
	if ok && now.Before(prev.expires) {
		return prev.addrs, prev.err
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	addrs, err := f.resolver.LookupNetIP(rctx, "ip", t.host)
	cancel()
	if err == nil && len(addrs) == 0 {
		err = errors.New("no addresses")
	}
	next := resolution{expires: now.Add(f.ttl)}
	if err != nil {
		// Keep what worked: a DNS hiccup is not a path outage.
		next = resolution{addrs: prev.addrs, expires: now.Add(failedResolveTTL)}
		if len(prev.addrs) == 0 {
			next.err = err
		}
	} else {
		for _, a := range addrs {
			next.addrs = append(next.addrs, a.Unmap())
		}
	}
	f.cache[t.host] = next
	return next.addrs, next.err
}

func (f *pathFinder) hop(ctx context.Context, s *collector.Snapshot, target string, a netip.Addr) hop {
	h := hop{target: target, addr: a}
	r, err := f.routes.RouteGet(ctx, a)
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) {
			h.err = fmt.Errorf("no route: %w", errno)
		} else {
			h.err = fmt.Errorf("route lookup: %w", err)
		}
		return h
	}
	if r.Type != collector.RouteUnicast && r.Type != collector.RouteLocal {
		h.err = fmt.Errorf("route is %s", r.Type)
		return h
	}
	l, ok := s.LinkByIndex(r.LinkIndex)
	if !ok {
		h.err = fmt.Errorf("egress link index %d unknown", r.LinkIndex)
		return h
	}
	h.link = l.Name
	if !l.Up {
		h.err = fmt.Errorf("egress link %s: %s", l.Name, linkCondition(s, l.Name))
		return h
	}
	if r.Gateway.IsValid() {
		gw := r.Gateway.Unmap()
		for _, n := range s.Neighbors {
			if n.LinkIndex == r.LinkIndex && n.IP.Unmap() == gw && n.State&collector.NeighFailed != 0 {
				h.err = fmt.Errorf("gateway %s on %s is FAILED (neighbour unreachable)", gw, l.Name)
				return h
			}
		}
	}
	return h
}

// egress returns the sorted, distinct egress links of the hops.
func egress(hops []hop) []string {
	var names []string
	for _, h := range hops {
		if h.link != "" && !slices.Contains(names, h.link) {
			names = append(names, h.link)
		}
	}
	slices.Sort(names)
	return names
}

// AutoRequired implements required_interfaces: auto. On every snapshot it
// asks the kernel for the route to each vCenter target and makes the
// egress links the collector's required interfaces, so the links check
// (and linkgate_network_up) follow route changes. When no target has a
// route it leaves the required list alone: the path check fails then, and
// the last egress link is still the most useful one to watch.
type AutoRequired struct {
	finder *pathFinder
	snaps  Snapshots
	set    RequiredSetter
	log    *slog.Logger
}

// NewAutoRequired returns an AutoRequired; start it with Run.
func NewAutoRequired(path PathOptions, snaps Snapshots, set RequiredSetter, logger *slog.Logger) (*AutoRequired, error) {
	f, err := newPathFinder(path)
	if err != nil {
		return nil, err
	}
	if snaps == nil || set == nil {
		return nil, errors.New("auto required interfaces: no snapshots or setter")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &AutoRequired{finder: f, snaps: snaps, set: set, log: logger}, nil
}

// Run follows snapshots until ctx ends.
func (a *AutoRequired) Run(ctx context.Context) error {
	for {
		s := a.snaps.Snapshot()
		if s.Version > 0 {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			names := egress(a.finder.trace(rctx, s, time.Now()))
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if len(names) > 0 && !slices.Equal(names, s.Network.Required) {
				a.log.Info("required interfaces follow the route to vCenter", "interfaces", names, "previous", s.Network.Required)
				a.set.SetRequired(names)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.Changed():
		}
	}
}
