// Command linkgate watches the kernel's network state over rtnetlink and a
// vCenter endpoint, exports both to Prometheus, and gates VM migrations on
// them. This package only wires the collector, probe and sidecar packages
// into a CLI:
//
//	main.go    the commands, parsing (flag > LINKGATE_* > file > default)
//	           and runEnv, what every command's Run receives
//	flags.go   the flag groups; each validates itself and builds its
//	           package's options (collector.Options, probe.Config, ...)
//	config.go  the YAML file, a kong resolver; its keys are flag tags
//	serve.go   exporter and sidecar: collector → probe → gate → HTTP
//	           server, run until SIGTERM
//	reload.go  SIGHUP
//	wait.go, check.go, demo.go (vcsim.go)   the tools
//	exit.go    the exit codes
//
// ARCHITECTURE.md at the top of the repository has the whole picture.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"runtime/debug"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/linkgate/linkgate/probe"
	"github.com/prometheus/common/version"
)

type cli struct {
	Exporter exporterCmd `cmd:"" help:"Serve Prometheus metrics about links, addresses, routes, neighbours and vCenter."`
	Sidecar  sidecarCmd  `cmd:"" help:"Exporter plus the /ready gate other containers wait on before they migrate."`
	Wait     waitCmd     `cmd:"" help:"Block until ready: a running sidecar (--url) or local links. Exit 0 ready, 1 timed out, 2 error."`
	Check    checkCmd    `cmd:"" help:"Evaluate every readiness check once and print why. Exit 0 ready, 1 not ready, 2 error."`
	Demo     demoCmd     `cmd:"" help:"Run the sidecar against an in-process vCenter simulator; no configuration needed."`
	Version  versionCmd  `cmd:"" help:"Print version information."`
}

type versionCmd struct{}

func (versionCmd) Run(out io.Writer) error {
	_, err := fmt.Fprintln(out, version.Print("linkgate"))
	return err
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Without -ldflags (go run, go install) take the version from the module
// and VCS information the Go toolchain embeds.
func init() {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if version.Version == "" {
		version.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision" && (version.Revision == "" || version.Revision == "unknown"):
			version.Revision = s.Value
		case s.Key == "vcs.time" && version.BuildDate == "":
			version.BuildDate = s.Value
		}
	}
}

// parsed is the outcome of parsing a command line.
type parsed struct {
	cli  cli
	kctx *kong.Context
	res  *fileResolver
}

// parse parses args with flags, environment and configuration file. It
// returns an exit code >= 0 when parsing itself ends the program (--help,
// invalid usage or configuration).
func parse(args []string, stdout, stderr io.Writer) (*parsed, int) {
	p := &parsed{res: &fileResolver{}}
	exitCode := -1
	parser, err := kong.New(&p.cli,
		kong.Name("linkgate"),
		kong.Description("Gate VM migrations on kernel network state and vCenter reachability."),
		kong.DefaultEnvars("LINKGATE"),
		kong.Resolvers(p.res),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exitCode = code }),
		kong.BindTo(stdout, (*io.Writer)(nil)),
	)
	if err != nil {
		fmt.Fprintf(stderr, "linkgate: %v\n", err)
		return nil, exitFailure
	}
	showDefaults(parser.Model.Node)
	if len(args) == 0 {
		// No command: the whole help (kong's error lists only some
		// commands), as invalid usage.
		_, _ = parser.Parse([]string{"--help"})
		return nil, exitInvalid
	}
	p.kctx, err = parser.Parse(joinNegativeDurations(parser.Model, commandFirst(args)))
	if exitCode >= 0 { // --help
		return nil, exitCode
	}
	if p.res.err != nil {
		fmt.Fprintf(stderr, "linkgate: %v\n", p.res.err)
		return nil, exitInvalid
	}
	if err != nil {
		fmt.Fprintf(stderr, "linkgate: %v\n", err)
		return nil, exitInvalid
	}
	return p, -1
}

// leadingFlags are the flags that may also come before the command
// (`linkgate --config FILE --config.check exporter`), as they could when
// they were global; true: the flag takes a value.
var leadingFlags = map[string]bool{"--config": true, "--config.check": false, "--hyper2kvm.config": true, "--log.level": true, "--log.format": true}

