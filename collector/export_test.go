package collector

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/internal/netnstest"
)

// For the external tests (package collector_test), which drive the
// collector together with the sidecar's gate.

// KernelView is what `ip -j` reports for ns, in SnapshotView's form.
func KernelView(t *testing.T, ns *netnstest.NS) string { return kernelView(t, ns) }

// SnapshotView renders s in KernelView's form.
func SnapshotView(s *Snapshot) string { return snapshotView(s) }

// LineDiff lists the lines of want and got that the other lacks.
func LineDiff(want, got string) string { return lineDiff(want, got) }

// RandomChange writes one random `ip -batch` change of link va<i>.
func RandomChange(b *strings.Builder, rng *rand.Rand, i int) { randomChange(b, rng, i) }
