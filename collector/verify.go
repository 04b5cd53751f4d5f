package collector

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Objects compared by the anti-entropy check, for
// linkgate_netlink_divergences_total.
const (
	objectLink     = "link"
	objectAddress  = "address"
	objectRoute    = "route"
	objectNeighbor = "neighbor"
)

var divergenceObjects = []string{objectLink, objectAddress, objectRoute, objectNeighbor}

// adopt makes s equal to a full dump. Links keep the history the kernel
// does not send (transition counters, last change); a transition the dump
// reveals is counted like one seen in an event. Tables are touched only
// where they differ, so a dump that confirms the state rebuilds nothing.
func (s *state) adopt(k *kernelState, now time.Time) {
	seen := make(map[int]bool, len(k.links))
	for _, l := range k.links {
		seen[l.Index] = true
		s.setLink(l, now)
	}
	for ix := range s.links {
		if !seen[ix] {
			delete(s.links, ix)
			s.touch(linkTable)
		}
	}
	replaceTable(s, addrTable, &s.addrs, k.addrs)
	replaceTable(s, routeTable, &s.routes, k.routes)
	replaceTable(s, neighTable, &s.neighs, k.neighs)
}

// difference is one object that differs between the state and a dump.
// Its text names the object and both values, so the same text in two
// comparisons means the same divergence persisted.
type difference struct{ object, text string }

// divergence is what a comparison of the state with a dump found.
type divergence []difference

func (d *divergence) add(object, format string, args ...any) {
	*d = append(*d, difference{object, fmt.Sprintf(format, args...)})
}

// counts returns the number of differences by object.
func (d divergence) counts() map[string]int {
	m := make(map[string]int, len(divergenceObjects))
	for _, x := range d {
		m[x.object]++
	}
	return m
}

// persisting returns the differences of d that prev found too.
func (d divergence) persisting(prev divergence) divergence {
	seen := make(map[difference]bool, len(prev))
	for _, x := range prev {
		seen[x] = true
	}
	var out divergence
	for _, x := range d {
		if seen[x] {
			out = append(out, x)
		}
	}
	return out
}

// details describes the first few differences, for a log line.
func (d divergence) details() []string {
	out := make([]string, 0, min(len(d), maxDivergenceDetails))
	for _, x := range d[:min(len(d), maxDivergenceDetails)] {
		out = append(out, x.object+" "+x.text)
	}
	return out
}

const maxDivergenceDetails = 10

// diff compares s with a full dump, object by object. Traffic counters
// and the history linkgate keeps itself are not compared: they change
// without events.
func (s *state) diff(k *kernelState) divergence {
	var d divergence
	norm := func(l Link) Link {
		l.Stats, l.LastChange, l.UpTransitions, l.DownTransitions = LinkStats{}, time.Time{}, 0, 0
		return l
	}
	dumped := make(map[int]bool, len(k.links))
	for _, kl := range k.links {
		dumped[kl.Index] = true
		sl, ok := s.links[kl.Index]
		switch {
		case !ok:
			d.add(objectLink, "%d %s: in the kernel, missing from the snapshot", kl.Index, kl.Name)
		case norm(sl) != norm(kl):
			d.add(objectLink, "%d %s: snapshot %s, kernel %s", kl.Index, kl.Name, describeLink(sl), describeLink(kl))
		}
	}
	for _, ix := range slices.Sorted(maps.Keys(s.links)) {
		if !dumped[ix] {
			d.add(objectLink, "%d %s: in the snapshot, gone from the kernel", ix, s.links[ix].Name)
		}
	}
	diffTable(&d, objectAddress, s.addrs, k.addrs)
	diffTable(&d, objectRoute, s.routes, k.routes)
	diffTable(&d, objectNeighbor, s.neighs, k.neighs)
	return d
}

// describeLink names every field diff compares, so that equal texts mean
// equal links (the confirmation pass relies on it).
func describeLink(l Link) string {
	return fmt.Sprintf("{name=%s kind=%s address=%s alias=%q admin_up=%v carrier=%v oper=%s mtu=%d up=%v loopback=%v carrier_changes=%d}",
		l.Name, l.Kind, l.Address, l.Alias, l.AdminUp, l.Carrier, l.OperState, l.MTU, l.Up, l.Loopback, l.CarrierChanges)
}

func diffTable[K comparable, V comparable](d *divergence, object string, have, kernel map[K]V) {
	for k, kv := range kernel {
		hv, ok := have[k]
		switch {
		case !ok:
			d.add(object, "%+v: in the kernel, missing from the snapshot", kv)
		case hv != kv:
			d.add(object, "snapshot %+v, kernel %+v", hv, kv)
		}
	}
	for k, hv := range have {
		if _, ok := kernel[k]; !ok {
			d.add(object, "%+v: in the snapshot, gone from the kernel", hv)
		}
	}
}
