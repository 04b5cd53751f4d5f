#!/usr/bin/env bash
# Tests the inhibit rules of alertmanager.yml, which promtool cannot: starts
# an Alertmanager with it on loopback, sends it the alerts of each case, and
# compares the ones it reports inhibited with the expected ones.
#
#   alerts/inhibit_test.sh
#
# Needs Debian's prometheus-alertmanager (alertmanager and amtool).
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
[ "$n" -eq 13 ] || { echo "FAIL: $n alerts, want 13"; fail=1; }
[ "$fail" -eq 0 ] && echo "SUCCESS: $(wc -l <<<"$want_inhibited") of $n alerts inhibited, as expected"
exit "$fail"