// commandFirst moves leadingFlags found before the command to just after
// it, where the commands declare them.
func commandFirst(args []string) []string {
	var moved []string
	for i := 0; i < len(args); i++ {
		name, _, joined := strings.Cut(args[i], "=")
		takesValue, ok := leadingFlags[name]
		if !ok {
			if i == 0 || strings.HasPrefix(args[i], "-") {
				return args // no leading flags, or one this does not know
			}
			out := append([]string{args[i]}, moved...)
			return append(out, args[i+1:]...)
		}
		moved = append(moved, args[i])
		if takesValue && !joined && i+1 < len(args) {
			i++
			moved = append(moved, args[i])
		}
	}
	return args
}

// showDefaults adds each flag's default to its help where kong's help
// would not show it: kong prints a default only as the placeholder of a
// flag without one, never for a boolean.
func showDefaults(n *kong.Node) {
	for _, f := range n.Flags {
		if !f.HasDefault || f.Default == "" || (f.PlaceHolder == "" && !f.IsBool()) || (f.IsBool() && f.Default == "false") {
			continue
		}
		f.Help = strings.TrimSuffix(f.Help, ".") + ". Default: " + f.Default + "."
	}
	for _, c := range n.Children {
		showDefaults(c)
	}
}

// joinNegativeDurations turns "--timeout -1s" into "--timeout=-1s" for
// every duration flag. kong reads a value starting with '-' as short flags
// and answers with a puzzle (`expected duration value but got "-1s" (short
// flag)`); joined, the value reaches validation, whose message names the
// flag, the value and what is allowed.
func joinNegativeDurations(app *kong.Application, args []string) []string {
	durations := map[string]bool{}
	var visit func(n *kong.Node)
	visit = func(n *kong.Node) {
		for _, f := range n.Flags {
			if f.Target.Type() == reflect.TypeFor[time.Duration]() {
				durations["--"+f.Name] = true
			}
		}
		for _, c := range n.Children {
			visit(c)
		}
	}
	visit(app.Node)
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if durations[a] && i+1 < len(args) && strings.HasPrefix(args[i+1], "-") {
			if _, err := time.ParseDuration(args[i+1]); err == nil {
				out = append(out, a+"="+args[i+1])
				i++
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

// selected is the chosen command's struct (*sidecarCmd, ...).
func (p *parsed) selected() any {
	if n := p.kctx.Selected(); n != nil && n.Target.CanAddr() {
		return n.Target.Addr().Interface()
	}
	return nil
}

// logging is the chosen command's log settings (defaults for version).
func (p *parsed) logging() *logFlags {
	if c, ok := p.selected().(interface{ logging() *logFlags }); ok {
		return c.logging()
	}
	return &logFlags{LogLevel: "info", LogFormat: "logfmt"}
}

// run parses args and runs the selected command, returning the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	p, code := parse(args, stdout, stderr)
	if code >= 0 {
		return code
	}
	env := &runEnv{stdout: stdout, stderr: stderr, kctx: p.kctx, res: p.res, args: args}
	lf := p.logging()
	env.level = new(slog.LevelVar)
	env.level.Set(parseLevel(lf.LogLevel))
	env.logger = newLogger(stderr, env.level, lf.LogFormat)
	if c, ok := p.selected().(interface{ configCheck() bool }); ok {
		env.configCheck = c.configCheck()
	}
	if h := p.res.h2k; h != nil {
		for _, w := range h.warnings {
			env.logger.Warn(w)
		}
		for _, w := range env.inlineSecretsIgnored() {
			env.logger.Warn("hyper2kvm file " + h.path + ": not using " + w + ": its password is for the server and user the file names")
		}
	}
	err := p.kctx.Run(env)
	if ee := (*exitError)(nil); err != nil && !(errors.As(err, &ee) && ee.err == nil) {
		fmt.Fprintf(stderr, "linkgate: %v\n", err)
	}
	return exitCode(err)
}

// runEnv is what every command's Run receives.
type runEnv struct {
	stdout, stderr io.Writer
	kctx           *kong.Context
	res            *fileResolver
	configCheck    bool // --config.check: validate, then exit
	logger         *slog.Logger
	level          *slog.LevelVar // changed by a configuration reload
	args           []string       // re-parsed on SIGHUP
	demo           bool
	listening      func() // called once the HTTP listeners are open (demo's banner)
	// reachHook, when set, adjusts the options of each target's host
	// reachability probe before it is built (vsphereFlags.reachOptions):
	// the demo's stand-in hosts, and a test's seam (it dials from a
	// network namespace, with a short interval). Unset, baseReachHook.
	reachHook func(*probe.ReachOptions)
}

// baseReachHook is the reachHook of a runEnv that sets none: nil in the
// product. This package's tests set it (TestMain) so that no probe of
// theirs resolves a simulator's host name through DNS or dials beyond
// loopback.
var baseReachHook func(*probe.ReachOptions)

// inlineSecrets are the passwords a hyper2kvm file gave inline: used, never
// flags, never shown. Each is used only for the server and user that the
// same file gave (vcenter and vc_user; email_smtp_host and
// email_username): a server or user set elsewhere (a flag, linkgate's
// file, the environment) must not get hyper2kvm's password.
type inlineSecrets struct{ vcenter, email string }

func (e *runEnv) inlineSecrets() inlineSecrets {
	if e == nil || e.res == nil || e.res.h2k == nil {
		return inlineSecrets{}
	}
	var s inlineSecrets
	if e.fromHyper2kvm("vcenter.url", "vcenter.user") {
		s.vcenter = e.res.h2k.vcenterPassword
	}
	if e.fromHyper2kvm("notify.email.server", "notify.email.user") {
		s.email = e.res.h2k.emailPassword
	}
	return s
}

// inlineSecretsIgnored names the inline passwords of the hyper2kvm file
// that inlineSecrets does not use, for a warning.
func (e *runEnv) inlineSecretsIgnored() []string {
	if e == nil || e.res == nil || e.res.h2k == nil {
		return nil
	}
	var out []string
	s := e.inlineSecrets()
	if e.res.h2k.vcenterPassword != "" && s.vcenter == "" {
		out = append(out, "the vCenter password (--vcenter.url or --vcenter.user is set elsewhere)")
	}
	if e.res.h2k.emailPassword != "" && s.email == "" {
		out = append(out, "the SMTP password (--notify.email.server or --notify.email.user is set elsewhere)")
	}
	return out
}

// fromHyper2kvm says every flag's value came from the hyper2kvm file.
func (e *runEnv) fromHyper2kvm(flags ...string) bool {
	for _, f := range flags {
		o, ok := e.res.h2k.origin(f)
		if !ok || e.origin(f) != o {
			return false
		}
	}
	return true
}

// configChecked ends a --config.check run: validation has passed by now.
func (e *runEnv) configChecked() bool {
	if !e.configCheck {
		return false
	}
	fmt.Fprintln(e.stdout, "configuration is valid")
	if e.res != nil && e.res.h2k != nil {
		h := e.res.h2k
		fmt.Fprintf(e.stdout, "hyper2kvm configuration %s: %d keys used, %d hyper2kvm-only keys ignored\n", h.path, len(h.used), h.ignored)
		for _, u := range h.used {
			fmt.Fprintf(e.stdout, "  line %s\n", u)
		}
	}
	return true
}

// isSet reports whether a flag was given on the command line, in the
// environment or in the configuration file (not just defaulted).
func (e *runEnv) isSet(flag string) bool {
	if e.kctx == nil {
		return false
	}
	for _, p := range e.kctx.Path {
		if p.Flag != nil && p.Flag.Name == flag {
			return true
		}
	}
	for _, f := range e.kctx.Flags() {
		if f.Name != flag {
			continue
		}
		for _, env := range f.Envs {
			if _, ok := os.LookupEnv(env); ok {
				return true
			}
		}
	}
	return false
}

// origin names where a flag's value came from: flag, env var, or file:line.
func (e *runEnv) origin(flag string) string { return flagOrigin(e.kctx, e.res, flag) }

func (e *runEnv) invalid(flag, format string, args ...any) error {
	return configErrorf("%s: %s", e.origin(flag), fmt.Sprintf(format, args...))
}

func parseLevel(level string) slog.Level {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	return lv
}

func newLogger(w io.Writer, level slog.Leveler, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
