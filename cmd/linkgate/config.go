package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/linkgate/linkgate/internal/boundedfile"
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
}

// configKeys is the whole file format: every key a file may contain. Each
// key is declared on its flag, by the tag config:"key[,path|seconds]" (see
// flags.go); the kind of value follows from the flag's Go type.
var configKeys = func() map[string]keySpec {
	keys := map[string]keySpec{
		// hyper2kvm's subcommand (docs/network-resilience: "Configuration").
		"cmd": {"", kindIgnored},
	}
	var visit func(t reflect.Type)
	visit = func(t reflect.Type) {
		for _, f := range reflect.VisibleFields(t) {
			tag, ok := f.Tag.Lookup("config")
			if !ok {
				if _, isCmd := f.Tag.Lookup("cmd"); isCmd && f.Type.Kind() == reflect.Struct {
					visit(f.Type)
				}
				continue
			}
			key, kind, _ := strings.Cut(tag, ",")
			keys[key] = keySpec{f.Tag.Get("name"), valueKindOf(f.Type, kind)}
		}
	}
	visit(reflect.TypeFor[cli]())
	return keys
}()

// valueKindOf is how a file value for a flag of type t is read; option is
// the config tag's kind ("path", "seconds" or nothing).
func valueKindOf(t reflect.Type, option string) valueKind {
	switch {
	case option == "path":
		return kindPath
	case option == "seconds":
		return kindSeconds
	case t == reflect.TypeFor[time.Duration]():
		return kindDuration
	case t.Kind() == reflect.Bool:
		return kindBool
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return kindInt
	case t.Kind() == reflect.Slice:
		return kindList
	}
	return kindString
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

// loadConfigFile reads and strictly validates a configuration file; origin
// names where the path came from (--config or LINKGATE_CONFIG).
func loadConfigFile(origin, path string) (*fileConfig, error) {
	data, err := boundedfile.Read(path, boundedfile.Config)
	if err != nil {
		return nil, configErrorf("%s: %v", origin, err)
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
		return nil, yamlError(path, data, err)
	}
	if len(doc.Content) == 0 {
		return cfg, nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, configErrorf("%s:%d: a second YAML document; the file must hold exactly one", path, extra.Line)
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(path, data, err)
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return cfg, nil // only "---": as empty as an empty file
	}
	if root.Kind != yaml.MappingNode {
		return nil, configErrorf("%s:%d: the file must be a mapping of keys to values", path, root.Line)
	}
	var errs []string
	cfg.walk(root, "", &errs)
	if len(errs) > maxConfigErrors {
		errs = append(errs[:maxConfigErrors], fmt.Sprintf("%s: and %d more problems", path, len(errs)-maxConfigErrors))
	}
	if len(errs) > 0 {
		return nil, &configError{msg: strings.Join(errs, "\n")}
	}
	return cfg, nil
}

// maxConfigErrors bounds the report on a broken file: the first ones
// explain it, thousands would only flood the log.
const maxConfigErrors = 20

// unknownAnchorRE is the one YAML syntax error that quotes the file: an
// alias's name, which could be a token (webhook_urls: *T0K3N). It also
// lacks a line number.
var unknownAnchorRE = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)

// yamlError is a YAML parser error as path: message, without any text of
// the file. The "line N" of yaml.v3's own message is left as it is: for a
// parser error it is the line before the problem (0-based).
func yamlError(path string, data []byte, err error) error {
	if m := unknownAnchorRE.FindStringSubmatch(err.Error()); m != nil {
		where := path
		if i := bytes.Index(data, []byte("*"+m[1])); i >= 0 {
			where = fmt.Sprintf("%s:%d", path, 1+bytes.Count(data[:i], []byte("\n")))
		}
		return configErrorf("%s: an alias (*name) refers to no anchor (&name) before it; the name is not shown", where)
	}
	return configErrorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
}

