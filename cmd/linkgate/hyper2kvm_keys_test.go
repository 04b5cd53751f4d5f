package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestHyper2kvmOnlyKeys: every key hyper2kvm's files may carry and linkgate
// skips is a plain snake_case name, and none of them is a key linkgate maps
// from a hyper2kvm file or reads in its own file: such a key would be
// skipped instead of used.
func TestHyper2kvmOnlyKeys(t *testing.T) {
	name := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	for k, v := range hyper2kvmOnlyKeys {
		if !name.MatchString(k) {
			t.Errorf("key %q: want a name matching %s", k, name)
		}
		if !v {
			t.Errorf("key %q: listed as false; list only keys to skip", k)
		}
	}

	// The keys linkgate maps from a hyper2kvm file.
	mapped := []string{
		"network_monitor",
		"vc_connection_max_retries", "vc_connection_base_backoff_s", "vc_connection_max_backoff_s",
		"vc_connection_timeout_s", "vc_connection_enable_jitter",
		"vcenter", "vc_host", "vs_host", "vc_port", "vs_port", "vc_user", "vs_user",
		"vc_password", "vs_password", "vc_password_env", "vs_password_env",
		"vc_insecure", "vs_insecure",
		"notifications", "output_dir", "cmd",
	}
	for _, k := range mapped {
		if hyper2kvmOnlyKeys[k] {
			t.Errorf("key %q is linkgate's (mapped from a hyper2kvm file); it must not be skipped", k)
		}
	}

	// linkgate's own file format: no top-level name of it may be skipped.
	for key := range configKeys {
		top, _, _ := strings.Cut(key, ".")
		if hyper2kvmOnlyKeys[top] {
			t.Errorf("key %q (from linkgate's %q) is linkgate's; it must not be skipped", top, key)
		}
	}

	// hyper2kvm's subcommand key: linkgate ignores it.
	if !hyper2kvmOnlyKeys["command"] {
		t.Error(`"command" (hyper2kvm's alias of cmd) should be skipped`)
	}
}
