package collector

import (
	"bufio"
	"bytes"
	"errors"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkgate/linkgate/internal/clock/fakeclock"
	"github.com/linkgate/linkgate/internal/netnstest"
	"github.com/linkgate/linkgate/internal/promtooltest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// frozen is a prometheus.Collector that renders one view, so that Collect
// and WriteText can be compared on exactly the same reading: counters,
// clock and snapshot cannot move between the two.
type frozen struct{ v *view }

func (f frozen) Describe(ch chan<- *prometheus.Desc) { (*Collector)(nil).Describe(ch) }
func (f frozen) Collect(ch chan<- prometheus.Metric) { collectView(f.v, ch) }

// gatheredText is what a pedantic registry makes of c's Collect, encoded
// by expfmt.
func gatheredText(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// canonical parses an exposition and renders it again through expfmt,
// each family's samples sorted: two expositions with the same families,
// help, types, label sets and values give the same string.
func canonical(t *testing.T, text string) string {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, text)
	}
	var out strings.Builder
	for _, name := range slices.Sorted(maps.Keys(mfs)) {
		var b strings.Builder
		if _, err := expfmt.MetricFamilyToText(&b, mfs[name]); err != nil {
			t.Fatal(err)
		}
		var head, samples []string
		for line := range strings.Lines(b.String()) {
			if strings.HasPrefix(line, "#") {
				head = append(head, line)
			} else {
				samples = append(samples, line)
			}
		}
		slices.Sort(samples)
		out.WriteString(strings.Join(head, "") + strings.Join(samples, ""))
	}
	return out.String()
}

// checkShape checks what the text format requires beyond what the parser
// checks, and what WriteText promises: families sorted by name, each
// family's lines together, its HELP and TYPE once and before its samples.
func checkShape(t *testing.T, text string) {
	t.Helper()
	type seen struct{ help, typ, samples int }
	var names []string // the family of each run of lines, in order
	fams := map[string]*seen{}
	for line := range strings.Lines(text) {
		var name string
		if strings.HasPrefix(line, "#") {
			name = strings.Fields(line)[2]
		} else {
			name = line[:strings.IndexAny(line, "{ ")]
		}
		if len(names) == 0 || names[len(names)-1] != name {
			names = append(names, name)
			fams[name] = new(seen)
		}
		f := fams[name]
		switch {
		case strings.HasPrefix(line, "# HELP "):
			f.help++
		case strings.HasPrefix(line, "# TYPE "):
			f.typ++
		default:
			if f.help != 1 || f.typ != 1 {
				t.Errorf("%s: sample before HELP and TYPE: %q", name, line)
			}
			f.samples++
		}
	}
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Errorf("families not contiguous and sorted by name: %v", names)
	}
	for name, f := range fams {
		if f.help != 1 || f.typ != 1 || f.samples == 0 {
			t.Errorf("%s: %d HELP, %d TYPE, %d samples", name, f.help, f.typ, f.samples)
		}
	}
}

