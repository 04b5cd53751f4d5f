package collector

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/netnstest"
	"golang.org/x/sys/unix"
)

// Event storm benchmarks: how the collector keeps up when the kernel
// changes many links at once, driven by `ip -batch` (a child process, so
// its CPU is not in the figures). They measure; nothing asserts a timing.
// See "Event storms" in bench/README.md.
//
// Every iteration ends when the collector has converged: its snapshot's
// links equal a dump of the kernel's links (index, name, admin state,
// operstate, MTU) in their final state, and stay equal for stormHold.
// The dump is the benchmark's own (linkDumper), not `ip -j`, which takes
// 30+ ms per call at 1000 links.
//
// Metrics, per iteration:
//
//   - events: rtnetlink messages the collector counted (c.events), from the
//     start of the batch to the end of the hold. Messages it discards
//     unread after an overflow, and those the kernel dropped, are not in it.
//   - cpu-ms: the test process's CPU (getrusage RUSAGE_SELF: all threads,
//     GC included; children such as ip are not in it) over the same span,
//     minus the comparator's own thread CPU. cpu-ms/1000events: the same
//     per 1000 events.
//   - converge-ms: from the exit of the ip process until the collector
//     published the first snapshot of the final matching streak.
//   - kernel-ms: from the exit of ip until a dump first showed the kernel's
//     final state (operstate follows admin changes through linkwatch, up to
//     about a second later); 10 ms resolution.
//   - resyncs: the collector's re-dumps of any reason (ResyncFlush, the
//     route and neighbour re-dump after a link goes down, included);
//     overflows: those after ENOBUFS. drops: messages the kernel could not
//     queue on the collector's event socket (Drops in /proc/net/netlink).
//   - events/s: events over the time from batch start to convergence.
//   - ip-ms, ip-cpu-ms: the ip process's wall time and its own CPU (user +
//     system: the kernel's work on its requests, notifications included).
//   - cmp-cpu-ms: the comparator's thread CPU, already subtracted above.
//
// STORM_BUSY=1 keeps one CPU busy with a shell loop during the storms.

const (
	// stormRounds: BenchmarkStorm1000 takes every link down and then up
	// this many times: 10 × 1000 down/up pairs, 20,000 ip commands.
	stormRounds = 10
	// stormCreatePairs: BenchmarkCreateDeleteStorm2000 creates and deletes
	// this many veth pairs.
	stormCreatePairs = 1000
	// stormGroup is the link group of the created pairs (deleted as one).
	stormGroup = 77
	// stormHold is how long the snapshot must keep matching the kernel.
	stormHold = 500 * time.Millisecond
	// stormPoll is the comparator's dump interval while the kernel is not
	// yet in its final state, and its fallback when nothing changes.
	stormPoll = 10 * time.Millisecond
	// stormSustain is how long one BenchmarkSustainedRate1000 run lasts.
	stormSustain = 2 * time.Second
	stormTimeout = time.Minute
)

// BenchmarkStorm1000 is one ip -batch of 10 rounds over 1000 up links;
// each round sets all of them down, then all of them up (down first,
// up second, in the same link order). The namespace ends every round, and
// the storm, with every link up.
func BenchmarkStorm1000(b *testing.B) {
	ns, names := stormNamespace(b)
	c := start(b, ns, Options{})
	settle(b, c)
	d := newLinkDumper(b, ns)
	file := writeStormFile(b, "storm", stormLines(names, stormRounds))
	final := allLinksUp(len(names) + 1)
	busyNeighbour(b)
	var m stormMetrics
	b.ResetTimer()
	for range b.N {
		m.add(stormOnce(b, c, d, func() batchRun { return runBatch(b, ns, file) }, final))
	}
	m.report(b)
}

