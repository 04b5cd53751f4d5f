package sidecar

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/linkgate/linkgate/collector"
)

// errNoState: the collector has not published its first dump yet.
var errNoState = errors.New("no network state yet")

// stateError says why s cannot answer a network check: there is none yet,
// or the collector suspects it lost events and is rebuilding it. Every
// network check asks it first: never answer from a state in doubt.
func stateError(s *collector.Snapshot) error {
	switch {
	case s == nil || s.Version == 0:
		return errNoState
	case !s.Verified:
		return fmt.Errorf("state unverified: %s", s.Doubt)
	}
	return nil
}

// LinksCheck holds when every required interface is up by the collector's
// rule (collector.IsUp), or, with none required, when any non-loopback
// link is up. The required list is the snapshot's (Network.Required).
func LinksCheck() Check {
	return NewCheck(CheckLinks, func(_ context.Context, in *Input) error {
		s := in.Snapshot
		if err := stateError(s); err != nil {
			return err
		}
		if s.Network.Up {
			return nil
		}
		if len(s.Network.Required) == 0 {
			return errors.New("no non-loopback link is up")
		}
		parts := make([]string, 0, len(s.Network.Down))
		for _, name := range s.Network.Down {
			parts = append(parts, name+": "+linkCondition(s, name))
		}
		return errors.New(strings.Join(parts, "; "))
	})
}

// linkCondition says why a link is not up, in kernel terms.
func linkCondition(s *collector.Snapshot, name string) string {
	l, ok := s.LinkByName(name)
	switch {
	case !ok:
		return "missing"
	case l.Up:
		return "up"
	case !l.AdminUp:
		return "administratively down"
	case !l.Carrier:
		return "no carrier (operstate " + l.OperState.String() + ")"
	}
	return "operstate " + l.OperState.String()
}

// requiredLinks returns the links a per-interface check applies to: the
// required ones, or with none required every up non-loopback link.
func requiredLinks(s *collector.Snapshot) (links []collector.Link, missing []string, any bool) {
	if len(s.Network.Required) == 0 {
		for _, l := range s.Links {
			if !l.Loopback && l.Up {
				links = append(links, l)
			}
		}
		return links, nil, true
	}
	for _, name := range s.Network.Required {
		if l, ok := s.LinkByName(name); ok {
			links = append(links, l)
		} else {
			missing = append(missing, name)
		}
	}
	return links, missing, false
}

// AddressesCheck holds when each required interface has a global address
// of every given family. With no interfaces required, one up non-loopback
// link with such addresses is enough.
func AddressesCheck(families ...collector.Family) Check {
	return NewCheck(CheckAddresses, func(_ context.Context, in *Input) error {
		s := in.Snapshot
		if err := stateError(s); err != nil {
			return err
		}
		links, missing, any := requiredLinks(s)
		var problems []string
		for _, name := range missing {
			problems = append(problems, name+": missing")
		}
		for _, l := range links {
			var lacking []string
			for _, f := range families {
				if !hasGlobalAddress(s, l.Index, f) {
					lacking = append(lacking, f.String())
				}
			}
			if len(lacking) == 0 {
				if any {
					return nil
				}
				continue
			}
			problems = append(problems, fmt.Sprintf("%s: no global %s address", l.Name, strings.Join(lacking, "/")))
		}
		if any {
			if len(links) == 0 {
				return errors.New("no non-loopback link is up")
			}
			return fmt.Errorf("no up link has a global %s address", familyList(families))
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		return nil
	})
}

// hasGlobalAddress: a global address of family f that is usable (not
// tentative or failed in duplicate address detection).
func hasGlobalAddress(s *collector.Snapshot, index int, f collector.Family) bool {
	for _, a := range s.AddressesOf(index) {
		if a.Family == f && a.Scope == collector.ScopeGlobal && a.Usable() {
			return true
		}
	}
	return false
}

func familyList(fs []collector.Family) string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.String()
	}
	return strings.Join(names, "+")
}

// DefaultRouteCheck holds when the main table has a unicast default route
// of every given family whose output link (if it names one) is up.
func DefaultRouteCheck(families ...collector.Family) Check {
	return NewCheck(CheckDefaultRoute, func(_ context.Context, in *Input) error {
		s := in.Snapshot
		if err := stateError(s); err != nil {
			return err
		}
		var problems []string
		for _, f := range families {
			routes := s.DefaultRoutes(f)
			usable, downVia := false, ""
			for _, r := range routes {
				if r.Type != collector.RouteUnicast {
					continue
				}
				if r.LinkIndex != 0 {
					if l, ok := s.LinkByIndex(r.LinkIndex); ok && !l.Up {
						downVia = l.Name
						continue
					}
				}
				usable = true
				break
			}
			switch {
			case usable:
			case downVia != "":
				problems = append(problems, fmt.Sprintf("%s default route via %s, which is down", f, downVia))
			default:
				problems = append(problems, fmt.Sprintf("no %s default route in the main table", f))
			}
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		return nil
	})
}
