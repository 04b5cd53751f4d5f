//go:build !race

package collector_test

import "time"

// convergeBound is issue 7's bound: the snapshot equals the kernel's state
// within 1s after a burst stops.
const convergeBound = time.Second
