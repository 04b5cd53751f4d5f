package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/linkgate/linkgate/collector"
	"github.com/linkgate/linkgate/probe"
)

// Check names.
const (
	CheckLinks        = "links"
	CheckAddresses    = "addresses"
	CheckDefaultRoute = "default-route"
	CheckPath         = "path"
	CheckVCenter      = "vcenter"
)

// Check is one readiness condition. Check returns nil when the condition
// holds; otherwise the error's text is the reason shown after "failed: ".
// A failure that will not clear by itself wraps ErrPermanent.
type Check interface {
	Name() string
	Check(ctx context.Context, in *Input) error
}

// ErrPermanent marks a check failure that needs a human (bad credentials,
// a certificate pin mismatch...).
var ErrPermanent = errors.New("permanent")

// Input is what every check of one evaluation sees: one kernel snapshot,
// one set of vCenter results and one instant.
type Input struct {
	Snapshot *collector.Snapshot
	VCenter  []probe.Status
	Now      time.Time

	recheck time.Time
}

// RecheckAt tells the gate that the verdict may change at t without any
// change signal (a freshness deadline), so it re-evaluates then.
func (in *Input) RecheckAt(t time.Time) {
	if in.recheck.IsZero() || t.Before(in.recheck) {
		in.recheck = t
	}
}

// NewCheck returns a Check named name that runs fn.
func NewCheck(name string, fn func(ctx context.Context, in *Input) error) Check {
	return funcCheck{name, fn}
}

type funcCheck struct {
	name string
	fn   func(ctx context.Context, in *Input) error
}

func (c funcCheck) Name() string                               { return c.name }
func (c funcCheck) Check(ctx context.Context, in *Input) error { return c.fn(ctx, in) }

// CheckResult is the outcome of one check.
type CheckResult struct {
	Name      string `json:"name"`
	OK        bool   `json:"ok"`
	Reason    string `json:"reason,omitempty"`
	Permanent bool   `json:"permanent,omitempty"`
}

// Report is the outcome of evaluating every check once, without damping:
// what `linkgate check` prints.
type Report struct {
	Ready  bool          `json:"ready"`
	Checks []CheckResult `json:"checks"`
}

// Evaluate runs every check once, in order, against in. A panicking check
// fails with the panic as its reason instead of taking the gate down.
func Evaluate(ctx context.Context, checks []Check, in *Input) Report {
	r := Report{Ready: true, Checks: make([]CheckResult, 0, len(checks))}
	for _, c := range checks {
		res := CheckResult{Name: c.Name(), OK: true}
		if err := runCheck(ctx, c, in); err != nil {
			res.OK = false
			res.Reason = oneLine(err.Error())
			res.Permanent = errors.Is(err, ErrPermanent)
			r.Ready = false
		}
		r.Checks = append(r.Checks, res)
	}
	return r
}

func runCheck(ctx context.Context, c Check, in *Input) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	return c.Check(ctx, in)
}

// oneLine keeps reasons on one line so the "[-]name failed: reason" format
// (and the systemd STATUS) stays parseable.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// WriteTable prints the report as aligned "NAME STATUS REASON" columns.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tREASON")
	for _, c := range r.Checks {
		status := "ok"
		if !c.OK {
			status = "failed"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, status, c.Reason)
	}
	return tw.Flush()
}

// Config selects and parameterises the checks.
type Config struct {
	// NoLinks leaves the links check out (network monitoring is off:
	// network_monitor.enabled: false).
	NoLinks bool
	// Addresses enables the addresses check for these families.
	Addresses []collector.Family
	// DefaultRoute enables the default-route check for these families.
	DefaultRoute []collector.Family
	// Path enables the path check when Path.Targets is not empty (it
	// needs Path.Routes to be built).
	Path PathOptions
	// VCenter enables the vcenter check.
	VCenter bool
	// ProbeInterval and StaleAfter bound the vCenter result's age: a
	// success older than StaleAfter × ProbeInterval is stale. StaleAfter
	// defaults to DefaultStaleAfter; a zero ProbeInterval disables the
	// freshness rule.
	ProbeInterval time.Duration
	StaleAfter    int
}

// DefaultStaleAfter is how many probe intervals a vCenter success stays fresh.
const DefaultStaleAfter = 3

// composed is the one place the readiness checks are composed, in the
// order they are reported: links, addresses, default-route, path,
// vcenter. Each is named, and built only when asked (CheckNames does
// not build them).
func composed(cfg Config) []struct {
	name  string
	build func() (Check, error)
} {
	type part = struct {
		name  string
		build func() (Check, error)
	}
	var parts []part
	add := func(on bool, name string, build func() (Check, error)) {
		if on {
			parts = append(parts, part{name, build})
		}
	}
	add(!cfg.NoLinks, CheckLinks, func() (Check, error) { return LinksCheck(), nil })
	add(len(cfg.Addresses) > 0, CheckAddresses, func() (Check, error) { return AddressesCheck(cfg.Addresses...), nil })
	add(len(cfg.DefaultRoute) > 0, CheckDefaultRoute, func() (Check, error) { return DefaultRouteCheck(cfg.DefaultRoute...), nil })
	add(len(cfg.Path.Targets) > 0, CheckPath, func() (Check, error) { return PathCheck(cfg.Path) })
	add(cfg.VCenter, CheckVCenter, func() (Check, error) {
		n := cfg.StaleAfter
		if n <= 0 {
			n = DefaultStaleAfter
		}
		return VCenterCheck(time.Duration(n) * cfg.ProbeInterval), nil
	})
	return parts
}

// Checks builds the readiness checks cfg selects, in report order.
func Checks(cfg Config) ([]Check, error) {
	var checks []Check
	for _, p := range composed(cfg) {
		c, err := p.build()
		if err != nil {
			return nil, err
		}
		checks = append(checks, c)
	}
	return checks, nil
}

// CheckNames are the names of the checks cfg selects, in report order,
// without building them (Path.Routes may be nil).
func CheckNames(cfg Config) []string {
	var names []string
	for _, p := range composed(cfg) {
		names = append(names, p.name)
	}
	return names
}

// ParseFamilies parses an address family selection: "inet", "inet6" or "both".
func ParseFamilies(s string) ([]collector.Family, error) {
	switch s {
	case "inet":
		return []collector.Family{collector.FamilyIPv4}, nil
	case "inet6":
		return []collector.Family{collector.FamilyIPv6}, nil
	case "both":
		return []collector.Family{collector.FamilyIPv4, collector.FamilyIPv6}, nil
	}
	return nil, fmt.Errorf("address family %q: want inet, inet6 or both", s)
}
