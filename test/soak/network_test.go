package soak

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/linkgate/linkgate/internal/netnstest"
)

// The namespace the sidecar watches: the required veth pair req0/req0p,
// a bridge, and a pool of veth pairs and dummies that the chaos churns,
// deletes, recreates and renames.
const (
	requiredLink = "req0"
	requiredPeer = "req0p"
	bridgeLink   = "sbr0"
	vethSlots    = 4
	dummySlots   = 2
)

// network drives the namespace. It keeps a model of which pool links
// exist under which name only to pick plausible operations; the checks
// compare linkgate with the kernel (`ip -j`), never with this model.
type network struct {
	t     *testing.T
	ns    *netnstest.NS
	rng   *rand.Rand
	slots []*slot
	// The required link as last set.
	reqExists, reqAdmin, reqPeer bool
	// Lines `ip -batch` rejected (an address already there, a route
	// through a link that is down): expected, counted.
	rejected int
	reasons  map[string]int // ip's message → count
	// standalone is the link type of the non-veth slots: dummy, or where
	// the kernel has none, another type with the same operstate UNKNOWN.
	standalone string
}

type slot struct {
	veth    bool
	names   [2]string // primary chN, alternate rnN (rename toggles)
	cur     int
	present bool
}

func (s *slot) name() string { return s.names[s.cur] }
func (s *slot) peer() string { return s.names[0] + "p" }

func newNetwork(t *testing.T, ns *netnstest.NS, rng *rand.Rand) *network {
	t.Helper()
	n := &network{t: t, ns: ns, rng: rng, reqExists: true, reqAdmin: true, reqPeer: true, reasons: map[string]int{}}
	netnstest.Veth(t, ns, requiredLink, ns, requiredPeer)
	for _, kind := range []string{"dummy", "ifb", "bridge"} {
		if _, err := ns.TryIP("link", "add", "probe0", "type", kind); err == nil {
			ns.IP(t, "link", "del", "probe0")
			n.standalone = kind
			break
		}
	}
	if n.standalone == "" {
		t.Fatal("the kernel can create none of the link types dummy, ifb, bridge")
	}
	lines := []string{"link add " + bridgeLink + " type bridge", "link set " + bridgeLink + " up"}
	for i := range vethSlots + dummySlots {
		s := &slot{veth: i < vethSlots, names: [2]string{fmt.Sprintf("ch%d", i), fmt.Sprintf("rn%d", i)}}
		n.slots = append(n.slots, s)
		lines = append(lines, n.createLines(s)...)
		s.present = true
	}
	if out, err := n.run(false, lines); err != nil {
		t.Fatalf("setting up the namespace: %v: %s", err, out)
	}
	return n
}

// run feeds lines to `ip -batch` in the namespace; with force it goes on
// past rejected lines and counts them.
func (n *network) run(force bool, lines []string) (string, error) {
	args := []string{"-n", n.ns.Name}
	if force {
		args = append(args, "-force")
	}
	args = append(args, "-batch", "-")
	cmd := exec.Command("ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if force {
		n.rejected += strings.Count(string(out), "Command failed")
		for line := range strings.SplitSeq(string(out), "\n") {
			if line != "" && !strings.HasPrefix(line, "Command failed") {
				n.reasons[line]++
			}
		}
		if _, ok := err.(*exec.ExitError); ok {
			err = nil // rejected lines: counted above
		}
	}
	return string(out), err
}

func (n *network) createLines(s *slot) []string {
	s.cur = 0
	if s.veth {
		return []string{
			fmt.Sprintf("link add %s type veth peer name %s", s.name(), s.peer()),
			"link set " + s.name() + " up", "link set " + s.peer() + " up",
		}
	}
	return []string{"link add " + s.name() + " type " + n.standalone, "link set " + s.name() + " up"}
}

func (n *network) pick() *slot { return n.slots[n.rng.IntN(len(n.slots))] }

// topReasons lists the most frequent reasons ip gave for rejected lines.
func (n *network) topReasons(k int) string {
	type reason struct {
		text  string
		count int
	}
	var rs []reason
	for text, count := range n.reasons {
		rs = append(rs, reason{text, count})
	}
	slices.SortFunc(rs, func(a, b reason) int { return b.count - a.count })
	var out []string
	for _, r := range rs[:min(k, len(rs))] {
		out = append(out, fmt.Sprintf("%q %d", r.text, r.count))
	}
	return strings.Join(out, ", ")
}