// writeView renders v with WriteText's writer.
func writeView(t *testing.T, v *view) string {
	t.Helper()
	var b bytes.Buffer
	if err := writeText(&b, v); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// compareRenderings checks that WriteText and Collect render v alike.
func compareRenderings(t *testing.T, v *view) string {
	t.Helper()
	text := writeView(t, v)
	checkShape(t, text)
	want, got := canonical(t, gatheredText(t, frozen{v})), canonical(t, text)
	if got != want {
		t.Errorf("WriteText and Collect differ:\n%s", lineDiff(want, got))
	}
	return text
}

// TestWriteTextMatchesCollect renders one reading of a collector on a
// private namespace both ways: through a registry from Collect, and with
// WriteText. The namespace has what every family needs: addresses of both
// families and scopes, a default route, neighbours in several states,
// aliases that need escaping or are not UTF-8, a filtered-out device, and
// required interfaces that are missing or listed twice.
func TestWriteTextMatchesCollect(t *testing.T) {
	a, b := pair(t)
	netnstest.Veth(t, a, "vx", b, "vy")
	netnstest.Veth(t, a, "vz", b, "vw")
	b.IP(t, "addr", "add", "10.82.0.2/24", "dev", "vb")
	a.IP(t, "addr", "add", "10.82.0.1/24", "dev", "va")
	a.IP(t, "addr", "add", "10.82.0.3/24", "dev", "va")
	a.IP(t, "addr", "add", "2001:db8:82::1/64", "dev", "va", "nodad")
	a.IP(t, "addr", "add", "10.83.0.1/24", "dev", "vx")
	a.IP(t, "route", "add", "default", "via", "10.82.0.2", "dev", "va")
	a.IP(t, "neigh", "add", "10.82.0.9", "lladdr", "02:00:00:00:00:09", "dev", "va", "nud", "permanent")
	a.IP(t, "neigh", "add", "10.82.0.10", "lladdr", "02:00:00:00:00:0a", "dev", "va", "nud", "stale")
	a.IP(t, "neigh", "add", "10.82.0.11", "lladdr", "02:00:00:00:00:0b", "dev", "va", "nud", "noarp")
	a.IP(t, "link", "set", "va", "alias", "uplink \"a\\b\"\nto vcenter")
	a.IP(t, "link", "set", "vz", "alias", "bad \xff utf-8")

	c := start(t, a, Options{
		Required:     []string{"va", "missing0", "va"},
		DeviceFilter: func(name string) bool { return name != "vx" },
	})
	s := waitFor(t, c, "the namespace's state", func(s *Snapshot) bool {
		va, ok := s.LinkByName("va")
		d, _ := s.LinkByName("vz")
		return ok && va.Up && strings.HasPrefix(va.Alias, "uplink") && d.Alias != "" &&
			len(s.DefaultRoutes(FamilyIPv4)) == 1 && len(s.Neighbors) >= 3 && hasAddr(s, "va", "2001:db8:82::1/64")
	})

	v := c.readView()
	defer v.release()
	text := compareRenderings(t, v)
	promtooltest.CheckMetrics(t, text)
	for _, want := range []string{
		`linkgate_link_info{address="` + linkAddress(t, s, "va") + `",alias="uplink \"a\\b\"\nto vcenter",device="va",kind="veth"} 1`,
		`alias="bad ` + "\uFFFD" + ` utf-8",device="vz",kind="veth"} 1`,
		`linkgate_link_addresses{device="va",family="inet",scope="global"} 2`,
		`linkgate_link_addresses{device="va",family="inet6",scope="global"} 1`,
		`linkgate_neighbors{device="va",state="noarp"} 1`,
		`linkgate_neighbors{device="va",state="permanent"} 1`,
		`linkgate_neighbors{device="va",state="stale"} 1`,
		`linkgate_route_default{family="inet"} 1`,
		"linkgate_network_required_interface_up{device=\"va\"} 1\nlinkgate_network_required_interface_up{device=\"missing0\"} 0\n#",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("WriteText lacks %q", want)
		}
	}
	if strings.Contains(text, `"vx"`) {
		t.Error("WriteText exports a filtered-out device")
	}

	// The public methods, each on its own reading: the same series
	// (values may move between the two readings).
	var pub bytes.Buffer
	if err := c.WriteText(&pub); err != nil {
		t.Fatal(err)
	}
	if got, want := seriesOf(t, pub.String()), seriesOf(t, gatheredText(t, c)); !slices.Equal(got, want) {
		t.Errorf("WriteText and Collect export different series:\n%s", lineDiff(strings.Join(want, "\n"), strings.Join(got, "\n")))
	}
}

func linkAddress(t *testing.T, s *Snapshot, name string) string {
	t.Helper()
	l, ok := s.LinkByName(name)
	if !ok || l.Address == "" {
		t.Fatalf("no hardware address for %s", name)
	}
	return l.Address
}