// BenchmarkCreateDeleteStorm2000 starts from a namespace holding only lo.
// Each iteration runs two batches and waits for convergence after each:
// one creates 1000 veth pairs (2000 links, left down), the other deletes
// them all with one `link del group`. Deleting pair by pair takes about
// 17 ms per pair in the kernel (an RCU grace period each), so 17 s at a
// rate any collector follows; the group delete removes 2000 links in
// about 0.2 s. converge-ms is after the delete (no deleted link left),
// create-converge-ms after the create; the other metrics cover both.
func BenchmarkCreateDeleteStorm2000(b *testing.B) {
	ns := netnstest.New(b)
	disableIPv6(b, ns)
	c := start(b, ns, Options{})
	quiet(b, c)
	d := newLinkDumper(b, ns)
	var create strings.Builder
	for i := range stormCreatePairs {
		fmt.Fprintf(&create, "link add lgc%da group %d type veth peer name lgc%db group %d\n", i, stormGroup, i, stormGroup)
	}
	createFile := writeStormFile(b, "create", create.String())
	deleteFile := writeStormFile(b, "delete", fmt.Sprintf("link del group %d\n", stormGroup))
	busyNeighbour(b)
	var m stormMetrics
	var createConverge time.Duration
	b.ResetTimer()
	for range b.N {
		cr := stormOnce(b, c, d, func() batchRun { return runBatch(b, ns, createFile) }, linkCount(2*stormCreatePairs+1))
		del := stormOnce(b, c, d, func() batchRun { return runBatch(b, ns, deleteFile) }, linkCount(1))
		createConverge += cr.converge
		m.add(stormResult{
			events:    cr.events + del.events,
			resyncs:   cr.resyncs + del.resyncs,
			overflows: cr.overflows + del.overflows,
			drops:     cr.drops + del.drops,
			cpu:       cr.cpu + del.cpu,
			cmpCPU:    cr.cmpCPU + del.cmpCPU,
			converge:  del.converge,
			kernel:    del.kernel,
			wall:      cr.wall + del.wall,
			ipWall:    cr.ipWall + del.ipWall,
			ipCPU:     cr.ipCPU + del.ipCPU,
		})
	}
	m.report(b)
	b.ReportMetric(createConverge.Seconds()*1e3/float64(b.N), "create-converge-ms")
}

// BenchmarkSustainedRate1000 paces link down/up commands into one
// `ip -batch -` at a fixed rate for about stormSustain, with the same
// pattern as BenchmarkStorm1000 (whole rounds of all down, then all up:
// 2000 commands a round, at least one), and then waits for convergence. ops/s is the rate
// the commands were actually consumed at (ip exits after the last one);
// events/s the rate the collector processed events at, including the
// time it needed to catch up after ip exited. A rate the collector
// sustains shows as a converge-ms near kernel-ms and no overflows.
func BenchmarkSustainedRate1000(b *testing.B) {
	ns, names := stormNamespace(b)
	d := newLinkDumper(b, ns)
	final := allLinksUp(len(names) + 1)
	busyNeighbour(b)
	for _, rate := range []int{500, 1000, 2000, 4000, 8000} {
		rounds := max(1, int(float64(rate)*stormSustain.Seconds())/(2*len(names)))
		lines := strings.Split(strings.TrimSuffix(stormLines(names, rounds), "\n"), "\n")
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			// A collector per rate, stopped when the rate is done: one
			// left behind in a wrong state would fail the next rates too.
			c := start(b, ns, Options{})
			settle(b, c)
			b.ResetTimer()
			var m stormMetrics
			for range b.N {
				m.add(stormOnce(b, c, d, func() batchRun { return pacedBatch(b, ns, lines, rate) }, final))
			}
			m.report(b)
			b.ReportMetric(float64(len(lines))*float64(b.N)/m.ipWall.Seconds(), "ops/s")
		})
	}
}

