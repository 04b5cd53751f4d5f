#!/usr/bin/env bash
# Tests the inhibit rules of alertmanager.yml, which promtool cannot: starts
# an Alertmanager with it on loopback, sends it the alerts of each case, and
# compares the ones it reports inhibited with the expected ones; and checks
# that the vSphere alerts are grouped by target, across linkgates.
#
#   alerts/inhibit_test.sh
#
# Needs Debian's prometheus-alertmanager (alertmanager and amtool), curl and
# python3.
set -euo pipefail
cd "$(dirname "$0")"

am=$(command -v prometheus-alertmanager || command -v alertmanager) ||
	{ echo "alertmanager missing (apt-get install prometheus-alertmanager)" >&2; exit 1; }
port=${LINKGATE_AM_PORT:-19093}
url=http://127.0.0.1:$port
dir=$(mktemp -d)
"$am" --config.file=alertmanager.yml --storage.path="$dir" \
	--web.listen-address="127.0.0.1:$port" --cluster.listen-address= >"$dir/log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
	amtool --alertmanager.url="$url" config show >/dev/null 2>&1 && break
	kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; exit 1; }
	sleep 0.1
done

# Every alert has a unique `case` label; those named *-inhibited must be
# inhibited, all others must not.
add() { amtool --alertmanager.url="$url" alert add "$@" >/dev/null; }
pod='job=kubernetes-pods namespace=migrations pod=vm-42 node=worker-1 instance=10.1.2.3:9977'

# A wrong password: one page.
add LinkgateVCenterPermanentError case=wrong-password $pod target=vc1.example.com class=permanent kind=auth severity=critical
add LinkgateVCenterDown case=wrong-password-vcenterdown-inhibited $pod target=vc1.example.com severity=warning
add LinkgateVCenterLoginsHeldBack case=wrong-password-heldback-inhibited $pod target=vc1.example.com severity=critical
# Another target of the same linkgate is another cause.
add LinkgateVCenterDown case=other-target $pod target=vc2.example.com severity=warning
# The same target seen from another linkgate is another cause too.
add LinkgateVCenterDown case=other-instance job=linkgate instance=node-b:9977 target=vc1.example.com severity=warning

# A network outage: one page.
add LinkgateNetworkDown case=network job=linkgate instance=node-a:9977 severity=critical
add LinkgateNotReady case=network-notready-inhibited job=linkgate instance=node-a:9977 severity=warning
add LinkgateVCenterProbePaused case=network-paused-inhibited job=linkgate instance=node-a:9977 target=vc1.example.com severity=warning
add LinkgateNotReady case=network-other-instance job=linkgate instance=node-c:9977 severity=warning

# The node DaemonSet as the witness for the sidecars on its node.
add LinkgateNetworkDown case=witness job=linkgate instance=192.168.0.11:9977 node=worker-7 severity=critical
add LinkgateDown case=witness-sidecar-inhibited job=kubernetes-pods instance=10.1.7.3:9977 node=worker-7 pod=vm-70 severity=warning
add LinkgateDown case=witness-other-node job=kubernetes-pods instance=10.1.8.3:9977 node=worker-8 pod=vm-80 severity=warning
# Without node labels the witness rule must not match ("" equals "").
add LinkgateDown case=no-node job=linkgate instance=host-y:9977 severity=warning

