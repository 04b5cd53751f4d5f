package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strings"

	"github.com/linkgate/linkgate/internal/boundedfile"
	"go.yaml.in/yaml/v3"
)

// A hyper2kvm configuration file (--hyper2kvm.config) is a second source of
// settings, below linkgate's own file: flag > LINKGATE_* > --config file >
// hyper2kvm file > default. linkgate reads from it what it shares with
// hyper2kvm: the keys of the network-resilience design note (network_monitor.*,
// vc_connection_*), the vCenter connection (vcenter, vc_user, ..., with
// hyper2kvm's own precedence of the vs_* aliases), its notifications and
// output_dir, which locates the daemon's control socket. Keys that only
// hyper2kvm uses are skipped by name (hyper2kvm_keys.go); any other key is an
// error naming file:line, as in linkgate's own file.

// hyper2kvmConfig is what a hyper2kvm file contributes.
type hyper2kvmConfig struct {
	*fileConfig
	// used lists, for --config.check, each key that set a flag.
	used []usedKey
	// ignored counts the hyper2kvm-only keys skipped.
	ignored int
	// Passwords given inline (vc_password, vs_password,
	// notifications.email_password): accepted, never echoed, warned about.
	vcenterPassword, emailPassword string
	warnings                       []string
}

// usedKey is one hyper2kvm key linkgate took, and what it set.
type usedKey struct {
	line      int
	key, sets string
}

func (u usedKey) String() string { return fmt.Sprintf("%d: %s → %s", u.line, u.key, u.sets) }

// inlineSecretWarning is said once per inline password, naming the key.
func inlineSecretWarning(path string, line int, key, better string) string {
	return fmt.Sprintf("%s:%d: %s: a password written in the file is used, but anyone who can read the file can read it; prefer %s (the value is not shown)", path, line, key, better)
}

// h2kNode is a top-level key of the file and its value.
type h2kNode struct {
	key  *yaml.Node
	val  *yaml.Node
	line int
}

func loadHyper2kvmConfig(origin, path string) (*hyper2kvmConfig, error) {
	data, err := boundedfile.Read(path, boundedfile.Config)
	if err != nil {
		return nil, configErrorf("%s: %v", origin, err)
	}
	return parseHyper2kvmConfig(path, data)
}

func parseHyper2kvmConfig(path string, data []byte) (*hyper2kvmConfig, error) {
	h := &hyper2kvmConfig{fileConfig: &fileConfig{path: path, byFlag: map[string]fileValue{}}}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return h, nil
		}
		return nil, yamlError(path, data, err)
	}
	if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null") {
		return h, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, configErrorf("%s:%d: the file must be a mapping of keys to values", path, root.Line)
	}
	top := map[string]h2kNode{}
	var errs []string
	shared := &fileConfig{path: path, byFlag: map[string]fileValue{}}
	var sharedRoot yaml.Node
	sharedRoot.Kind = yaml.MappingNode
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if prev, dup := top[k.Value]; dup {
			errs = append(errs, fmt.Sprintf("%s:%d: duplicate key %s (first at line %d)", path, k.Line, showKey("", k.Value), prev.key.Line))
			continue
		}
		line := v.Line
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		top[k.Value] = h2kNode{k, v, line}
		switch {
		case (hyper2kvmVCenterKeys[k.Value] && v.Kind != yaml.MappingNode) || k.Value == "output_dir" || k.Value == "notifications":
			// hyper2kvm's meaning, mapped below (a vcenter: mapping is
			// linkgate's own section).
		case hyper2kvmOnlyKeys[k.Value]:
			h.ignored++
		default:
			// linkgate's own keys (and the shared network_monitor.*,
			// vc_connection_*): as in linkgate's file.
			sharedRoot.Content = append(sharedRoot.Content, k, root.Content[i+1])
		}
	}
	shared.walk(&sharedRoot, "", &errs)
	for flag, fv := range shared.byFlag {
		h.byFlag[flag] = fv
		h.used = append(h.used, usedKey{fv.line, fv.key, "--" + flag})
	}
	h.mapVCenter(top, &errs)
	h.mapNotifications(top, &errs)
	if n, ok := top["output_dir"]; ok {
		if p, err := convert(kindPath, n.val, filepath.Dir(path), false); err != nil {
			errs = append(errs, fmt.Sprintf("%s:%d: output_dir: %v", path, n.line, err))
		} else if p != nil {
			sock := filepath.Join(p.(string), ".daemon", "control.sock")
			h.set("hyper2kvm.control-socket", []any{sock}, n.line, "output_dir")
		}
	}
	if len(errs) > maxConfigErrors {
		errs = append(errs[:maxConfigErrors], fmt.Sprintf("%s: and %d more problems", path, len(errs)-maxConfigErrors))
	}
	if len(errs) > 0 {
		return nil, &configError{msg: strings.Join(errs, "\n")}
	}
	sort.SliceStable(h.used, func(i, j int) bool { return h.used[i].line < h.used[j].line })
	return h, nil
}