// stormNamespace is namespace1000 without the collector it starts and
// keeps until the benchmark ends, which would follow the storm too and
// double the CPU measured. The links are the same: benchPairs veth pairs
// with both ends in the namespace, a /30 per pair, all up, IPv6 off. It
// returns the namespace and the names of the veth ends.
func stormNamespace(b *testing.B) (*netnstest.NS, []string) {
	b.Helper()
	ns := netnstest.New(b)
	disableIPv6(b, ns)
	var cmds strings.Builder
	var names []string
	for i := range benchPairs {
		fmt.Fprintf(&cmds, "link add lgb%da type veth peer name lgb%db\n", i, i)
		subnet := fmt.Sprintf("10.%d.%d", 100+i/64, i%64*4)
		fmt.Fprintf(&cmds, "addr add %s.1/30 dev lgb%da\naddr add %s.2/30 dev lgb%db\n", subnet, i, subnet, i)
		names = append(names, fmt.Sprintf("lgb%da", i), fmt.Sprintf("lgb%db", i))
	}
	for _, n := range names {
		fmt.Fprintf(&cmds, "link set %s up\n", n)
	}
	runBatch(b, ns, writeStormFile(b, "links", cmds.String()))
	return ns, names
}

// disableIPv6 turns IPv6 off for links created from now on in ns: its
// router solicitations, DAD and MLD would keep changing neighbours and
// addresses for a minute after every link comes up.
func disableIPv6(b *testing.B, ns *netnstest.NS) {
	b.Helper()
	if err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0o644)
	}); err != nil {
		b.Fatal(err)
	}
}

// stormLines returns rounds × (every link down, then every link up) as
// ip batch commands.
func stormLines(names []string, rounds int) string {
	var s strings.Builder
	for range rounds {
		for _, state := range []string{"down", "up"} {
			for _, n := range names {
				fmt.Fprintf(&s, "link set %s %s\n", n, state)
			}
		}
	}
	return s.String()
}

func writeStormFile(b *testing.B, name, content string) string {
	b.Helper()
	file := filepath.Join(b.TempDir(), name+".batch")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		b.Fatal(err)
	}
	return file
}

// quiet waits until the snapshot has not changed for quietFor.
func quiet(b *testing.B, c *Collector) {
	b.Helper()
	deadline := time.After(3 * waitTimeout)
	for {
		select {
		case <-c.Snapshot().Changed():
		case <-time.After(quietFor):
			return
		case <-deadline:
			b.Fatal("snapshot did not settle")
		}
	}
}

// busyNeighbour, with STORM_BUSY=1, runs a shell busy loop until the
// benchmark ends, so the collector has one CPU fewer.
func busyNeighbour(b *testing.B) {
	b.Helper()
	if os.Getenv("STORM_BUSY") != "1" {
		return
	}
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill() // this PID only
		_ = cmd.Wait()
	})
}

// batchRun is one ip process.
type batchRun struct {
	start, exit time.Time
	cpu         time.Duration // its own user + system CPU
}

func runBatch(b *testing.B, ns *netnstest.NS, file string) batchRun {
	b.Helper()
	cmd := exec.Command("ip", "-n", ns.Name, "-batch", file)
	out := ipOutput(b, cmd)
	r := batchRun{start: time.Now()}
	err := cmd.Run()
	r.exit = time.Now()
	return r.done(b, cmd, err, out)
}

// ipOutput sends cmd's output to a file, not a pipe, so that Wait returns
// as the process exits rather than after copying goroutines finish.
func ipOutput(b *testing.B, cmd *exec.Cmd) *os.File {
	b.Helper()
	f, err := os.CreateTemp(b.TempDir(), "ip-output")
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	return f
}

func (r batchRun) done(b *testing.B, cmd *exec.Cmd, err error, out *os.File) batchRun {
	b.Helper()
	out.Close()
	if err != nil {
		text, _ := os.ReadFile(out.Name())
		b.Fatalf("%s: %v: %s", strings.Join(cmd.Args, " "), err, text)
	}
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r
}