# The vSphere inventory. The network outage of node-a above also explains
# its unreachable hosts and its lost inventory watch.
add LinkgateVSphereHostUnreachable case=network-unreachable-inhibited job=linkgate instance=node-a:9977 target=vc1.example.com host=esx11.example.com severity=warning
add LinkgateVSphereInventoryUnverified case=network-inventory-inhibited job=linkgate instance=node-a:9977 target=vc1.example.com severity=warning
# vCenter down from node-e: its inventory and hosts are not known.
add LinkgateVCenterDown case=vcenter-down job=linkgate instance=node-e:9977 target=vc1.example.com severity=warning
add LinkgateVSphereInventoryUnverified case=vcenter-down-inventory-inhibited job=linkgate instance=node-e:9977 target=vc1.example.com severity=warning
add LinkgateVSphereHostUnreachable case=vcenter-down-unreachable-inhibited job=linkgate instance=node-e:9977 target=vc1.example.com host=esx11.example.com severity=warning
add LinkgateVSphereInventoryUnverified case=vcenter-down-other-target job=linkgate instance=node-e:9977 target=vc2.example.com severity=warning
add LinkgateVSphereHostUnreachable case=vcenter-down-other-instance job=linkgate instance=node-f:9977 target=vc1.example.com host=esx11.example.com severity=warning
# A host vCenter sees not responding: unreachable from any linkgate is
# its consequence; another host or another vCenter's host of the same
# name is not.
add LinkgateVSphereHostDisconnected case=host-down job=linkgate instance=node-f:9977 target=vc1.example.com host=esx01.example.com state=notResponding severity=warning
add LinkgateVSphereHostUnreachable case=host-down-unreachable-inhibited job=linkgate instance=node-f:9977 target=vc1.example.com host=esx01.example.com severity=warning
add LinkgateVSphereHostUnreachable case=host-down-sidecar-inhibited job=kubernetes-pods namespace=migrations pod=vm-77 node=worker-3 instance=10.1.3.4:9977 target=vc1.example.com host=esx01.example.com severity=warning
add LinkgateVSphereHostUnreachable case=host-down-other-target job=linkgate instance=node-f:9977 target=vc2.example.com host=esx01.example.com severity=warning
# A host in maintenance mode, rebooting: not disconnected, not unreachable.
add LinkgateVSphereHostMaintenance case=maintenance job=linkgate instance=node-f:9977 target=vc1.example.com host=esx03.example.com severity=info
add LinkgateVSphereHostDisconnected case=maintenance-disconnected-inhibited job=linkgate instance=node-f:9977 target=vc1.example.com host=esx03.example.com state=notResponding severity=warning
add LinkgateVSphereHostUnreachable case=maintenance-unreachable-inhibited job=linkgate instance=node-f:9977 target=vc1.example.com host=esx03.example.com severity=warning
# A datastore alert is nobody's consequence (the rule itself keeps quiet
# for a datastore whose hosts are all down).
add LinkgateVSphereDatastoreInaccessible case=datastore job=linkgate instance=node-f:9977 target=vc1.example.com datastore=esx03-local severity=warning

cases() { amtool --alertmanager.url="$url" -o extended alert query "$@" | grep -o 'case="[a-z-]*"' | tr -d '"' | sort; }
want_inhibited=$(cases --inhibited --active | grep -e '-inhibited$' || true)
got_inhibited=$(cases --inhibited | sort)
got_active=$(cases --active | sort)
fail=0
for c in $(cases --inhibited --active); do
	case "$c" in
	*-inhibited) grep -qx "$c" <<<"$got_inhibited" || { echo "FAIL: $c not inhibited"; fail=1; } ;;
	*) grep -qx "$c" <<<"$got_active" || { echo "FAIL: $c inhibited"; fail=1; } ;;
	esac
done
n=$(cases --inhibited --active | wc -l)
[ "$n" -eq 28 ] || { echo "FAIL: $n alerts, want 28"; fail=1; }

# The vSphere route groups by alertname and target across linkgates: the
# host-down case's unreachable alerts of vc1 (node-a, node-e, node-f and
# the sidecar) are one group, vc2's another.
groups=$(curl -fsS "$url/api/v2/alerts/groups?filter=alertname%3D%22LinkgateVSphereHostUnreachable%22" |
	python3 -c 'import json, sys
for g in json.load(sys.stdin):
    print(g["labels"].get("target"), len(g["alerts"]), ",".join(sorted(g["labels"])))' | sort)
want_groups=$(printf '%s\n' "vc1.example.com 6 alertname,target" "vc2.example.com 1 alertname,target")
[ "$groups" = "$want_groups" ] || { printf 'FAIL: LinkgateVSphereHostUnreachable groups:\n%s\nwant:\n%s\n' "$groups" "$want_groups"; fail=1; }
[ "$fail" -eq 0 ] && echo "SUCCESS: $(wc -l <<<"$want_inhibited") of $n alerts inhibited, as expected"
exit "$fail"
