package main

import (
	"io"
	"reflect"
	"slices"

	"github.com/linkgate/linkgate/collector"
)

// reloadable is a serving command whose configuration SIGHUP re-reads.
type reloadable interface {
	validate(*runEnv) error
	serving() *serveFlags
	// restartOnly are its other groups, by section name: changes to them
	// take effect after a restart.
	restartOnly() map[string]any
}

func (x *exporterCmd) serving() *serveFlags        { return &x.serveFlags }
func (x *exporterCmd) restartOnly() map[string]any { return nil }
func (s *sidecarCmd) serving() *serveFlags         { return &s.serveFlags }
func (s *sidecarCmd) restartOnly() map[string]any {
	return map[string]any{"gate/notify": [2]any{s.gateFlags, s.notifyFlags}}
}

// reload re-parses the command line (so the file and environment are read
// again) and applies what can change at run time to cur: the required
// interfaces and the log level. An invalid configuration keeps the running
// one; other changes are named as needing a restart.
func reload(env *runEnv, col *collector.Collector, cur reloadable, pick func(*cli) reloadable) {
	p, code := parse(env.args, io.Discard, &logWriter{env.logger})
	if code >= 0 {
		env.logger.Error("configuration reload failed; keeping the running configuration")
		return
	}
	next := pick(&p.cli)
	if env.demo {
		next = cur // demo's settings come from flags only
	}
	nenv := *env
	nenv.kctx, nenv.res = p.kctx, p.res
	if err := next.validate(&nenv); err != nil {
		env.logger.Error("configuration reload failed; keeping the running configuration", "err", err)
		return
	}
	env.level.Set(parseLevel(p.logging().LogLevel))
	cs, ns := cur.serving(), next.serving()
	if !cs.autoRequired() && !ns.autoRequired() {
		col.SetRequired(ns.RequiredInterfaces)
		cs.RequiredInterfaces = ns.RequiredInterfaces
	}
	var restart []string
	if !slices.Equal(ns.RequiredInterfaces, cs.RequiredInterfaces) {
		restart = append(restart, "required_interfaces (auto)")
	}
	nnet := ns.networkFlags
	nnet.RequiredInterfaces = cs.RequiredInterfaces // compared above
	sections := []struct {
		name     string
		cur, new any
	}{
		{"web", cs.webFlags, ns.webFlags},
		{"vcenter", cs.vcenterFlags, ns.vcenterFlags},
		{"vsphere", cs.vsphereFlags, ns.vsphereFlags},
		{"collector/network", [2]any{cs.collectorFlags, cs.networkFlags}, [2]any{ns.collectorFlags, nnet}},
	}
	nro := next.restartOnly()
	for name, v := range cur.restartOnly() {
		sections = append(sections, struct {
			name     string
			cur, new any
		}{name, v, nro[name]})
	}
	for _, s := range sections {
		if !reflect.DeepEqual(s.cur, s.new) {
			restart = append(restart, s.name)
		}
	}
	if len(restart) > 0 {
		env.logger.Warn("configuration reloaded; some changes take effect only after a restart", "sections", restart)
		return
	}
	env.logger.Info("configuration reloaded", "required_interfaces", col.Snapshot().Network.Required)
}

// logWriter turns parse errors into log lines during a reload.
type logWriter struct {
	l interface{ Error(string, ...any) }
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.l.Error("configuration reload", "err", string(trimNL(p)))
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
