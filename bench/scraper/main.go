// Command scraper scrapes Prometheus exporters back to back (or paced) and
// reports what each scrape cost the exporter process: CPU from /proc, wall
// time seen by the client, memory, response size and series count. It is
// bench/scrape.sh's measuring instrument: the standard library plus
// x/sys/unix (already a module dependency) for setns.
//
// Targets are scraped in interleaved blocks, so a change in load from
// other work on the machine hits every target alike. A target may live in
// another network namespace: its connections are then dialed from a thread
// switched into that namespace, and the client stays in the host's.
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// target is one exporter process and its /metrics URL.
type target struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	URL   string `json:"url"`
	NetNS string `json:"netns,omitempty"`

	client *http.Client
}

// cpu is a process's CPU time consumed so far, two ways.
type cpu struct {
	ticks uint64        // utime+stime from /proc/PID/stat, in CLK_TCK units
	run   time.Duration // sum of sum_exec_runtime over /proc/PID/task/*/schedstat
}

// result is what was measured for one target.
type result struct {
	Target  target `json:"target"`
	Scrapes int    `json:"scrapes"`
	// CPU consumed by the exporter while its scrapes ran (back to back: only
	// during its own blocks; paced: over the whole run, idle gaps included).
	CPUPerScrapeStat      float64 `json:"cpu_seconds_per_scrape_stat"`
	CPUPerScrapeSchedstat float64 `json:"cpu_seconds_per_scrape_schedstat"`
	// CPU per second while nobody scraped, before the run.
	IdleCPUPerSecond float64   `json:"idle_cpu_seconds_per_second"`
	Wall             []float64 `json:"-"`
	WallMean         float64   `json:"wall_seconds_mean"`
	WallP50          float64   `json:"wall_seconds_p50"`
	WallP90          float64   `json:"wall_seconds_p90"`
	WallP99          float64   `json:"wall_seconds_p99"`
	WallMax          float64   `json:"wall_seconds_max"`
	RSSBefore        uint64    `json:"rss_bytes_before"`
	RSSAfter         uint64    `json:"rss_bytes_after"`
	HWM              uint64    `json:"hwm_bytes"`
	WireBytes        int       `json:"wire_bytes"`
	TextBytes        int       `json:"text_bytes"`
	Series           int       `json:"series"`
	DeviceSeries     int       `json:"device_series"`
}

type targetsFlag []*target

func (t *targetsFlag) String() string { return fmt.Sprint(len(*t)) }

// Set parses name=...,pid=...,url=...[,netns=...].
func (t *targetsFlag) Set(s string) error {
	tg := &target{}
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("target %q: %q is not key=value", s, kv)
		}
		switch k {
		case "name":
			tg.Name = v
		case "pid":
			pid, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("target %q: pid: %w", s, err)
			}
			tg.PID = pid
		case "url":
			tg.URL = v
		case "netns":
			tg.NetNS = v
		default:
			return fmt.Errorf("target %q: unknown key %q", s, k)
		}
	}
	if tg.Name == "" || tg.PID == 0 || tg.URL == "" {
		return fmt.Errorf("target %q: name, pid and url are required", s)
	}
	*t = append(*t, tg)
	return nil
}