// seriesOf lists the series (name and labels, no value) of an exposition.
func seriesOf(t *testing.T, text string) []string {
	t.Helper()
	var out []string
	for line := range strings.Lines(canonical(t, text)) {
		if !strings.HasPrefix(line, "#") {
			out = append(out, line[:strings.LastIndexByte(line, ' ')])
		}
	}
	slices.Sort(out)
	return out
}

// TestWriteTextSynthetic compares the two renderings on a snapshot made
// up in the test, without a kernel: values that the namespace test cannot
// produce (odd neighbour states, huge counters, an outage in progress,
// addresses of a link that is gone), and the text itself.
func TestWriteTextSynthetic(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.UTC)
	now := t0.Add(90*time.Second + 250*time.Millisecond)
	c, err := New(Options{Clock: fakeclock.New(now)})
	if err != nil {
		t.Fatal(err)
	}
	c.events["newlink"].Add(1234567)
	c.resyncs[ResyncOverflow].Add(2)
	c.decodeErrors.Add(3)
	c.polling.Store(true)
	c.snap.Store(&Snapshot{
		Version: 42,
		Links: []Link{
			{Index: 1, Name: "lo", Loopback: true, AdminUp: true, Carrier: true, OperState: OperUnknown, Up: true, MTU: 65536, LastChange: t0},
			{Index: 2, Name: "eth0", Kind: "", Address: "02:00:00:00:00:01", Alias: `back\slash "quote"` + "\nnewline",
				MTU: 1500, AdminUp: true, OperState: OperDown, CarrierChanges: 7, LastChange: t0.Add(time.Second),
				UpTransitions: 3, DownTransitions: 4,
				Stats: LinkStats{RxBytes: 1<<63 + 12345, RxPackets: 999999, TxBytes: 1000000, TxPackets: 123456789, RxDropped: 1}},
			{Index: 7, Name: "eth\xff1", OperState: OperUp, Up: true},
		},
		Addresses: []Address{
			{LinkIndex: 2, Family: FamilyIPv4, Prefix: netip.MustParsePrefix("10.0.0.1/24")},
			{LinkIndex: 2, Family: FamilyIPv6, Prefix: netip.MustParsePrefix("fe80::1/64"), Scope: 253},
			{LinkIndex: 2, Family: FamilyIPv6, Prefix: netip.MustParsePrefix("2001:db8::1/64")},
			{LinkIndex: 2, Family: FamilyIPv4, Prefix: netip.MustParsePrefix("10.0.1.1/24")},
			{LinkIndex: 5, Family: FamilyIPv4, Prefix: netip.MustParsePrefix("10.0.5.1/24")}, // no such link
		},
		Routes: []Route{
			{Family: FamilyIPv4, Table: TableMain, Dst: netip.MustParsePrefix("0.0.0.0/0")},
			{Family: FamilyIPv4, Table: 100, Dst: netip.MustParsePrefix("0.0.0.0/0")},
			{Family: FamilyIPv6, Table: TableMain, Dst: netip.MustParsePrefix("2001:db8::/64")},
		},
		Neighbors: []Neighbor{
			{LinkIndex: 2, Family: FamilyIPv4, IP: netip.MustParseAddr("10.0.0.2"), State: NeighStale},
			{LinkIndex: 2, Family: FamilyIPv4, IP: netip.MustParseAddr("10.0.0.3"), State: NeighReachable | NeighStale},
			{LinkIndex: 2, Family: FamilyIPv4, IP: netip.MustParseAddr("10.0.0.4"), State: NeighStale},
			{LinkIndex: 7, Family: FamilyIPv6, IP: netip.MustParseAddr("fe80::2"), State: NeighNone},
		},
		Network: NetworkStatus{Required: []string{"eth0", "eth0", "wlan0"}, Down: []string{"eth0", "wlan0"},
			Outages: 2, OutageTime: 1500 * time.Millisecond, LastOutage: time.Second, DownSince: t0},
		changed: make(chan struct{}),
	})

	v := c.readView()
	defer v.release()
	text := compareRenderings(t, v)
	promtooltest.CheckMetrics(t, text)
	for _, want := range []string{
		"# HELP linkgate_link_addresses Number of addresses on the link by family and scope.\n" +
			"# TYPE linkgate_link_addresses gauge\n" +
			"linkgate_link_addresses{device=\"eth0\",family=\"inet\",scope=\"global\"} 2\n" +
			"linkgate_link_addresses{device=\"eth0\",family=\"inet6\",scope=\"global\"} 1\n" +
			"linkgate_link_addresses{device=\"eth0\",family=\"inet6\",scope=\"link\"} 1\n" +
			"# HELP linkgate_link_admin_up",
		`linkgate_link_info{address="02:00:00:00:00:01",alias="back\\slash \"quote\"\nnewline",device="eth0",kind=""} 1`,
		`linkgate_link_info{address="",alias="",device="eth` + "\uFFFD" + `1",kind=""} 1`,
		`linkgate_link_receive_bytes_total{device="eth0"} 9.223372036854788e+18`,
		`linkgate_link_receive_packets_total{device="eth0"} 999999` + "\n",
		`linkgate_link_transmit_bytes_total{device="eth0"} 1e+06` + "\n",
		`linkgate_link_transmit_packets_total{device="eth0"} 1.23456789e+08` + "\n",
		`linkgate_link_last_change_timestamp_seconds{device="eth0"} 1.7958672011234567e+09` + "\n",
		`linkgate_link_transitions_total{device="eth0",to="down"} 4` + "\n",
		`linkgate_neighbors{device="eth0",state="0x6"} 1`,
		`linkgate_neighbors{device="eth0",state="stale"} 2`,
		`linkgate_neighbors{device="eth` + "\uFFFD" + `1",state="none"} 1`,
		`linkgate_network_outage_seconds_total 91.75` + "\n",
		"# TYPE linkgate_network_required_interface_up gauge\n" +
			"linkgate_network_required_interface_up{device=\"eth0\"} 0\n" +
			"linkgate_network_required_interface_up{device=\"wlan0\"} 0\n#",
		`linkgate_netlink_events_total{type="newlink"} 1.234567e+06` + "\n",
		"linkgate_netlink_mode{mode=\"events\"} 0\nlinkgate_netlink_mode{mode=\"polling\"} 1\n",
		`linkgate_netlink_snapshot_version 42` + "\n",
		`linkgate_route_default{family="inet"} 1` + "\n",
		`linkgate_routes{family="inet"} 2` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("WriteText lacks %q in:\n%s", want, text)
		}
	}
	if strings.Contains(text, `device="lo",family`) {
		t.Error("address of a missing link exported")
	}
}

