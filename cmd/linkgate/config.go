package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"go.yaml.in/yaml/v3"
)

// A configuration file is YAML. It accepts hyper2kvm's keys as written in
// its network-resilience design note (network_monitor.*, vc_connection_*)
// and linkgate's own, each mapped onto exactly one flag. Precedence is
// flag > environment (LINKGATE_*) > file > default: the file is a kong
// resolver that yields to a set environment variable.

type valueKind int

const (
	kindString valueKind = iota
	kindBool
	kindInt
	kindSeconds  // a number of seconds (hyper2kvm's *_s keys)
	kindDuration // a Go duration string ("15s") or a number of seconds
	kindList     // a string or a list of strings
	kindPath     // a file path, relative to the config file's folder
	kindIgnored  // accepted for compatibility, not used
)

type keySpec struct {
	flag string
	kind valueKind
	help string
}

// configKeys is the whole file format: every key a file may contain.
var configKeys = map[string]keySpec{
	// hyper2kvm's keys (docs/network-resilience: "Configuration").
	"cmd":                                   {"", kindIgnored, "hyper2kvm's subcommand; ignored by linkgate"},
	"network_monitor.enabled":               {"network.monitor", kindBool, ""},
	"network_monitor.required_interfaces":   {"network.required-interfaces", kindList, ""},
	"network_monitor.max_network_wait_s":    {"network.max-wait", kindSeconds, ""},
	"network_monitor.pause_on_network_down": {"network.pause-on-down", kindBool, ""},
	"vc_connection_max_retries":             {"vcenter.max-retries", kindInt, ""},
	"vc_connection_base_backoff_s":          {"vcenter.base-backoff", kindSeconds, ""},
	"vc_connection_max_backoff_s":           {"vcenter.max-backoff", kindSeconds, ""},
	"vc_connection_timeout_s":               {"vcenter.timeout", kindSeconds, ""},
	"vc_connection_enable_jitter":           {"vcenter.jitter", kindBool, ""},
	// linkgate's own keys.
	"netns":                     {"netns", kindPath, ""},
	"web.listen_address":        {"web.listen-address", kindList, ""},
	"web.telemetry_path":        {"web.telemetry-path", kindString, ""},
	"web.config_file":           {"web.config.file", kindPath, ""},
	"log.level":                 {"log.level", kindString, ""},
	"log.format":                {"log.format", kindString, ""},
	"collector.device_include":  {"collector.device-include", kindString, ""},
	"collector.device_exclude":  {"collector.device-exclude", kindString, ""},
	"collector.verify_interval": {"collector.verify-interval", kindDuration, ""},
	"vcenter.targets":           {"vcenter.url", kindList, ""},
	"vcenter.user":              {"vcenter.user", kindString, ""},
	"vcenter.password_file":     {"vcenter.password-file", kindPath, ""},
	"vcenter.ca_file":           {"vcenter.ca-file", kindPath, ""},
	"vcenter.thumbprint":        {"vcenter.thumbprint", kindString, ""},
	"vcenter.insecure":          {"vcenter.insecure", kindBool, ""},
	"vcenter.interval":          {"vcenter.interval", kindDuration, ""},
	"gate.stable_for":           {"gate.stable-for", kindDuration, ""},
	"gate.addresses":            {"gate.addresses", kindString, ""},
	"gate.default_route":        {"gate.default-route", kindString, ""},
	"notify.webhook_urls":       {"notify.webhook-url", kindList, ""},
	"notify.webhook_format":     {"notify.webhook-format", kindString, ""},
}

// fileValue is one key's value as the flag text kong parses, and where it came from.
type fileValue struct {
	value any // string or []any of strings
	line  int
	key   string
}

// fileConfig is a parsed configuration file, indexed by flag name.
type fileConfig struct {
	path   string
	byFlag map[string]fileValue
}

