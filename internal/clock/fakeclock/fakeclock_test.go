package fakeclock

import (
	"testing"
	"time"
)

func TestFakeClock(t *testing.T) {
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c := New(start)
	a := c.NewTimer(time.Second)
	b := c.NewTimer(3 * time.Second)
	if d := c.NextTimer(t, time.Second); d != time.Second {
		t.Errorf("first reported timer %s, want 1s", d)
	}
	if got := c.NextDeadline(start.Add(time.Hour)); !got.Equal(start.Add(time.Second)) {
		t.Errorf("NextDeadline = %s", got)
	}
	c.WaitTimer(t, start.Add(3*time.Second), time.Second)
	c.Advance(2 * time.Second)
	select {
	case at := <-a.C():
		if !at.Equal(start.Add(2 * time.Second)) {
			t.Errorf("fired at %s", at)
		}
	default:
		t.Fatal("a due timer did not fire")
	}
	if !b.Stop() || b.Stop() {
		t.Error("Stop: want true for a pending timer, then false")
	}
	c.Advance(time.Hour)
	select {
	case <-b.C():
		t.Error("a stopped timer fired")
	default:
	}
	if now := c.NewTimer(0); len(now.C()) != 1 {
		t.Error("a zero timer did not fire at once")
	}
	c.DrainCreated()
	select {
	case d := <-c.Created():
		t.Errorf("Created after DrainCreated: %s", d)
	default:
	}
}