func TestWriteTextEmptyFamiliesAndErrors(t *testing.T) {
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := c.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	// A collector before its first dump: no links, so no link families at
	// all (a registry drops empty families too).
	if strings.Contains(b.String(), "linkgate_link_") || strings.Contains(b.String(), "linkgate_neighbors") {
		t.Errorf("empty families written:\n%s", b.String())
	}
	if got, want := canonical(t, b.String()), canonical(t, gatheredText(t, c)); got != want {
		t.Errorf("empty collector: WriteText and Collect differ:\n%s", lineDiff(want, got))
	}

	failing := errors.New("client went away")
	if err := c.WriteText(errWriter{failing}); !errors.Is(err, failing) {
		t.Errorf("WriteText to a failing writer: %v, want %v", err, failing)
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

// TestAppendLabelValue: the text format escapes backslash, double quote
// and line feed in label values, and nothing else.
func TestAppendLabelValue(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"eth0", "eth0"},
		{`uplink to "vcenter"`, `uplink to \"vcenter\"`},
		{`C:\path\`, `C:\\path\\`},
		{"two\nlines\n", `two\nlines\n`},
		{"\\\"\n", `\\\"\n`},
		{"tab\there, cr\r, ünïcødé", "tab\there, cr\r, ünïcødé"},
	} {
		if got := string(appendLabelValue([]byte("x="), tc.in)); got != "x="+tc.want {
			t.Errorf("appendLabelValue(%q) = %q, want %q", tc.in, got, "x="+tc.want)
		}
		// And as expfmt reads it back.
		text := `m{l="` + string(appendLabelValue(nil, tc.in)) + "\"} 1\n"
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
		if err != nil {
			t.Errorf("%q: parse %q: %v", tc.in, text, err)
			continue
		}
		if got := mfs["m"].GetMetric()[0].GetLabel()[0].GetValue(); got != tc.in {
			t.Errorf("%q round-trips as %q", tc.in, got)
		}
	}
}

// TestAppendFloat: values are written as expfmt writes them.
func TestAppendFloat(t *testing.T) {
	values := []float64{0, math.Copysign(0, -1), 1, -1, 2, 0.5, -0.25, 1e-7, 999999, 1e6, 1e6 + 1, 123456.5,
		1 << 53, 1<<64 - 1, 9.223372036854788e+18, 1.7958672011234567e+09, 1e21, -1e6, math.MaxFloat64,
		math.SmallestNonzeroFloat64, math.Inf(1), math.Inf(-1), math.NaN()}
	for i := range 2000 {
		values = append(values, float64(i*i*7), float64(i)/7)
	}
	var want bytes.Buffer
	reg := prometheus.NewRegistry()
	d := prometheus.NewDesc("m", "h", []string{"i"}, nil)
	reg.MustRegister(collectorFunc(func(ch chan<- prometheus.Metric) {
		for i, f := range values {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, f, strconv.Itoa(i))
		}
	}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := expfmt.MetricFamilyToText(&want, mfs[0]); err != nil {
		t.Fatal(err)
	}
	expected := map[string]string{} // label i -> value text
	sc := bufio.NewScanner(&want)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := line[strings.Index(line, `"`)+1 : strings.LastIndex(line, `"`)]
		expected[i] = line[strings.LastIndexByte(line, ' ')+1:]
	}
	for i, f := range values {
		if got, want := string(appendFloat(nil, f)), expected[strconv.Itoa(i)]; got != want {
			t.Errorf("appendFloat(%v) = %q, expfmt writes %q", f, got, want)
		}
	}
}

type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(f, ch) }
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