func main() {
	var targets targetsFlag
	flag.Var(&targets, "target", "name=NAME,pid=PID,url=URL[,netns=PATH]; repeatable")
	scrapes := flag.Int("scrapes", 200, "measured scrapes per target")
	block := flag.Int("block", 50, "consecutive scrapes of one target before switching (back-to-back mode)")
	warmup := flag.Int("warmup", 5, "unmeasured scrapes per target first")
	pace := flag.Duration("pace", 0, "0: back to back; >0: one scrape of every target per period")
	idle := flag.Duration("idle", 5*time.Second, "measure idle CPU this long before scraping")
	ready := flag.Duration("ready-timeout", 60*time.Second, "wait this long for every target to answer and settle")
	readySeries := flag.Int("ready-series", 0, "a target is ready when its response has this many series with a device label")
	clkTck := flag.Int("clk-tck", 100, "clock ticks per second of /proc/PID/stat (getconf CLK_TCK)")
	gzipOn := flag.Bool("gzip", true, "ask for gzip like Prometheus does")
	baseline := flag.String("baseline", "", "target name the others are compared with")
	label := flag.String("label", "", "title of the report")
	jsonOut := flag.String("json", "", "also write results as JSON here")
	flag.Parse()
	if len(targets) == 0 {
		fail(errors.New("no -target"))
	}
	for _, t := range targets {
		t.client = newClient(t.NetNS)
	}

	deadline := time.Now().Add(*ready)
	for _, t := range targets {
		if err := waitReady(t, *gzipOn, *readySeries, deadline); err != nil {
			fail(err)
		}
	}
	if err := waitQuiet(targets, deadline); err != nil {
		fail(err)
	}
	results := make([]*result, len(targets))
	for i, t := range targets {
		results[i] = &result{Target: *t}
	}
	if *idle > 0 {
		before := make([]cpu, len(targets))
		for i, t := range targets {
			before[i] = must(readCPU(t.PID))
		}
		time.Sleep(*idle)
		for i, t := range targets {
			d := must(readCPU(t.PID)).run - before[i].run
			results[i].IdleCPUPerSecond = d.Seconds() / idle.Seconds()
		}
	}
	for _, t := range targets {
		for range *warmup {
			if _, _, err := scrape(t, *gzipOn); err != nil {
				fail(err)
			}
		}
	}
	for i, t := range targets {
		results[i].RSSBefore, _ = readMem(t.PID)
	}

	var last [][]byte
	var err error
	if *pace > 0 {
		last, err = runPaced(targets, results, *scrapes, *pace, *gzipOn, *clkTck)
	} else {
		last, err = runBlocks(targets, results, *scrapes, *block, *gzipOn, *clkTck)
	}
	if err != nil {
		fail(err)
	}
	for i, t := range targets {
		r := results[i]
		r.RSSAfter, r.HWM = readMem(t.PID)
		r.WireBytes = len(last[i])
		text := last[i]
		if *gzipOn {
			text = must(gunzip(last[i]))
		}
		r.TextBytes = len(text)
		r.Series, r.DeviceSeries = countSeries(text)
		summarizeWall(r)
	}

	report(os.Stdout, *label, results, *baseline, *pace)
	if *jsonOut != "" {
		b := must(json.MarshalIndent(map[string]any{
			"label": *label, "pace_seconds": pace.Seconds(), "block": *block, "gzip": *gzipOn, "results": results,
		}, "", "  "))
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fail(err)
		}
	}
}

// runBlocks scrapes back to back, block scrapes of one target at a time,
// round robin, and charges each target the CPU its process used during its
// own blocks.
func runBlocks(targets []*target, results []*result, scrapes, block int, gz bool, clkTck int) ([][]byte, error) {
	last := make([][]byte, len(targets))
	ticks := make([]uint64, len(targets))
	run := make([]time.Duration, len(targets))
	for done := 0; done < scrapes; done += block {
		n := min(block, scrapes-done)
		for i, t := range targets {
			before, err := readCPU(t.PID)
			if err != nil {
				return nil, err
			}
			for range n {
				body, wall, err := scrape(t, gz)
				if err != nil {
					return nil, err
				}
				results[i].Wall = append(results[i].Wall, wall.Seconds())
				last[i] = body
			}
			after, err := readCPU(t.PID)
			if err != nil {
				return nil, err
			}
			ticks[i] += after.ticks - before.ticks
			run[i] += after.run - before.run
		}
	}
	for i := range targets {
		setCPU(results[i], scrapes, ticks[i], run[i], clkTck)
	}
	return last, nil
}

// runPaced scrapes every target once per period (like Prometheus with a
// scrape interval) and charges each target all the CPU its process used
// during the run.
func runPaced(targets []*target, results []*result, scrapes int, period time.Duration, gz bool, clkTck int) ([][]byte, error) {
	last := make([][]byte, len(targets))
	before := make([]cpu, len(targets))
	for i, t := range targets {
		c, err := readCPU(t.PID)
		if err != nil {
			return nil, err
		}
		before[i] = c
	}
	next := time.Now()
	for range scrapes {
		time.Sleep(time.Until(next))
		next = next.Add(period)
		for i, t := range targets {
			body, wall, err := scrape(t, gz)
			if err != nil {
				return nil, err
			}
			results[i].Wall = append(results[i].Wall, wall.Seconds())
			last[i] = body
		}
	}
	for i, t := range targets {
		after, err := readCPU(t.PID)
		if err != nil {
			return nil, err
		}
		setCPU(results[i], scrapes, after.ticks-before[i].ticks, after.run-before[i].run, clkTck)
	}
	return last, nil
}