// set records a flag value the file gives, and which key gave it.
func (h *hyper2kvmConfig) set(flag string, value any, line int, key string) {
	h.byFlag[flag] = fileValue{value: value, line: line, key: key}
	h.used = append(h.used, usedKey{line, key, "--" + flag})
}

// hyper2kvmVCenterKeys are hyper2kvm's vCenter connection keys
// (hyper2kvm/core/cred.py and its CLI's --vc-* options).
var hyper2kvmVCenterKeys = map[string]bool{
	"vcenter": true, "vc_host": true, "vs_host": true, "vc_port": true, "vs_port": true,
	"vc_user": true, "vs_user": true, "vc_password": true, "vs_password": true,
	"vc_password_env": true, "vs_password_env": true, "vc_insecure": true, "vs_insecure": true,
}

// first returns the first of keys present in top, in hyper2kvm's order of
// precedence.
func first(top map[string]h2kNode, keys ...string) (h2kNode, bool) {
	for _, k := range keys {
		if n, ok := top[k]; ok && n.val.Tag != "!!null" {
			return n, true
		}
	}
	return h2kNode{}, false
}

// scalar reads a key's value as kind, recording an error on a bad one.
func (h *hyper2kvmConfig) scalar(n h2kNode, kind valueKind, errs *[]string) (string, bool) {
	v, err := convert(kind, n.val, filepath.Dir(h.path), secretKey(n.key.Value))
	if err != nil {
		*errs = append(*errs, fmt.Sprintf("%s:%d: %s: %v", h.path, n.line, n.key.Value, err))
		return "", false
	}
	s, ok := v.(string)
	return s, ok
}

// mapVCenter maps hyper2kvm's vCenter keys, with its precedence:
// host vs_host > vcenter > vc_host; user vs_user > vc_user; password
// vs_password > vs_password_env > vc_password > vc_password_env.
func (h *hyper2kvmConfig) mapVCenter(top map[string]h2kNode, errs *[]string) {
	if n, ok := first(top, "vs_host", "vcenter", "vc_host"); ok {
		if host, ok := h.scalar(n, kindString, errs); ok && host != "" {
			target := host
			if p, ok := first(top, "vs_port", "vc_port"); ok && !strings.Contains(host, "://") {
				if port, ok := h.scalar(p, kindInt, errs); ok {
					target = net.JoinHostPort(host, port)
				}
			}
			h.set("vcenter.url", []any{target}, n.line, n.key.Value)
		}
	}
	if n, ok := first(top, "vs_user", "vc_user"); ok {
		if user, ok := h.scalar(n, kindString, errs); ok {
			h.set("vcenter.user", user, n.line, n.key.Value)
		}
	}
	if n, ok := first(top, "vs_insecure", "vc_insecure"); ok {
		if b, ok := h.scalar(n, kindBool, errs); ok {
			h.set("vcenter.insecure", b, n.line, n.key.Value)
		}
	}
	if n, ok := first(top, "vs_password", "vs_password_env", "vc_password", "vc_password_env"); ok {
		pw, ok := h.scalar(n, kindString, errs)
		switch {
		case !ok:
		case strings.HasSuffix(n.key.Value, "_env"):
			h.set("vcenter.password-env", pw, n.line, n.key.Value)
		default:
			h.vcenterPassword = pw
			h.used = append(h.used, usedKey{n.line, n.key.Value, "the vCenter password (inline)"})
			h.warnings = append(h.warnings, inlineSecretWarning(h.path, n.line, n.key.Value, "vc_password_env or --vcenter.password-file"))
		}
	}
}

