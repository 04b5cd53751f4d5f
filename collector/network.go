package collector

import "time"

// aggregate computes the network status of links against required, carrying
// outage accounting forward from prev.
func aggregate(links []Link, required []string, prev NetworkStatus, first bool, now time.Time) NetworkStatus {
	n := NetworkStatus{
		Required:   required,
		Outages:    prev.Outages,
		OutageTime: prev.OutageTime,
		LastOutage: prev.LastOutage,
		DownSince:  prev.DownSince,
	}
	if len(required) == 0 {
		for _, l := range links {
			if !l.Loopback && l.Up {
				n.Up = true
				break
			}
		}
	} else {
		byName := make(map[string]bool, len(links))
		for _, l := range links {
			byName[l.Name] = l.Up
		}
		n.Up = true
		for _, name := range required {
			if !byName[name] {
				n.Up = false
				n.Down = append(n.Down, name)
			}
		}
	}
	switch {
	case !n.Up && (first || prev.Up):
		// An outage begins (also when linkgate starts into one).
		n.Outages++
		n.DownSince = now
	case n.Up && !first && !prev.Up:
		d := now.Sub(prev.DownSince)
		n.OutageTime += d
		n.LastOutage = d
		n.DownSince = time.Time{}
	}
	return n
}