// churn sends a batch of link, address, route and neighbour changes to
// links that are not required. Each line picks a pool link (now and then
// by a name it does not have) and uses addresses of that link's own
// subnet, so that deletions find something to delete.
func (n *network) churn() {
	count := 3 + n.rng.IntN(23)
	lines := make([]string, 0, count)
	for range count {
		i := n.rng.IntN(len(n.slots))
		for try := 0; try < 3 && !n.slots[i].present; try++ {
			i = n.rng.IntN(len(n.slots)) // mostly links that exist
		}
		s := n.slots[i]
		dev := s.name()
		if n.rng.IntN(10) == 0 {
			dev = s.names[1-s.cur]
		}
		k := n.rng.IntN(3) + 1
		var l string
		switch n.rng.IntN(14) {
		case 0, 1:
			l = "link set " + dev + " " + []string{"up", "down"}[n.rng.IntN(2)]
		case 2:
			l = fmt.Sprintf("link set %s mtu %d", dev, []int{1280, 1400, 1500, 4000, 9000}[n.rng.IntN(5)])
		case 3:
			l = fmt.Sprintf("addr add 10.%d.0.%d/24 dev %s", 10+i, k, dev)
		case 4:
			l = fmt.Sprintf("addr del 10.%d.0.%d/24 dev %s", 10+i, k, dev)
		case 5:
			l = fmt.Sprintf("addr add fd00:%d::%d/64 dev %s%s", 10+i, k, dev, []string{"", " nodad"}[n.rng.IntN(2)])
		case 6:
			l = fmt.Sprintf("addr del fd00:%d::%d/64 dev %s", 10+i, k, dev)
		case 7:
			l = fmt.Sprintf("route replace 10.200.%d.0/24 dev %s metric %d", k, dev, 100*n.rng.IntN(3))
		case 8:
			l = fmt.Sprintf("route del 10.200.%d.0/24", k)
		case 9:
			l = fmt.Sprintf("route replace fd99:%d::/64 dev %s", k, dev)
		case 10:
			l = []string{"route replace default dev " + dev + " metric 1000", "route del default"}[n.rng.IntN(2)]
		case 11:
			l = fmt.Sprintf("neigh replace 10.%d.0.%d lladdr 02:00:00:00:%02x:%02x dev %s nud %s", 10+i, 100+k, i, k, dev,
				[]string{"permanent", "reachable", "stale"}[n.rng.IntN(3)])
		case 12:
			l = fmt.Sprintf("neigh del 10.%d.0.%d dev %s", 10+i, 100+k, dev)
		default:
			s := n.slots[n.rng.IntN(vethSlots)]
			if n.rng.IntN(2) == 0 {
				l = "link set " + s.peer() + " master " + bridgeLink
			} else {
				l = "link set " + s.peer() + " nomaster"
			}
		}
		lines = append(lines, l)
	}
	n.must(n.run(true, lines))
}

// recreate deletes a pool link, or creates it again under its first name.
func (n *network) recreate() string {
	s := n.pick()
	if s.present {
		s.present = false
		n.must(n.run(true, []string{"link del " + s.name()}))
		return "delete"
	}
	s.present = true
	n.must(n.run(true, n.createLines(s)))
	return "create"
}

// rename moves a pool link to its other name (a link must be down to be
// renamed), and up again most of the time.
func (n *network) rename() {
	s := n.pick()
	if !s.present {
		return
	}
	from := s.name()
	s.cur = 1 - s.cur
	lines := []string{"link set " + from + " down", "link set " + from + " name " + s.name()}
	if n.rng.IntN(4) != 0 {
		lines = append(lines, "link set "+s.name()+" up")
	}
	n.must(n.run(true, lines))
}

// required changes one thing about the required link and returns what.
func (n *network) required() string {
	switch r := n.rng.IntN(10); {
	case r < 4:
		n.setRequired(true, !n.reqAdmin, n.reqPeer)
		return "admin"
	case r < 8:
		n.setRequired(true, n.reqAdmin, !n.reqPeer)
		return "carrier"
	case r < 9:
		n.must(n.run(true, []string{fmt.Sprintf("link set %s mtu %d", requiredLink, []int{1400, 1500, 9000}[n.rng.IntN(3)])}))
		return "mtu"
	default:
		if n.reqExists {
			n.setRequired(false, false, false)
			return "delete"
		}
		n.setRequired(true, true, true)
		return "create"
	}
}