// origin says where a flag's value came from, for error messages.
func (f *fileConfig) origin(flag string) (string, bool) {
	if f == nil {
		return "", false
	}
	v, ok := f.byFlag[flag]
	if !ok {
		return "", false
	}
	return fmt.Sprintf("%s:%d: %s", f.path, v.line, v.key), true
}

// configError is a problem with configuration input: exit code 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// loadConfigFile reads and strictly validates a configuration file.
func loadConfigFile(path string) (*fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, configErrorf("config file: %v", err)
	}
	return parseConfig(path, data)
}

func parseConfig(path string, data []byte) (*fileConfig, error) {
	cfg := &fileConfig{path: path, byFlag: make(map[string]fileValue)}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, nil // an empty file is a valid, empty config
		}
		return nil, configErrorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return cfg, nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, configErrorf("%s:%d: a second YAML document; the file must hold exactly one", path, extra.Line)
	} else if !errors.Is(err, io.EOF) {
		return nil, configErrorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, configErrorf("%s:%d: the file must be a mapping of keys to values", path, root.Line)
	}
	var errs []string
	cfg.walk(root, "", &errs)
	if len(errs) > 0 {
		return nil, &configError{msg: strings.Join(errs, "\n")}
	}
	return cfg, nil
}

func (f *fileConfig) walk(m *yaml.Node, prefix string, errs *[]string) {
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := prefix + k.Value
		if line, dup := seen[k.Value]; dup {
			*errs = append(*errs, fmt.Sprintf("%s:%d: duplicate key %q (first at line %d)", f.path, k.Line, key, line))
			continue
		}
		seen[k.Value] = k.Line
		spec, known := configKeys[key]
		if !known {
			if v.Kind == yaml.MappingNode && hasKeyPrefix(key+".") {
				f.walk(v, key+".", errs)
				continue
			}
			*errs = append(*errs, fmt.Sprintf("%s:%d: unknown key %q%s", f.path, k.Line, key, suggest(key)))
			continue
		}
		val, err := convert(spec.kind, v, filepath.Dir(f.path))
		if err != nil {
			*errs = append(*errs, fmt.Sprintf("%s:%d: %s: %v", f.path, v.Line, key, err))
			continue
		}
		if spec.kind == kindIgnored || val == nil {
			continue
		}
		f.byFlag[spec.flag] = fileValue{value: val, line: v.Line, key: key}
	}
}

