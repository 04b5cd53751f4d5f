package metric

import "testing"

func TestName(t *testing.T) {
	if got := Name("vcenter", "up"); got != "linkgate_vcenter_up" {
		t.Errorf("Name = %q", got)
	}
	if got := Name("", "ready"); got != "linkgate_ready" {
		t.Errorf("Name without subsystem = %q", got)
	}
	if Bool(true) != 1 || Bool(false) != 0 {
		t.Error("Bool")
	}
}
