package collector

import (
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// WriteText writes the collector's metric families to w in the Prometheus
// text format, version 0.0.4: the families, help, types, labels and values
// Collect produces, families sorted by name, each family's series together
// in snapshot order. It formats straight into a pooled buffer, written to
// w in chunks, instead of building a prometheus.Metric per series and
// letting a registry sort, check and encode them, which at 1000
// interfaces is most of a scrape's cost (bench/README.md).
//
// Only w can fail: the error is the first one it returned.
func (c *Collector) WriteText(w io.Writer) error {
	v := c.readView()
	defer v.release()
	return writeText(w, v)
}

// familyText is a family's text prepared once: the HELP and TYPE lines,
// and the fixed pieces of a series line around its label values, labels
// sorted by name as client_golang sorts them.
type familyText struct {
	header string // "# HELP …\n# TYPE …\n"
	// A series line is parts[0] value(order[0]) parts[1] value(order[1])
	// … end number '\n'; without labels, just parts[0] number '\n'.
	parts []string
	order []int // indexes into sample.labels
	end   string
}

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

func newFamilyText(f *family) familyText {
	typ := "gauge"
	if f.typ == prometheus.CounterValue {
		typ = "counter"
	}
	t := familyText{header: "# HELP " + f.name + " " + helpEscaper.Replace(f.help) + "\n# TYPE " + f.name + " " + typ + "\n"}
	if len(f.labels) == 0 {
		t.parts = []string{f.name + " "}
		return t
	}
	for i := range f.labels {
		t.order = append(t.order, i)
	}
	// Stable, as client_golang's MakeLabelPairs (names are unique anyway).
	sortByName := func(a, b int) int { return strings.Compare(f.labels[a], f.labels[b]) }
	slices.SortStableFunc(t.order, sortByName)
	for k, i := range t.order {
		sep := `",`
		if k == 0 {
			sep = f.name + "{"
		}
		t.parts = append(t.parts, sep+f.labels[i]+`="`)
	}
	t.end = `"} `
	return t
}

// textChunk is how much text is buffered before it is written to w: small
// enough to keep the pooled buffer small, large enough that gzip and the
// HTTP response see few writes.
const textChunk = 32 << 10

type textWriter struct {
	w   io.Writer
	buf []byte
	err error
}

var textWriterPool = sync.Pool{New: func() any { return &textWriter{buf: make([]byte, 0, textChunk+4<<10)} }}

func writeText(w io.Writer, v *view) error {
	t := textWriterPool.Get().(*textWriter)
	t.w, t.err = w, nil
	defer func() {
		t.w, t.buf = nil, t.buf[:0]
		textWriterPool.Put(t)
	}()
	for _, f := range families {
		t.family(f, v)
		if t.err != nil {
			return t.err
		}
	}
	t.flush()
	return t.err
}

// family writes f's series; nothing at all when it has none, as a registry
// drops empty families.
func (t *textWriter) family(f *family, v *view) {
	ft := &f.text
	first := true
	f.samples(v, func(s sample) bool {
		b := t.buf
		if first {
			b = append(b, ft.header...)
			first = false
		}
		b = append(b, ft.parts[0]...)
		for k, i := range ft.order {
			if k > 0 {
				b = append(b, ft.parts[k]...)
			}
			b = appendLabelValue(b, s.labels[i])
		}
		b = append(b, ft.end...)
		b = appendFloat(b, s.value)
		t.buf = append(b, '\n')
		if len(t.buf) >= textChunk {
			t.flush()
		}
		return t.err == nil
	})
}

func (t *textWriter) flush() {
	if t.err == nil && len(t.buf) > 0 {
		_, t.err = t.w.Write(t.buf)
	}
	t.buf = t.buf[:0]
}

// appendLabelValue appends s escaped for a quoted label value: backslash,
// double quote and newline, as expfmt does.
func appendLabelValue(b []byte, s string) []byte {
	i := 0
	for i < len(s) && s[i] != '\\' && s[i] != '"' && s[i] != '\n' {
		i++
	}
	if i == len(s) {
		return append(b, s...)
	}
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendFloat formats f as expfmt's text encoder does: strconv's shortest
// 'g' form, with 0, 1, -1, NaN and ±Inf spelled out.
func appendFloat(b []byte, f float64) []byte {
	switch {
	case f == 1:
		return append(b, '1')
	case f == 0:
		return append(b, '0')
	case f == -1:
		return append(b, "-1"...)
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, +1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	case f > 0 && f < 1e6 && f == math.Trunc(f):
		// Below 1e6 'g' writes an integer without an exponent: the same
		// digits as AppendUint, which is several times faster.
		return strconv.AppendUint(b, uint64(f), 10)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}
