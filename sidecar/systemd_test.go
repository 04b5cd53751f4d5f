package sidecar

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNotifySystemd(t *testing.T) {
	recv := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(10*time.Second/time.Microsecond)))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	vc := newFakeVCenter(vcRefused())
	g := vcenterGate(t, GateOptions{}, vc)
	waitState(t, g, "not ready", isNotReady)
	clk := newFakeClock()
	t0 := clk.Now()
	var alive atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := NotifySystemd(ctx, SystemdOptions{Status: GateStatus(g), Alive: alive.Load, Clock: clk}); err != nil {
			t.Error(err)
		}
	})
	defer func() { cancel(); wg.Wait() }()

	if got, want := recv(), "READY=1\nSTATUS=not ready: vcenter: transient: refused: connection refused"; got != want {
		t.Errorf("first datagram %q, want %q", got, want)
	}

	// Not alive: the watchdog period passes silently...
	clk.WaitTimer(t, t0.Add(5*time.Second), hang)
	clk.Advance(5 * time.Second)
	clk.WaitTimer(t, t0.Add(10*time.Second), hang) // ...and is re-armed.
	vc.set(vcUp(time.Now()))
	if got := recv(); got != "STATUS=ready" {
		t.Errorf("after transition %q, want STATUS=ready (and no WATCHDOG while not alive)", got)
	}

	alive.Store(true)
	clk.Advance(5 * time.Second)
	if got := recv(); got != "WATCHDOG=1" {
		t.Errorf("alive: %q, want WATCHDOG=1", got)
	}
	cancel()
	if got := recv(); got != "STOPPING=1" {
		t.Errorf("shutdown: %q, want STOPPING=1", got)
	}
}

func TestNotifySystemdWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	g, err := NewGate(GateOptions{Snapshots: healthySnapshot()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Returns at once instead of running until ctx ends.
	if err := NotifySystemd(ctx, SystemdOptions{Status: GateStatus(g)}); err != nil {
		t.Error(err)
	}
}

// TestNotifySystemdExporter: without a gate (the exporter), READY and
// STATUS follow the kernel state, and STATUS is sent only when it changes.
func TestNotifySystemdExporter(t *testing.T) {
	recv := notifySocket(t)
	a, b := pair(t)
	col := startCollector(t, a, "va")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := NotifySystemd(ctx, SystemdOptions{Status: SnapshotStatus(col)}); err != nil {
			t.Error(err)
		}
	})
	defer func() { cancel(); wg.Wait() }()
	if got, want := recv(), "READY=1\nSTATUS=network up"; got != want {
		t.Errorf("first datagram %q, want %q", got, want)
	}
	b.IP(t, "link", "set", "vb", "down")
	if got, want := recv(), "STATUS=network down: va"; got != want {
		t.Errorf("after va lost carrier: %q, want %q", got, want)
	}
	cancel()
	if got := recv(); got != "STOPPING=1" {
		t.Errorf("shutdown: %q, want STOPPING=1 (and no repeated STATUS)", got)
	}
}

// notifySocket is systemd's end of NOTIFY_SOCKET for one test: recv
// returns the next datagram, failing the test after the hang guard.
func notifySocket(t *testing.T) (recv func() string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		_ = conn.SetReadDeadline(time.Now().Add(hang))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no datagram: %v", err)
		}
		return string(buf[:n])
	}
}
