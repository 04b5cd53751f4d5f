// Package soak holds linkgate's chaos soak: the real binary runs as
// `linkgate sidecar` against a private network namespace and an
// in-process vCenter simulator while the test churns links, addresses and
// routes, stops, restarts and slows the simulator, rotates the password
// file, and keeps clients on /metrics, /ready?wait= and /events. At quiet
// points it stops the chaos, lets things settle and checks what a user
// would see against the truth: the kernel's links, the gate's verdict,
// counters that never go back, failed logins within SSO's lockout limit,
// bounded goroutines, descriptors, memory and vCenter sessions, and no
// secret in any output.
//
// Short mode (the default, about 45 s, for CI) and long mode on demand:
//
//	go test -count=1 -run TestSoak -v ./test/soak/
//	LINKGATE_SOAK=10m go test -count=1 -timeout 20m -run TestSoak -v ./test/soak/
//
// It needs root (namespaces) and iproute2; without them it skips, unless
// LINKGATE_REQUIRE_ROOT_TESTS=1 turns the skip into a failure.
package soak