// pacedBatch feeds lines to `ip -batch -` at rate lines per second, in
// writes every 5 ms. If ip is slower, the pipe fills and the writes
// block: ops/s then shows the rate ip managed.
func pacedBatch(b *testing.B, ns *netnstest.NS, lines []string, rate int) batchRun {
	b.Helper()
	cmd := exec.Command("ip", "-n", ns.Name, "-batch", "-")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out := ipOutput(b, cmd)
	r := batchRun{start: time.Now()}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	tick := time.NewTicker(5 * time.Millisecond)
	var buf []byte
	for sent := 0; sent < len(lines); {
		<-tick.C
		due := min(len(lines), int(float64(rate)*time.Since(r.start).Seconds()))
		buf = buf[:0]
		for ; sent < due; sent++ {
			buf = append(append(buf, lines[sent]...), '\n')
		}
		if _, err := stdin.Write(buf); err != nil {
			break // ip died: Wait reports it
		}
	}
	tick.Stop()
	stdin.Close()
	err = cmd.Wait() // the stdin pipe is closed: nothing left to copy
	r.exit = time.Now()
	return r.done(b, cmd, err, out)
}

// stormResult is one batch until convergence.
type stormResult struct {
	events, resyncs, overflows uint64
	drops                      uint64        // messages the kernel dropped for the event socket
	cpu, cmpCPU                time.Duration // process CPU without the comparator; the comparator's
	converge, kernel           time.Duration // after ip's exit
	wall                       time.Duration // batch start to convergence
	ipWall, ipCPU              time.Duration
}

// stormOnce runs one batch and waits until the collector has converged
// to the kernel's final state (final reports whether a dump is in it).
func stormOnce(b *testing.B, c *Collector, d *linkDumper, batch func() batchRun, final func([]kernelLink) bool) stormResult {
	b.Helper()
	drops0 := d.socketDrops()
	events0, resyncs0, overflows0 := collectorCounters(c)
	cmp0 := d.cpu
	cpu0 := processCPU(b)
	run := batch()
	cv := converge(b, c, d, final)
	cpu := processCPU(b)
	events, resyncs, overflows := collectorCounters(c)
	drops := d.socketDrops()
	if drops < drops0 { // a new socket (the collector reconnected)
		drops0 = 0
	}
	r := stormResult{
		drops:     drops - drops0,
		events:    events - events0,
		resyncs:   resyncs - resyncs0,
		overflows: overflows - overflows0,
		cmpCPU:    d.cpu - cmp0,
		converge:  max(0, cv.at.Sub(run.exit)),
		kernel:    max(0, cv.kernelAt.Sub(run.exit)),
		wall:      run.exit.Sub(run.start) + max(0, cv.at.Sub(run.exit)),
		ipWall:    run.exit.Sub(run.start),
		ipCPU:     run.cpu,
	}
	r.cpu = cpu - cpu0 - r.cmpCPU
	return r
}

func collectorCounters(c *Collector) (events, resyncs, overflows uint64) {
	for _, n := range c.events {
		events += n.Load()
	}
	for _, n := range c.resyncs {
		resyncs += n.Load()
	}
	return events, resyncs, c.resyncs[ResyncOverflow].Load()
}

// stormMetrics sums stormResults over b.N iterations.
type stormMetrics struct {
	stormResult
	eventsPerSec float64
}

func (m *stormMetrics) add(r stormResult) {
	m.events += r.events
	m.resyncs += r.resyncs
	m.overflows += r.overflows
	m.drops += r.drops
	m.cpu += r.cpu
	m.cmpCPU += r.cmpCPU
	m.converge += r.converge
	m.kernel += r.kernel
	m.wall += r.wall
	m.ipWall += r.ipWall
	m.ipCPU += r.ipCPU
	m.eventsPerSec += float64(r.events) / r.wall.Seconds()
}

func (m *stormMetrics) report(b *testing.B) {
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return d.Seconds() * 1e3 / n }
	b.ReportMetric(float64(m.events)/n, "events")
	b.ReportMetric(ms(m.cpu), "cpu-ms")
	if m.events > 0 {
		b.ReportMetric(m.cpu.Seconds()*1e3/(float64(m.events)/1000), "cpu-ms/1000events")
	}
	b.ReportMetric(ms(m.converge), "converge-ms")
	b.ReportMetric(ms(m.kernel), "kernel-ms")
	b.ReportMetric(float64(m.resyncs)/n, "resyncs")
	b.ReportMetric(float64(m.overflows)/n, "overflows")
	b.ReportMetric(float64(m.drops)/n, "drops")
	b.ReportMetric(m.eventsPerSec/n, "events/s")
	b.ReportMetric(ms(m.ipWall), "ip-ms")
	b.ReportMetric(ms(m.ipCPU), "ip-cpu-ms")
	b.ReportMetric(ms(m.cmpCPU), "cmp-cpu-ms")
}

