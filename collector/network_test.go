package collector

import (
	"testing"
	"time"
)

func TestIsUp(t *testing.T) {
	for _, tc := range []struct {
		oper           OperState
		admin, carrier bool
		want           bool
	}{
		{OperUp, true, true, true},
		{OperUp, false, false, true}, // the kernel's word wins
		{OperUnknown, true, true, true},
		{OperUnknown, false, true, false},
		{OperUnknown, true, false, false},
		{OperDown, true, true, false},
		{OperLowerLayerDown, true, false, false},
		{OperDormant, true, true, false},
		{OperTesting, true, true, false},
		{OperNotPresent, true, true, false},
	} {
		if got := IsUp(tc.oper, tc.admin, tc.carrier); got != tc.want {
			t.Errorf("IsUp(%s, admin=%v, carrier=%v) = %v", tc.oper, tc.admin, tc.carrier, got)
		}
	}
}

func TestOutageAccounting(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	up := []Link{{Name: "lo", Loopback: true, Up: true}, {Name: "eth0", Up: true}}
	down := []Link{{Name: "lo", Loopback: true, Up: true}, {Name: "eth0"}}

	n := aggregate(up, nil, NetworkStatus{}, true, t0)
	if !n.Up || n.Outages != 0 {
		t.Fatalf("start up: %+v", n)
	}
	n = aggregate(down, nil, n, false, t0.Add(10*time.Second))
	if n.Up || n.Outages != 1 || !n.DownSince.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("first outage: %+v", n)
	}
	if got := n.OutageSecondsAt(t0.Add(15 * time.Second)); got != 5 {
		t.Errorf("current outage counted %v s, want 5", got)
	}
	n = aggregate(down, nil, n, false, t0.Add(20*time.Second)) // still down: same outage
	if n.Outages != 1 {
		t.Errorf("a change while down started a new outage: %+v", n)
	}
	n = aggregate(up, nil, n, false, t0.Add(40*time.Second))
	if !n.Up || n.LastOutage != 30*time.Second || n.OutageTime != 30*time.Second || !n.DownSince.IsZero() {
		t.Fatalf("recovery: %+v", n)
	}
	n = aggregate(down, nil, n, false, t0.Add(50*time.Second))
	n = aggregate(up, nil, n, false, t0.Add(52*time.Second))
	if n.Outages != 2 || n.OutageTime != 32*time.Second || n.LastOutage != 2*time.Second {
		t.Errorf("second outage: %+v", n)
	}

	// Down at start counts as an outage.
	if n := aggregate(down, nil, NetworkStatus{}, true, t0); n.Up || n.Outages != 1 {
		t.Errorf("down at start: %+v", n)
	}
	// Loopback alone is not a network.
	if n := aggregate(down[:1], nil, NetworkStatus{}, true, t0); n.Up {
		t.Errorf("loopback only counted as up")
	}
}

func TestRequiredInterfaces(t *testing.T) {
	links := []Link{{Name: "eth0", Up: true}, {Name: "eth1"}}
	n := aggregate(links, []string{"eth0", "eth1", "eth9"}, NetworkStatus{}, true, time.Unix(0, 0))
	if n.Up || len(n.Down) != 2 || n.Down[0] != "eth1" || n.Down[1] != "eth9" {
		t.Errorf("down list: %+v", n)
	}
	if n := aggregate(links, []string{"eth0"}, NetworkStatus{}, true, time.Unix(0, 0)); !n.Up {
		t.Errorf("eth0 alone should be up: %+v", n)
	}
}
