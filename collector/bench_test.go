package collector

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/mdlayher/netlink"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"golang.org/x/sys/unix"
)

// Benchmarks for the cost a scrape and an event put on the exporter at
// 1000 interfaces. They measure; they assert nothing about time. The
// comparison with node_exporter is bench/scrape.sh; see bench/README.md.

// benchPairs veth pairs, both ends in one namespace: 1000 interfaces.
const benchPairs = 500

// quietFor is how long the snapshot must stay unchanged before timing
// starts, so that linkwatch events of the fresh links do not land inside
// the measurement.
const quietFor = 2 * time.Second

// namespace1000 creates a private namespace with 2*benchPairs veth
// interfaces in one `ip -batch` call: all administratively up, each with
// one IPv4 address (the pair shares a /30, so the main table holds a route
// per interface). IPv6 is off for the new links: its router solicitations,
// DAD and MLD reports keep creating and expiring multicast neighbour
// entries for tens of seconds, which would change the snapshot during the
// measurement. It then waits until the kernel has finished bringing the
// links up, so every benchmark starts from the same steady state.
func namespace1000(b *testing.B) *netnstest.NS {
	b.Helper()
	ns := netnstest.New(b)
	if err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0o644)
	}); err != nil {
		b.Fatal(err)
	}
	var cmds strings.Builder
	for i := range benchPairs {
		fmt.Fprintf(&cmds, "link add lgb%da type veth peer name lgb%db\n", i, i)
		subnet := fmt.Sprintf("10.%d.%d", 100+i/64, i%64*4)
		fmt.Fprintf(&cmds, "addr add %s.1/30 dev lgb%da\naddr add %s.2/30 dev lgb%db\n", subnet, i, subnet, i)
	}
	for i := range benchPairs {
		fmt.Fprintf(&cmds, "link set lgb%da up\nlink set lgb%db up\n", i, i)
	}
	file := filepath.Join(b.TempDir(), "links.batch")
	if err := os.WriteFile(file, []byte(cmds.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", ns.Name, "-batch", file).CombinedOutput(); err != nil {
		b.Fatalf("ip -n %s -batch: %v: %s", ns.Name, err, out)
	}
	settle(b, start(b, ns, Options{}))
	return ns
}

// settle waits until the snapshot holds every interface, all up, and then
// has not changed for quietFor.
func settle(b testing.TB, c *Collector) {
	b.Helper()
	deadline := time.After(3 * waitTimeout)
	for {
		s := c.Snapshot()
		wait := quietFor
		if !allUp(s) {
			wait = waitTimeout
		}
		select {
		case <-s.Changed():
		case <-time.After(wait):
			if allUp(s) {
				return
			}
		case <-deadline:
			b.Fatalf("snapshot did not settle at %d links up (version %d, %d links)", 2*benchPairs+1, s.Version, len(s.Links))
		}
	}
}

func allUp(s *Snapshot) bool {
	if len(s.Links) < 2*benchPairs+1 {
		return false
	}
	for _, l := range s.Links {
		if !l.Up {
			return false
		}
	}
	return true
}