// allLinksUp is the final state of a storm: n links, all administratively
// up and operationally up (or unknown, as lo).
func allLinksUp(n int) func([]kernelLink) bool {
	return func(links []kernelLink) bool {
		if len(links) != n {
			return false
		}
		for _, l := range links {
			if !l.adminUp || (l.oper != OperUp && l.oper != OperUnknown) {
				return false
			}
		}
		return true
	}
}

// linkCount is the final state of a create or delete batch: n links.
// Created veths are down from the start, with nothing for linkwatch to
// change later.
func linkCount(n int) func([]kernelLink) bool {
	return func(links []kernelLink) bool { return len(links) == n }
}

type convergence struct {
	at       time.Time // Taken of the first snapshot of the final matching streak
	kernelAt time.Time // when a dump first showed the final state
}

// converge waits until the snapshot's links equal the kernel's in their
// final state, and keep equal for stormHold. While the kernel is not final
// it dumps every stormPoll (a snapshot cannot match before); then it
// compares each new snapshot with that dump, and dumps again to confirm at
// the end of the hold. A streak restarts at any mismatch, and at any
// snapshot version it did not see (one it missed may have differed). The
// goroutine stays on one thread so that RUSAGE_THREAD gives the
// comparator's CPU, which the caller subtracts.
func converge(b *testing.B, c *Collector, d *linkDumper, final func([]kernelLink) bool) convergence {
	b.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var r convergence
	deadline := time.Now().Add(stormTimeout)
	kernelFinal := false
	var streak, prev *Snapshot
	var streakSeen time.Time
	for {
		s := c.Snapshot()
		t0 := threadCPU(b)
		if !kernelFinal {
			d.mustDump(b)
			if kernelFinal = final(d.links); kernelFinal {
				r.kernelAt = time.Now()
			}
		}
		match := kernelFinal && d.matches(s)
		d.cpu += threadCPU(b) - t0
		switch {
		case !match:
			streak = nil
		case streak == nil || prev == nil || s.Version != prev.Version && s.Version != prev.Version+1:
			streak, streakSeen = s, time.Now()
		}
		prev = s
		if streak != nil && time.Since(streakSeen) >= stormHold && c.Snapshot() == s {
			t0 := threadCPU(b)
			d.mustDump(b)
			ok := final(d.links) && d.matches(s)
			d.cpu += threadCPU(b) - t0
			if ok {
				r.at = streak.Taken
				return r
			}
			kernelFinal, streak = false, nil // the kernel changed after all
			continue
		}
		if time.Now().After(deadline) {
			d.mustDump(b)
			events, resyncs, overflows := collectorCounters(c)
			queued, drops, err := d.eventSocket()
			b.Fatalf("no convergence %v after the batch: snapshot version %d, published %v ago, %d links; kernel %d links, in final state %v; "+
				"collector totals: %d events, %d resyncs (%d overflows), %d decode errors, alive %v; "+
				"its event socket: %d bytes queued, %d messages dropped since it opened (%v)\n%s",
				stormTimeout, s.Version, time.Since(s.Taken).Round(time.Millisecond), len(s.Links), len(d.links), final(d.links),
				events, resyncs, overflows, c.decodeErrors.Load(), c.Alive(), queued, drops, err, d.diff(c.Snapshot()))
		}
		switch {
		case !kernelFinal:
			time.Sleep(stormPoll)
		case streak != nil:
			select {
			case <-s.Changed():
			case <-time.After(stormHold - time.Since(streakSeen)):
			}
		default:
			select {
			case <-s.Changed():
			case <-time.After(stormPoll):
			}
		}
	}
}