func (f *fileConfig) walk(m *yaml.Node, prefix string, errs *[]string) {
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := prefix + k.Value
		if line, dup := seen[k.Value]; dup {
			*errs = append(*errs, fmt.Sprintf("%s:%d: duplicate key %s (first at line %d)", f.path, k.Line, showKey(prefix, k.Value), line))
			continue
		}
		seen[k.Value] = k.Line
		line := v.Line
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias // *name stands for the value at &name
		}
		secret := secretKey(key)
		spec, known := configKeys[key]
		if !known {
			if sub := subkeys(key); len(sub) > 0 {
				switch {
				case v.Kind == yaml.MappingNode:
					f.walk(v, key+".", errs)
				case v.Tag != "!!null": // "section:" alone is an empty section
					*errs = append(*errs, fmt.Sprintf("%s:%d: %s: want a mapping (keys: %s), got %s",
						f.path, line, key, strings.Join(sub, ", "), describe(v, secret)))
				}
				continue
			}
			*errs = append(*errs, fmt.Sprintf("%s:%d: unknown key %s%s", f.path, k.Line, showKey(prefix, k.Value), suggest(prefix)))
			continue
		}
		val, err := convert(spec.kind, v, filepath.Dir(f.path), secret)
		if err != nil {
			*errs = append(*errs, fmt.Sprintf("%s:%d: %s: %v", f.path, line, key, err))
			continue
		}
		if spec.kind == kindIgnored || val == nil {
			continue
		}
		f.byFlag[spec.flag] = fileValue{value: val, line: line, key: key}
	}
}

// subkeys lists the next level of known keys under section, or nothing
// when section is not one.
func subkeys(section string) []string {
	set := map[string]bool{}
	for k := range configKeys {
		if rest, ok := strings.CutPrefix(k, section+"."); ok {
			name, _, _ := strings.Cut(rest, ".")
			set[name] = true
		}
	}
	out := make([]string, 0, len(set))
	for name := range set {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// keyNameRE is what a key of this format looks like. Anything else is not
// echoed: a misplaced line can make a token or URL a key (notify:
// {https://hooks.example/T0K3N}).
var keyNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// showKey quotes an unknown or duplicate key, or says why it is not shown.
func showKey(prefix, name string) string {
	if keyNameRE.MatchString(name) {
		return strconv.Quote(prefix + name)
	}
	return "(not shown: a key is lower-case letters, digits and '_')"
}

// secretWords mark a key whose value may hold a secret: webhook URLs carry
// their token in the path (and a misplaced one lands in webhook_format),
// vCenter targets may carry user info, and anything named for a password,
// token or secret. Such values are never echoed in an error; the error
// names the file:line, the key and what is wrong. Matching names rather
// than listing keys keeps a key added later safe by default.
var secretWords = []string{"password", "token", "secret", "webhook", "url", "target"}

// secretKey reports whether key, or a key of the section key, is named for
// a secret.
func secretKey(key string) bool {
	named := func(k string) bool {
		for _, w := range secretWords {
			if strings.Contains(k, w) {
				return true
			}
		}
		return false
	}
	if named(key) {
		return true
	}
	for k := range configKeys {
		if strings.HasPrefix(k, key+".") && named(k) {
			return true
		}
	}
	return false
}

// suggest names the known keys of a section, to help with typos.
func suggest(section string) string {
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

// maxSeconds is the longest time.Duration in whole seconds (292 years).
const maxSeconds = math.MaxInt64 / int64(time.Second)

// convert turns a YAML value into the flag text kong parses. secret: the
// value is described by its type only (see secretKey).
func convert(kind valueKind, v *yaml.Node, dir string, secret bool) (any, error) {
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
				return nil, fmt.Errorf("want a string or a list of strings, got %s", describe(v, secret))
			}
			return []any{v.Value}, nil
		case yaml.SequenceNode:
			out := make([]any, 0, len(v.Content))
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode || (e.Tag != "!!str" && e.Tag != "!!int") {
					return nil, fmt.Errorf("want a list of strings; the element at line %d is %s", e.Line, describe(e, secret))
				}
				out = append(out, e.Value)
			}
			return out, nil
		}
		return nil, fmt.Errorf("want a string or a list of strings, got %s", describe(v, secret))
	}
	if v.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("want a single value, got %s", describe(v, secret))
	}
	switch kind {
	case kindBool:
		if v.Tag != "!!bool" {
			return nil, fmt.Errorf("want true or false, got %s", describe(v, secret))
		}
		b, _ := strconv.ParseBool(strings.ToLower(v.Value))
		return strconv.FormatBool(b), nil
	case kindInt:
		if v.Tag != "!!int" {
			return nil, fmt.Errorf("want an integer, got %s", describe(v, secret))
		}
		n, err := strconv.ParseInt(v.Value, 0, 64)
		if err != nil {
			return nil, fmt.Errorf("want an integer of 64 bits, got %s", describe(v, secret))
		}
		return strconv.FormatInt(n, 10), nil
	case kindSeconds, kindDuration:
		if v.Tag == "!!int" || v.Tag == "!!float" {
			f, err := strconv.ParseFloat(v.Value, 64)
			if err != nil || !(f >= 0 && f <= float64(maxSeconds)) { // also NaN
				return nil, fmt.Errorf("want a number of seconds from 0 to %d (292 years), got %s", maxSeconds, describe(v, secret))
			}
			return time.Duration(f * float64(time.Second)).String(), nil
		}
		if kind == kindDuration && v.Tag == "!!str" {
			d, err := time.ParseDuration(v.Value)
			if err != nil || d < 0 {
				return nil, fmt.Errorf("want a duration of 0 or more like 15s, or a number of seconds, got %s", describe(v, secret))
			}
			return d.String(), nil
		}
		return nil, fmt.Errorf("want a number of seconds, got %s", describe(v, secret))
	case kindPath:
		if v.Tag != "!!str" {
			return nil, fmt.Errorf("want a path, got %s", describe(v, secret))
		}
		p := v.Value
		if p != "" && !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return p, nil
	default:
		if v.Tag != "!!str" && v.Tag != "!!int" && v.Tag != "!!float" {
			return nil, fmt.Errorf("want a string, got %s", describe(v, secret))
		}
		return v.Value, nil
	}
}

