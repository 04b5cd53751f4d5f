package collector

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// seedEnv replays a randomized test: set it to the seed the test logged.
const seedEnv = "LINKGATE_SEED"

// replayRand returns the random source of a randomized test, seeded from
// LINKGATE_SEED (a decimal uint64) when set, else from the clock. It logs
// the seed, so that any run can be replayed.
func replayRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(seedEnv); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want a decimal uint64", seedEnv, v)
		}
		seed = n
	}
	t.Logf("seed %d (replay with %s=%d)", seed, seedEnv, seed)
	return rand.New(rand.NewPCG(seed, 0))
}