func setCPU(r *result, scrapes int, ticks uint64, run time.Duration, clkTck int) {
	r.Scrapes = scrapes
	r.CPUPerScrapeStat = float64(ticks) / float64(clkTck) / float64(scrapes)
	r.CPUPerScrapeSchedstat = run.Seconds() / float64(scrapes)
}

// newClient returns a client with one kept-alive connection, dialed inside
// netns when set. Compression is left to the request headers so the body
// is counted as sent.
func newClient(netns string) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	dial := d.DialContext
	if netns != "" {
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialInNetNS(ctx, d, netns, network, addr)
		}
	}
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			DialContext:         dial,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 1,
		},
	}
}

// dialInNetNS creates the socket on a thread switched into the namespace;
// the socket stays there after the thread switches back.
func dialInNetNS(ctx context.Context, d *net.Dialer, netns, network, addr string) (net.Conn, error) {
	type dialed struct {
		c   net.Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- dialed{nil, err}
			return
		}
		defer orig.Close()
		ns, err := os.Open(netns)
		if err != nil {
			ch <- dialed{nil, err}
			return
		}
		defer ns.Close()
		if err := setns(ns); err != nil {
			ch <- dialed{nil, fmt.Errorf("setns %s: %w", netns, err)}
			return
		}
		c, err := d.DialContext(ctx, network, addr)
		if serr := setns(orig); serr != nil {
			// Leave the thread locked: it exits with this goroutine.
			if c != nil {
				c.Close()
			}
			ch <- dialed{nil, fmt.Errorf("setns back: %w", serr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- dialed{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}

// scrape fetches t once and returns the body as sent and the time from
// sending the request to reading the last byte.
func scrape(t *target, gz bool) ([]byte, time.Duration, error) {
	req, err := http.NewRequest(http.MethodGet, t.URL, nil)
	if err != nil {
		return nil, 0, err
	}
	// What Prometheus sends when it falls back to the text format.
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	start := time.Now()
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("scrape %s: %w", t.Name, err)
	}
	body, err := io.ReadAll(resp.Body)
	wall := time.Since(start)
	resp.Body.Close()
	if err != nil {
		return nil, 0, fmt.Errorf("scrape %s: read: %w", t.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("scrape %s: %s", t.Name, resp.Status)
	}
	if gz && resp.Header.Get("Content-Encoding") != "gzip" {
		return nil, 0, fmt.Errorf("scrape %s: asked for gzip, got %q", t.Name, resp.Header.Get("Content-Encoding"))
	}
	return body, wall, nil
}

// waitReady scrapes t until it answers with at least minSeries series that
// carry a device label (an exporter may serve before its first dump).
func waitReady(t *target, gz bool, minSeries int, deadline time.Time) error {
	for {
		body, _, err := scrape(t, gz)
		if err == nil && gz {
			body, err = gunzip(body)
		}
		if err == nil {
			if _, n := countSeries(body); n < minSeries {
				err = fmt.Errorf("%d series with a device label, want %d", n, minSeries)
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready: %w", t.Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitQuiet waits until no target uses more than 5 ms of CPU in a second,
// so that start-up work (initial dumps, events of links still coming up,
// garbage collection after the readiness scrapes) stays out of the
// measurement.
func waitQuiet(targets []*target, deadline time.Time) error {
	const quiet = 5 * time.Millisecond
	for {
		before := make([]cpu, len(targets))
		for i, t := range targets {
			c, err := readCPU(t.PID)
			if err != nil {
				return err
			}
			before[i] = c
		}
		time.Sleep(time.Second)
		busy := ""
		for i, t := range targets {
			c, err := readCPU(t.PID)
			if err != nil {
				return err
			}
			if d := c.run - before[i].run; d > quiet {
				busy = fmt.Sprintf("%s used %s of CPU in the last second", t.Name, d)
			}
		}
		if busy == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not quiet: %s", busy)
		}
	}
}

func gunzip(b []byte) ([]byte, error) {
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// countSeries counts sample lines, and those with a device label.
func countSeries(text []byte) (all, device int) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		all++
		if bytes.Contains(line, []byte(`device="`)) {
			device++
		}
	}
	return all, device
}

// readCPU reads a process's CPU time from /proc/PID/stat (utime+stime,
// what the brief asks for; tick-quantised) and from the per-thread
// schedstat (nanoseconds; threads that exited are not counted).
func readCPU(pid int) (cpu, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpu{}, err
	}
	// Fields after "(comm)": state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return cpu{}, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return cpu{}, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return cpu{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	c := cpu{ticks: utime + stime}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil {
		return cpu{}, err
	}
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return cpu{}, fmt.Errorf("%s: %w", p, err)
		}
		c.run += time.Duration(ns)
	}
	return c, nil
}

// readMem returns VmRSS and VmHWM in bytes.
func readMem(pid int) (rss, hwm uint64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseUint(f[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n << 10
		case "VmHWM":
			hwm = n << 10
		}
	}
	return rss, hwm
}

func summarizeWall(r *result) {
	w := slices.Clone(r.Wall)
	slices.Sort(w)
	if len(w) == 0 {
		return
	}
	sum := 0.0
	for _, x := range w {
		sum += x
	}
	r.WallMean = sum / float64(len(w))
	q := func(p float64) float64 { return w[min(len(w)-1, int(p*float64(len(w))))] }
	r.WallP50, r.WallP90, r.WallP99, r.WallMax = q(0.50), q(0.90), q(0.99), w[len(w)-1]
}

func report(w io.Writer, label string, results []*result, baseline string, pace time.Duration) {
	mode := "back to back, interleaved blocks; CPU counted during each exporter's own blocks"
	if pace > 0 {
		mode = fmt.Sprintf("paced, one scrape of each exporter every %s; CPU counted over the whole run", pace)
	}
	if label != "" {
		fmt.Fprintf(w, "== %s\n", label)
	}
	fmt.Fprintf(w, "mode: %s\n\n", mode)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "exporter\tscrapes\tcpu ms/scrape (stat)\tcpu ms/scrape (schedstat)\tidle cpu ms/s\twall ms mean\tp50\tp90\tp99\tmax\tRSS MiB\tHWM MiB\tgzip KiB\ttext KiB\tseries\tdevice series\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.0f\t%.0f\t%d\t%d\t\n",
			r.Target.Name, r.Scrapes, 1e3*r.CPUPerScrapeStat, 1e3*r.CPUPerScrapeSchedstat, 1e3*r.IdleCPUPerSecond,
			1e3*r.WallMean, 1e3*r.WallP50, 1e3*r.WallP90, 1e3*r.WallP99, 1e3*r.WallMax,
			mib(r.RSSAfter), mib(r.HWM), float64(r.WireBytes)/1024, float64(r.TextBytes)/1024, r.Series, r.DeviceSeries)
	}
	tw.Flush()

	var base *result
	for _, r := range results {
		if r.Target.Name == baseline {
			base = r
		}
	}
	if base == nil {
		return
	}
	fmt.Fprintf(w, "\nratios against %s (lower is better for the numerator):\n", base.Target.Name)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "exporter\tcpu/scrape (stat)\tcpu/scrape (schedstat)\twall mean\twall p50\tRSS\tHWM\tcpu per device series (schedstat)\t")
	for _, r := range results {
		if r == base {
			continue
		}
		perSeries := func(x *result) float64 { return x.CPUPerScrapeSchedstat / float64(max(1, x.DeviceSeries)) }
		fmt.Fprintf(tw, "%s / %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Target.Name, base.Target.Name,
			ratio(r.CPUPerScrapeStat, base.CPUPerScrapeStat), ratio(r.CPUPerScrapeSchedstat, base.CPUPerScrapeSchedstat),
			ratio(r.WallMean, base.WallMean), ratio(r.WallP50, base.WallP50),
			ratio(float64(r.RSSAfter), float64(base.RSSAfter)), ratio(float64(r.HWM), float64(base.HWM)),
			ratio(perSeries(r), perSeries(base)))
	}
	tw.Flush()
	fmt.Fprintln(w)
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", a/b)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func must[T any](v T, err error) T {
	if err != nil {
		fail(err)
	}
	return v
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "scraper:", err)
	os.Exit(1)
}