// describe says what a YAML value is for an error; with secret, only its
// type, never its text or its tag (a tag can hold a URL too).
func describe(v *yaml.Node, secret bool) string {
	switch v.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if secret {
		what, ok := map[string]string{
			"!!str": "a string", "!!int": "an integer", "!!float": "a number", "!!bool": "true or false",
			"!!binary": "binary data", "!!timestamp": "a timestamp",
		}[v.Tag]
		if !ok {
			what = "a value with a custom tag"
		}
		return what + " (not shown: this key may hold a secret)"
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
	if !strings.HasPrefix(v.Tag, "!!") {
		return fmt.Sprintf("%q tagged %s", v.Value, v.Tag)
	}
	return fmt.Sprintf("%q", v.Value)
}

// fileResolver feeds the configuration files into kong below the command
// line and the environment: linkgate's own (--config), then a hyper2kvm
// file (--hyper2kvm.config, from the command line, the environment or
// linkgate's file). The paths come from flags, so the files are loaded on
// first use.
type fileResolver struct {
	loaded bool
	cfg    *fileConfig
	h2k    *hyper2kvmConfig
	err    error
}

func (r *fileResolver) Validate(*kong.Application) error { return nil }

// flagString is a string flag's value as parsed so far (command line or
// environment), or "".
func flagString(ctx *kong.Context, name string) string {
	for _, f := range ctx.Flags() {
		if f.Name == name {
			if s, ok := ctx.FlagValue(f).(string); ok {
				return s
			}
		}
	}
	return ""
}

func (r *fileResolver) load(ctx *kong.Context) {
	r.loaded = true
	if path := flagString(ctx, "config"); path != "" {
		if r.cfg, r.err = loadConfigFile(flagOrigin(ctx, nil, "config"), path); r.err != nil {
			return
		}
	}
	h2k, origin := flagString(ctx, "hyper2kvm.config"), flagOrigin(ctx, nil, "hyper2kvm.config")
	if h2k == "" {
		if v, ok := r.cfg.value("hyper2kvm.config"); ok {
			h2k, _ = v.value.(string)
			origin, _ = r.cfg.origin("hyper2kvm.config")
		}
	}
	if h2k != "" {
		r.h2k, r.err = loadHyper2kvmConfig(origin, h2k)
	}
}

func (r *fileResolver) Resolve(ctx *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	if !r.loaded {
		r.load(ctx)
	}
	// A broken file is reported by main after parsing, without kong's
	// flag-specific wrapping.
	if r.err != nil {
		return nil, nil
	}
	for _, env := range flag.Envs {
		if _, set := os.LookupEnv(env); set {
			return nil, nil // the environment beats the files
		}
	}
	if v, ok := r.cfg.value(flag.Name); ok {
		return v.value, nil
	}
	if r.h2k != nil {
		if v, ok := r.h2k.value(flag.Name); ok {
			return v.value, nil
		}
	}
	return nil, nil
}

// value is the file's value for a flag.
func (f *fileConfig) value(flag string) (fileValue, bool) {
	if f == nil {
		return fileValue{}, false
	}
	v, ok := f.byFlag[flag]
	return v, ok
}

// flagOrigin tells where a flag's effective value came from.
func flagOrigin(ctx *kong.Context, r *fileResolver, name string) string {
	if ctx == nil {
		return "--" + name
	}
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
	if r == nil {
		return "--" + name
	}
	if o, ok := r.cfg.origin(name); ok {
		return o
	}
	if r.h2k != nil {
		if o, ok := r.h2k.origin(name); ok {
			return o
		}
	}
	return "--" + name
}