func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// kernelLink is a link as the comparator's dump saw it.
type kernelLink struct {
	index   int
	mtu     uint32
	adminUp bool
	oper    OperState
	nameLen uint8
	name    [unix.IFNAMSIZ]byte
}

// linkDumper dumps the namespace's links on its own rtnetlink socket and
// compares them with a snapshot. It reuses its buffers, so it adds no
// garbage collection to the process CPU measured.
type linkDumper struct {
	ns    *netnstest.NS
	fd    int
	seq   uint32
	req   []byte
	buf   []byte
	links []kernelLink // sorted by index
	cpu   time.Duration
}

// rtextFilterSkipStats (RTEXT_FILTER_SKIP_STATS, include/uapi/linux/rtnetlink.h)
// leaves the 64-bit counters out of a link dump.
const rtextFilterSkipStats = 1 << 3

func newLinkDumper(b *testing.B, ns *netnstest.NS) *linkDumper {
	b.Helper()
	d := &linkDumper{ns: ns, fd: -1, req: make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfInfomsg+8), buf: make([]byte, 1<<20)}
	if err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		d.fd = fd
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(d.fd) })
	if err := unix.SetsockoptTimeval(d.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10}); err != nil {
		b.Fatal(err)
	}
	d.mustDump(b) // sizes d.links
	return d
}

func (d *linkDumper) mustDump(b *testing.B) {
	var err error
	for range 5 {
		var interrupted bool
		if interrupted, err = d.dump(); err == nil && !interrupted {
			slices.SortFunc(d.links, func(x, y kernelLink) int { return cmp.Compare(x.index, y.index) })
			return
		}
		if err == nil {
			err = errors.New("link dump interrupted by changes 5 times")
		}
	}
	b.Fatal(err)
}

func (d *linkDumper) dump() (interrupted bool, err error) {
	ne := binary.NativeEndian
	d.seq++
	req := d.req
	clear(req)
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.RTM_GETLINK)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], d.seq)
	attr := req[unix.SizeofNlMsghdr+unix.SizeofIfInfomsg:] // ifinfomsg all zero: AF_UNSPEC
	ne.PutUint16(attr[0:], 8)
	ne.PutUint16(attr[2:], unix.IFLA_EXT_MASK)
	ne.PutUint32(attr[4:], rtextFilterSkipStats)
	if _, err := unix.Write(d.fd, req); err != nil { // unconnected: to the kernel
		return false, fmt.Errorf("link dump request: %w", err)
	}
	d.links = d.links[:0]
	for {
		n, err := unix.Read(d.fd, d.buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("link dump: %w", err)
		}
		for p := d.buf[:n]; len(p) >= unix.SizeofNlMsghdr; {
			l := int(ne.Uint32(p[0:]))
			if l < unix.SizeofNlMsghdr || l > len(p) {
				return false, fmt.Errorf("link dump: bad message length %d", l)
			}
			typ, flags, seq := ne.Uint16(p[4:]), ne.Uint16(p[6:]), ne.Uint32(p[8:])
			msg := p[unix.SizeofNlMsghdr:l]
			p = p[min(len(p), (l+3)&^3):]
			if seq != d.seq {
				continue
			}
			if flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch typ {
			case unix.NLMSG_DONE:
				return interrupted, nil
			case unix.NLMSG_ERROR:
				if len(msg) >= 4 {
					if e := int32(ne.Uint32(msg)); e != 0 {
						return false, fmt.Errorf("link dump: %w", unix.Errno(-e))
					}
				}
			case unix.RTM_NEWLINK:
				if len(msg) >= unix.SizeofIfInfomsg {
					d.links = append(d.links, parseKernelLink(msg))
				}
			}
		}
	}
}