// TestFamiliesTable: names unique (WriteText relies on sorted, distinct
// names), every family's help and type match its Desc.
func TestFamiliesTable(t *testing.T) {
	for i, f := range families {
		if i > 0 && families[i-1].name >= f.name {
			t.Errorf("families not strictly sorted at %s, %s", families[i-1].name, f.name)
		}
		if !strings.HasPrefix(f.name, "linkgate_") || f.help == "" {
			t.Errorf("family %q: name or help", f.name)
		}
	}
}

// BenchmarkWriteTextSynthetic is WriteText without a kernel, for quick
// profiling: a snapshot of 1000 links rendered to io.Discard.
func BenchmarkWriteTextSynthetic(b *testing.B) {
	c, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	s := &Snapshot{changed: make(chan struct{})}
	for i := range 1000 {
		s.Links = append(s.Links, Link{Index: i + 2, Name: "lgb" + strconv.Itoa(i), Kind: "veth", Address: "02:00:00:00:00:01",
			MTU: 1500, AdminUp: true, Carrier: true, OperState: OperUp, Up: true, LastChange: time.Now(),
			Stats: LinkStats{RxBytes: uint64(i) * 123456789, TxBytes: uint64(i) * 987654321, RxPackets: uint64(i) * 1000}})
		s.Addresses = append(s.Addresses, Address{LinkIndex: i + 2, Family: FamilyIPv4, Prefix: netip.MustParsePrefix("10.0.0.1/30")})
	}
	c.snap.Store(s)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.WriteText(discard{}); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