// hyper2kvmNotificationKeys are the keys of hyper2kvm's notifications:
// section (hyper2kvm/daemon/notifier.py); true: linkgate maps it.
var hyper2kvmNotificationKeys = map[string]bool{
	"enabled": true, "webhook_url": true, "webhook_type": true,
	"email_enabled": true, "email_smtp_host": true, "email_smtp_port": true,
	"email_from": true, "email_to": true, "email_username": true, "email_password": true,
	// hyper2kvm's events, not the gate's.
	"on_success": false, "on_failure": false, "on_stalled": false,
}

// mapNotifications maps hyper2kvm's notifications: section onto
// linkgate's webhook and email settings: hyper2kvm notifies about
// conversions, linkgate about the gate, through the same channels.
func (h *hyper2kvmConfig) mapNotifications(top map[string]h2kNode, errs *[]string) {
	sec, ok := top["notifications"]
	if !ok || sec.val.Kind != yaml.MappingNode {
		if ok && sec.val.Tag != "!!null" {
			*errs = append(*errs, fmt.Sprintf("%s:%d: notifications: want a mapping, got %s", h.path, sec.line, describe(sec.val, true)))
		}
		return
	}
	keys := map[string]h2kNode{}
	for i := 0; i+1 < len(sec.val.Content); i += 2 {
		k, v := sec.val.Content[i], sec.val.Content[i+1]
		line := v.Line
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		if _, known := hyper2kvmNotificationKeys[k.Value]; !known {
			*errs = append(*errs, fmt.Sprintf("%s:%d: unknown key %s (hyper2kvm's notifications: has %s)", h.path, k.Line,
				showKey("notifications.", k.Value), strings.Join(sortedKeys(hyper2kvmNotificationKeys), ", ")))
			continue
		}
		keys[k.Value] = h2kNode{k, v, line}
	}
	on := func(key string) bool {
		n, ok := keys[key]
		if !ok {
			return false
		}
		b, ok := h.scalar(n, kindBool, errs)
		return ok && b == "true"
	}
	if !on("enabled") { // hyper2kvm's default: off
		return
	}
	str := func(key string, kind valueKind) (string, h2kNode, bool) {
		n, ok := keys[key]
		if !ok || n.val.Tag == "!!null" {
			return "", n, false
		}
		s, ok := h.scalar(n, kind, errs)
		return s, n, ok && s != ""
	}
	if u, n, ok := str("webhook_url", kindString); ok {
		h.set("notify.webhook-url", []any{u}, n.line, "notifications.webhook_url")
		if f, n, ok := str("webhook_type", kindString); ok {
			h.set("notify.webhook-format", f, n.line, "notifications.webhook_type")
		}
	}
	if !on("email_enabled") {
		return
	}
	if host, n, ok := str("email_smtp_host", kindString); ok {
		port := "587" // hyper2kvm's default, with STARTTLS as it does
		if p, _, ok := str("email_smtp_port", kindInt); ok {
			port = p
		}
		h.set("notify.email.server", net.JoinHostPort(host, port), n.line, "notifications.email_smtp_host")
	}
	if from, n, ok := str("email_from", kindString); ok {
		h.set("notify.email.from", from, n.line, "notifications.email_from")
	}
	if n, ok := keys["email_to"]; ok {
		if v, err := convert(kindList, n.val, "", false); err != nil {
			*errs = append(*errs, fmt.Sprintf("%s:%d: notifications.email_to: %v", h.path, n.line, err))
		} else if v != nil {
			h.set("notify.email.to", v, n.line, "notifications.email_to")
		}
	}
	if user, n, ok := str("email_username", kindString); ok {
		h.set("notify.email.user", user, n.line, "notifications.email_username")
	}
	if pw, n, ok := str("email_password", kindString); ok {
		h.emailPassword = pw
		h.used = append(h.used, usedKey{n.line, "notifications.email_password", "the SMTP password (inline)"})
		h.warnings = append(h.warnings, inlineSecretWarning(h.path, n.line, "notifications.email_password", "--notify.email.password-file"))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