// parseKernelLink reads an ifinfomsg and the attributes compared.
func parseKernelLink(msg []byte) kernelLink {
	ne := binary.NativeEndian
	k := kernelLink{
		index:   int(int32(ne.Uint32(msg[4:]))),
		adminUp: ne.Uint32(msg[8:])&unix.IFF_UP != 0,
	}
	for a := msg[unix.SizeofIfInfomsg:]; len(a) >= 4; {
		l := int(ne.Uint16(a[0:]))
		if l < 4 || l > len(a) {
			break
		}
		v := a[4:l]
		switch ne.Uint16(a[2:]) & 0x3fff { // without NLA_F_NESTED, NLA_F_NET_BYTEORDER
		case unix.IFLA_IFNAME:
			if i := slices.Index(v, 0); i >= 0 {
				v = v[:i]
			}
			k.nameLen = uint8(copy(k.name[:], v))
		case unix.IFLA_MTU:
			if len(v) >= 4 {
				k.mtu = ne.Uint32(v)
			}
		case unix.IFLA_OPERSTATE:
			if len(v) >= 1 {
				k.oper = OperState(v[0])
			}
		}
		a = a[min(len(a), (l+3)&^3):]
	}
	return k
}

// matches reports whether the snapshot has exactly the dumped links, with
// the same names, admin states, operstates and MTUs.
func (d *linkDumper) matches(s *Snapshot) bool {
	if len(s.Links) != len(d.links) {
		return false
	}
	for i := range s.Links {
		l := &s.Links[i]
		j, ok := slices.BinarySearchFunc(d.links, l.Index, func(k kernelLink, ix int) int { return cmp.Compare(k.index, ix) })
		if !ok {
			return false
		}
		k := &d.links[j]
		if string(k.name[:k.nameLen]) != l.Name || k.adminUp != l.AdminUp || k.oper != l.OperState || k.mtu != l.MTU {
			return false
		}
	}
	return true
}

// diff describes up to 10 links that differ between the last dump and s.
func (d *linkDumper) diff(s *Snapshot) string {
	var out []string
	seen := map[int]bool{}
	for _, l := range s.Links {
		seen[l.Index] = true
		j, ok := slices.BinarySearchFunc(d.links, l.Index, func(k kernelLink, ix int) int { return cmp.Compare(k.index, ix) })
		snap := fmt.Sprintf("%s admin=%v oper=%v mtu=%d", l.Name, l.AdminUp, l.OperState, l.MTU)
		if !ok {
			out = append(out, fmt.Sprintf("link %d: snapshot %s, not in the kernel", l.Index, snap))
			continue
		}
		k := d.links[j]
		kern := fmt.Sprintf("%s admin=%v oper=%v mtu=%d", k.name[:k.nameLen], k.adminUp, k.oper, k.mtu)
		if kern != snap {
			out = append(out, fmt.Sprintf("link %d: snapshot %s, kernel %s", l.Index, snap, kern))
		}
	}
	for _, k := range d.links {
		if !seen[k.index] {
			out = append(out, fmt.Sprintf("link %d: kernel %s, not in the snapshot", k.index, k.name[:k.nameLen]))
		}
	}
	n := len(out)
	if len(out) > 10 {
		out = out[:10]
	}
	return fmt.Sprintf("%d links differ:\n%s", n, strings.Join(out, "\n"))
}

// eventSocket reads the collector's event socket's line in the
// namespace's /proc/net/netlink: the one rtnetlink socket of a process
// (Pid not 0) subscribed to multicast groups. queued is Rmem, bytes
// waiting; drops counts messages the kernel could not queue.
func (d *linkDumper) eventSocket() (queued, drops uint64, err error) {
	var text []byte
	if err := d.ns.Do(func() (err error) {
		text, err = os.ReadFile("/proc/thread-self/net/netlink")
		return err
	}); err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(text), "\n") {
		// sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
		f := strings.Fields(line)
		if len(f) >= 9 && f[1] == "0" && f[2] != "0" && f[3] != "00000000" {
			queued, err1 := strconv.ParseUint(f[4], 10, 64)
			drops, err2 := strconv.ParseUint(f[8], 10, 64)
			return queued, drops, errors.Join(err1, err2)
		}
	}
	return 0, 0, errors.New("no event socket in /proc/net/netlink")
}

// socketDrops is eventSocket's drop count, 0 if it cannot be read.
func (d *linkDumper) socketDrops() uint64 {
	_, drops, _ := d.eventSocket()
	return drops
}