// reportCPU adds cpu-ns/op: the process's CPU time (all threads, garbage
// collection included) per iteration. On a shared machine it is steadier
// than ns/op, which also counts time spent waiting for a CPU. Call it
// deferred, before b.Loop: defer reportCPU(b)().
func reportCPU(b *testing.B) func() {
	start := processCPU(b)
	return func() { b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op") }
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCollect1000 is one scrape of the collector alone at 1000
// interfaces through client_golang: Registry.Gather, as promhttp does
// before encoding.
//
//   - stats=cached: counters refreshed less often than scrapes arrive (the
//     default 1s bound with a faster scraper); no kernel round trip.
//   - stats=refresh: every scrape refreshes counters with one RTM_GETSTATS
//     dump, the cost of a scrape interval longer than StatsMinInterval.
//   - stats=cached/text: Gather plus text encoding (MetricFamilyToText),
//     the collector's share of a whole uncompressed /metrics response.
//   - stats=*/text+gzip: Gather, expfmt's text Encoder (as promhttp) and
//     gzip at BestSpeed: the whole compressed response body, comparable
//     with BenchmarkWriteText1000/stats=*/gzip.
//   - stats=cached/text+gzip-default: the same at gzip's default level,
//     which is what promhttp uses.
//   - stats=refresh/dump-only: the RTM_GETSTATS dump and its decoding
//     alone, i.e. what stats=refresh adds to stats=cached.
func BenchmarkCollect1000(b *testing.B) {
	ns := namespace1000(b)
	gather := func(b *testing.B, reg *prometheus.Registry, _ *Collector) {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
	text := func(b *testing.B, reg *prometheus.Registry, _ *Collector) {
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		for _, mf := range mfs {
			if _, err := expfmt.MetricFamilyToText(io.Discard, mf); err != nil {
				b.Fatal(err)
			}
		}
	}
	textGzip := func(level int) func(*testing.B, *prometheus.Registry, *Collector) {
		gz, _ := gzip.NewWriterLevel(io.Discard, level)
		return func(b *testing.B, reg *prometheus.Registry, _ *Collector) {
			mfs, err := reg.Gather()
			if err != nil {
				b.Fatal(err)
			}
			gz.Reset(io.Discard)
			enc := expfmt.NewEncoder(gz, expfmt.NewFormat(expfmt.TypeTextPlain))
			for _, mf := range mfs {
				if err := enc.Encode(mf); err != nil {
					b.Fatal(err)
				}
			}
			if err := gz.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, bc := range []struct {
		name     string
		interval time.Duration
		op       func(*testing.B, *prometheus.Registry, *Collector)
		scrape   bool // the op produces the whole exposition: report its series
	}{
		{"stats=cached", time.Hour, gather, true},
		{"stats=refresh", time.Nanosecond, gather, true},
		{"stats=cached/text", time.Hour, text, true},
		{"stats=cached/text+gzip", time.Hour, textGzip(gzip.BestSpeed), true},
		{"stats=refresh/text+gzip", time.Nanosecond, textGzip(gzip.BestSpeed), true},
		{"stats=cached/text+gzip-default", time.Hour, textGzip(gzip.DefaultCompression), true},
		{"stats=refresh/dump-only", time.Nanosecond, func(b *testing.B, _ *prometheus.Registry, c *Collector) {
			if len(c.stats()) < 2*benchPairs+1 {
				b.Fatal("counter refresh failed")
			}
		}, false},
	} {
		// Collectors stay (idle) until the benchmark ends.
		c := start(b, ns, Options{StatsMinInterval: bc.interval})
		settle(b, c)
		reg := prometheus.NewRegistry()
		reg.MustRegister(c)
		mfs, err := reg.Gather() // also warms the counter cache
		if err != nil {
			b.Fatal(err)
		}
		series := 0
		for _, mf := range mfs {
			series += len(mf.GetMetric())
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				bc.op(b, reg, c)
			}
			if bc.scrape {
				b.ReportMetric(float64(series), "series")
			}
		})
	}
}

// BenchmarkWriteText1000 is the same scrape through WriteText, the
// collector's direct text writer:
//
//   - stats=cached, stats=refresh: the text alone (no gzip), as
//     BenchmarkCollect1000/stats=cached/text.
//   - stats=*/gzip: the text through gzip at BestSpeed, the whole
//     compressed body, as BenchmarkCollect1000/stats=*/text+gzip.
func BenchmarkWriteText1000(b *testing.B) {
	ns := namespace1000(b)
	var gz *gzip.Writer
	for _, bc := range []struct {
		name     string
		interval time.Duration
		gzip     bool
	}{
		{"stats=cached", time.Hour, false},
		{"stats=refresh", time.Nanosecond, false},
		{"stats=cached/gzip", time.Hour, true},
		{"stats=refresh/gzip", time.Nanosecond, true},
	} {
		c := start(b, ns, Options{StatsMinInterval: bc.interval})
		settle(b, c)
		var text countingWriter
		if err := c.WriteText(&text); err != nil { // also warms the counter cache
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				var w io.Writer = io.Discard
				if bc.gzip {
					if gz == nil {
						gz, _ = gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
					}
					gz.Reset(io.Discard)
					w = gz
				}
				if err := c.WriteText(w); err != nil {
					b.Fatal(err)
				}
				if bc.gzip {
					if err := gz.Close(); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(text.lines), "series")
			b.ReportMetric(float64(text.bytes), "text-bytes")
		})
	}
}

// countingWriter counts bytes and sample lines (lines not starting with #).
type countingWriter struct {
	bytes, lines int
	midLine      bool
}

func (w *countingWriter) Write(p []byte) (int, error) {
	for _, c := range p {
		if !w.midLine && c != '#' {
			w.lines++
		}
		w.midLine = c != '\n'
	}
	w.bytes += len(p)
	return len(p), nil
}

// flapState fills a state from one full dump of a namespace of 1000
// links, as Run does at start, without starting the event loop. It
// returns the kernel's RTM_NEWLINK of one link taking it down and up.
func flapState(b *testing.B) (*Collector, *state, [2]netlink.Message) {
	b.Helper()
	ns := namespace1000(b)
	s, st, err := newStatic(context.Background(), Options{NetNS: ns.Path})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	if len(st.links) < 2*benchPairs+1 {
		b.Fatalf("dump has %d links, want %d", len(st.links), 2*benchPairs+1)
	}
	c := s.c
	up := linkMessage(b, c, "lgb0a")
	ns.IP(b, "link", "set", "lgb0a", "down")
	down := linkMessage(b, c, "lgb0a")
	ns.IP(b, "link", "set", "lgb0a", "up")
	return c, st, [2]netlink.Message{down, up}
}

// linkMessage returns the kernel's RTM_NEWLINK for the named link, exactly
// as a dump (or an event) delivers it.
func linkMessage(b *testing.B, c *Collector, name string) netlink.Message {
	b.Helper()
	msgs, err := c.dump(context.Background(), unix.RTM_GETLINK, &rtnetlink.LinkMessage{})
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range msgs {
		var lm rtnetlink.LinkMessage
		if err := lm.UnmarshalBinary(m.Data); err == nil && lm.Attributes != nil && lm.Attributes.Name == name {
			m.Header.Type = unix.RTM_NEWLINK
			return m
		}
	}
	b.Fatalf("no link %s in dump", name)
	return netlink.Message{}
}

// BenchmarkApplyEvent is the event loop's work for one RTM_NEWLINK of a
// veth (a real kernel message, ~1.5 KiB with stats and AF_SPEC) against a
// state of 1000 links, without publishing.
//
//   - unchanged: the same message again (counter-only updates).
//   - flap: alternately down and up, so every message changes the link.
func BenchmarkApplyEvent(b *testing.B) {
	_, st, msgs := flapState(b)
	up := msgs[1]
	now := time.Now()

	b.Run("unchanged", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		b.SetBytes(int64(len(up.Data)))
		for b.Loop() {
			if _, err := st.apply(up, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	// With -count the sub-benchmark runs again on the same state: keep
	// alternating from where the last run stopped.
	i := 0
	b.Run("flap", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		b.SetBytes(int64(len(up.Data)))
		for b.Loop() {
			ch, err := st.apply(msgs[i&1], now)
			if err != nil {
				b.Fatal(err)
			}
			if !ch.changed {
				b.Fatal("flap did not change the link")
			}
			i++
		}
	})
}

// BenchmarkSnapshotBuild1000 is the cost of publishing a change at 1000
// links (plus, as dumped from the kernel, 1002 addresses and 1000 routes):
//
//   - snapshot: copying and sorting every table into an immutable
//     Snapshot, as after a full dump (resync).
//   - publish: that, plus the network status aggregate and the swap that
//     wakes consumers.
//   - publish/link-flap: applying one real RTM_NEWLINK that takes a link
//     down or up, then publishing, i.e. what an event batch that changes
//     one link pays: only the links are re-sorted.
func BenchmarkSnapshotBuild1000(b *testing.B) {
	c, st, msgs := flapState(b)
	b.Run("snapshot", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			st.touch(allTables)
			_ = st.snapshot()
		}
	})
	b.Run("publish", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			st.touch(allTables)
			c.publish(st, true)
		}
	})
	i := 0
	now := time.Now()
	b.Run("publish/link-flap", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			if ch, err := st.apply(msgs[i&1], now); err != nil || !ch.changed {
				b.Fatalf("flap: %v, %+v", err, ch)
			}
			i++
			c.publish(st, true)
		}
	})
}