func hasKeyPrefix(p string) bool {
	for k := range configKeys {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// suggest names the known keys of the same section, to help with typos.
func suggest(key string) string {
	section := ""
	if i := strings.LastIndex(key, "."); i >= 0 {
		section = key[:i+1]
	}
	var same []string
	for k := range configKeys {
		if section != "" && strings.HasPrefix(k, section) {
			same = append(same, k)
		}
	}
	if len(same) == 0 {
		return ""
	}
	sort.Strings(same)
	return " (known keys here: " + strings.Join(same, ", ") + ")"
}

func convert(kind valueKind, v *yaml.Node, dir string) (any, error) {
	if kind == kindIgnored {
		return nil, nil
	}
	if v.Tag == "!!null" {
		return nil, nil // "key:" with no value means "not set"
	}
	if kind == kindList {
		switch v.Kind {
		case yaml.ScalarNode:
			if v.Tag != "!!str" {
				return nil, fmt.Errorf("want a string or a list of strings, got %s", describe(v))
			}
			return []any{v.Value}, nil
		case yaml.SequenceNode:
			out := make([]any, 0, len(v.Content))
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode || (e.Tag != "!!str" && e.Tag != "!!int") {
					return nil, fmt.Errorf("want a list of strings, got an element %s at line %d", describe(e), e.Line)
				}
				out = append(out, e.Value)
			}
			return out, nil
		}
		return nil, fmt.Errorf("want a string or a list of strings, got %s", describe(v))
	}
	if v.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("want a single value, got %s", describe(v))
	}
	switch kind {
	case kindBool:
		if v.Tag != "!!bool" {
			return nil, fmt.Errorf("want true or false, got %s", describe(v))
		}
		b, _ := strconv.ParseBool(strings.ToLower(v.Value))
		return strconv.FormatBool(b), nil
	case kindInt:
		if v.Tag != "!!int" {
			return nil, fmt.Errorf("want an integer, got %s", describe(v))
		}
		n, err := strconv.ParseInt(v.Value, 0, 64)
		if err != nil {
			return nil, fmt.Errorf("want an integer, got %s", describe(v))
		}
		return strconv.FormatInt(n, 10), nil
	case kindSeconds, kindDuration:
		if v.Tag == "!!int" || v.Tag == "!!float" {
			f, err := strconv.ParseFloat(v.Value, 64)
			if err != nil || f < 0 {
				return nil, fmt.Errorf("want a non-negative number of seconds, got %s", describe(v))
			}
			return time.Duration(f * float64(time.Second)).String(), nil
		}
		if kind == kindDuration && v.Tag == "!!str" {
			d, err := time.ParseDuration(v.Value)
			if err != nil || d < 0 {
				return nil, fmt.Errorf("want a duration like 15s, got %s", describe(v))
			}
			return d.String(), nil
		}
		return nil, fmt.Errorf("want a number of seconds, got %s", describe(v))
	case kindPath:
		if v.Tag != "!!str" {
			return nil, fmt.Errorf("want a path, got %s", describe(v))
		}
		p := v.Value
		if p != "" && !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return p, nil
	default:
		if v.Tag != "!!str" && v.Tag != "!!int" && v.Tag != "!!float" {
			return nil, fmt.Errorf("want a string, got %s", describe(v))
		}
		return v.Value, nil
	}
}

func describe(v *yaml.Node) string {
	switch v.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch v.Tag {
	case "!!str":
		return fmt.Sprintf("the string %q", v.Value)
	case "!!int":
		return "the integer " + v.Value
	case "!!float":
		return "the number " + v.Value
	case "!!bool":
		return v.Value
	}
	return fmt.Sprintf("%q", v.Value)
}

// fileResolver feeds a configuration file into kong below the command line
// and the environment. The file path comes from --config / LINKGATE_CONFIG,
// so it is loaded on first use.
type fileResolver struct {
	loaded bool
	cfg    *fileConfig
	err    error
}

func (r *fileResolver) Validate(*kong.Application) error { return nil }

func (r *fileResolver) Resolve(ctx *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	if !r.loaded {
		r.loaded = true
		path := ""
		for _, f := range ctx.Flags() {
			if f.Name == "config" {
				if s, ok := ctx.FlagValue(f).(string); ok {
					path = s
				}
			}
		}
		if path != "" {
			r.cfg, r.err = loadConfigFile(path)
		}
	}
	// A broken file is reported by main after parsing, without kong's
	// flag-specific wrapping.
	if r.err != nil || r.cfg == nil {
		return nil, nil
	}
	v, ok := r.cfg.byFlag[flag.Name]
	if !ok {
		return nil, nil
	}
	for _, env := range flag.Envs {
		if _, set := os.LookupEnv(env); set {
			return nil, nil // the environment beats the file
		}
	}
	return v.value, nil
}

// flagOrigin tells where a flag's effective value came from.
func flagOrigin(ctx *kong.Context, r *fileResolver, name string) string {
	for _, p := range ctx.Path {
		if p.Flag != nil && p.Flag.Name == name && !p.Resolved {
			return "--" + name
		}
	}
	for _, f := range ctx.Flags() {
		if f.Name != name {
			continue
		}
		for _, env := range f.Envs {
			if _, set := os.LookupEnv(env); set {
				return env
			}
		}
	}
	if o, ok := r.cfg.origin(name); ok {
		return o
	}
	return "--" + name
}