// setRequired brings the required pair to a state: present or not, each
// end administratively up or down.
func (n *network) setRequired(exists, admin, peer bool) {
	var lines []string
	switch {
	case !exists && n.reqExists:
		lines = append(lines, "link del "+requiredLink)
	case exists && !n.reqExists:
		lines = append(lines, fmt.Sprintf("link add %s type veth peer name %s", requiredLink, requiredPeer))
		n.reqAdmin, n.reqPeer = false, false
	}
	if exists {
		if admin != n.reqAdmin {
			lines = append(lines, "link set "+requiredLink+" "+upDown(admin))
		}
		if peer != n.reqPeer {
			lines = append(lines, "link set "+requiredPeer+" "+upDown(peer))
		}
	}
	n.reqExists, n.reqAdmin, n.reqPeer = exists, admin && exists, peer && exists
	if len(lines) > 0 {
		n.must(n.run(false, lines))
	}
}

func (n *network) requiredUp() bool { return n.reqExists && n.reqAdmin && n.reqPeer }

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

func (n *network) must(out string, err error) {
	n.t.Helper()
	if err != nil {
		n.t.Fatalf("ip -batch: %v: %s", err, out)
	}
}

// kernelLink is what linkgate exports of a link, as the kernel says it.
type kernelLink struct {
	Admin, Carrier, Up bool
	MTU                int
	Oper               string
}

// kernelState reads links, address counts and route counts with `ip -j`,
// in the terms of linkgate's metrics.
type kernelState struct {
	links    map[string]kernelLink
	addrs    map[string]int // device|family|scope → count
	routes   map[string]int // family → routes in all tables but local
	defaults map[string]int // family → default routes in main
}

func (n *network) kernel() (kernelState, error) {
	k := kernelState{links: map[string]kernelLink{}, addrs: map[string]int{}, routes: map[string]int{}, defaults: map[string]int{}}
	var links []struct {
		Name      string   `json:"ifname"`
		Flags     []string `json:"flags"`
		MTU       int      `json:"mtu"`
		OperState string   `json:"operstate"`
	}
	if err := n.json(&links, "-j", "link", "show"); err != nil {
		return k, err
	}
	for _, l := range links {
		kl := kernelLink{Admin: slices.Contains(l.Flags, "UP"), Carrier: slices.Contains(l.Flags, "LOWER_UP"),
			MTU: l.MTU, Oper: strings.ToLower(l.OperState)}
		// README, "When is a link up?"
		kl.Up = kl.Oper == "up" || (kl.Oper == "unknown" && kl.Admin && kl.Carrier)
		k.links[l.Name] = kl
	}
	var addrs []struct {
		Name string `json:"ifname"`
		Info []struct {
			Family     string `json:"family"`
			Scope      string `json:"scope"`
			Tentative  bool   `json:"tentative"`
			Optimistic bool   `json:"optimistic"`
			DADFailed  bool   `json:"dadfailed"`
		} `json:"addr_info"`
	}
	if err := n.json(&addrs, "-j", "addr", "show"); err != nil {
		return k, err
	}
	for _, a := range addrs {
		for _, i := range a.Info {
			if i.Family == "inet6" && i.Tentative && !i.Optimistic && !i.DADFailed {
				continue // not announced until duplicate address detection ends
			}
			k.addrs[a.Name+"|"+i.Family+"|"+i.Scope]++
		}
	}
	for _, fam := range []string{"inet", "inet6"} {
		var routes []struct {
			Dst   string `json:"dst"`
			Table string `json:"table"`
			Type  string `json:"type"`
		}
		if err := n.json(&routes, "-j", "-f", fam, "route", "show", "table", "all"); err != nil {
			return k, err
		}
		for _, r := range routes {
			if r.Table == "local" || r.Type == "multicast" {
				continue
			}
			k.routes[fam]++
			if r.Dst == "default" && (r.Table == "" || r.Table == "main") {
				k.defaults[fam]++
			}
		}
	}
	return k, nil
}

func (n *network) json(v any, args ...string) error {
	out, err := n.ns.TryIP(args...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), v)
}
