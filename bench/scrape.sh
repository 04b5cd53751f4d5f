#!/usr/bin/env bash
# Compare what a scrape costs linkgate and node_exporter (netdev + netclass,
# netlink mode) on the same N interfaces. See bench/README.md.
#
#   sudo bench/scrape.sh [N] [M]
#
# N interfaces (default 1000: N/2 veth pairs) in a private network
# namespace; M measured scrapes per exporter (default 200).
#
# Environment:
#   BLOCK=50         back-to-back scrapes of one exporter before switching
#   WARMUP=5         unmeasured scrapes per exporter first
#   IDLE=5s          idle CPU measurement before scraping
#   PACED=30         scrapes in the paced run (0: skip it)
#   PACE=1.1s        period of the paced run (> linkgate's 1s counter cache)
#   IPV6=0           1: leave IPv6 on in the namespace (neighbour churn)
#   LINKGATE_BIN=    a linkgate binary to measure instead of building
#                    ./cmd/linkgate from the working tree
#   COMPARE_BIN=     a second linkgate binary (e.g. built from an older
#                    commit), scraped as linkgate-compare in the same
#                    interleaved blocks: a before/after in one run
#
# Creates only: the namespace lgbench-PID (deleted on exit), the processes
# it starts (killed on exit, by PID), and files under bench/out/.
set -euo pipefail

N=${1:-1000}
M=${2:-200}
BLOCK=${BLOCK:-50}
WARMUP=${WARMUP:-5}
IDLE=${IDLE:-5s}
PACED=${PACED:-30}
PACE=${PACE:-1.1s}
IPV6=${IPV6:-0}
LINKGATE_BIN=${LINKGATE_BIN:-}
COMPARE_BIN=${COMPARE_BIN:-}

NODE_EXPORTER=/usr/bin/prometheus-node-exporter
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out
BIN=$OUT/bin
NS=lgbench-$$
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN=$OUT/$STAMP
# Exporters get a clean environment: no LINKGATE_*, GOGC or GOMAXPROCS
# from the caller's shell.
CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin)

die() { echo "scrape.sh: $*" >&2; exit 1; }

[[ $N =~ ^[0-9]+$ && $N -ge 2 && $((N % 2)) -eq 0 ]] || die "N must be an even number >= 2 (veth pairs), got $N"
[[ $M =~ ^[0-9]+$ && $M -ge 1 ]] || die "M must be a positive number, got $M"
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
command -v ip >/dev/null || die "needs ip (iproute2)"
command -v go >/dev/null || die "needs go to build linkgate and the scraper"
[[ -x $NODE_EXPORTER ]] || die "needs $NODE_EXPORTER: apt-get install -y prometheus-node-exporter"
for b in "$LINKGATE_BIN" "$COMPARE_BIN"; do
	[[ -z $b || -x $b ]] || die "$b is not an executable"
done
NE_HELP=$("$NODE_EXPORTER" --help 2>&1)
for f in --collector.disable-defaults --collector.netdev --collector.netclass --collector.netclass.netlink --collector.netdev.netlink; do
	grep -q -- "$f\b" <<<"$NE_HELP" || die "$NODE_EXPORTER does not know $f"
done

PIDS=()
cleanup() {
	local rc=$?
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if ip netns list | grep -qx "$NS\( .*\)\?"; then
		ip netns del "$NS" || echo "scrape.sh: could not delete namespace $NS" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$BIN" "$RUN"
# Binaries are copied under fixed names: /proc/PID/comm identifies them.
if [[ -n $LINKGATE_BIN ]]; then
	echo "building the scraper; linkgate is $LINKGATE_BIN"
	cp "$LINKGATE_BIN" "$BIN/linkgate"
	LG_VERSION="$LINKGATE_BIN"
else
	echo "building linkgate and the scraper"
	(cd "$ROOT" && go build -o "$BIN/linkgate" ./cmd/linkgate)
	LG_VERSION="$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown), $(go version | cut -d' ' -f3)"
fi
if [[ -n $COMPARE_BIN ]]; then
	cp "$COMPARE_BIN" "$BIN/linkgate-compare"
fi
(cd "$ROOT" && go build -o "$BIN/scraper" ./bench/scraper)

# A free port on the host's loopback for linkgate. node_exporter listens on
# the namespace's own loopback, where every port is free.
port=19977
while ss -Hltn "sport = :$port" | grep -q .; do
	port=$((port + 1))
done
LG_ADDR=127.0.0.1:$port
NE_ADDR=127.0.0.1:9100

echo "creating namespace $NS with $N interfaces"
ip netns add "$NS"
ip -n "$NS" link set lo up
if [[ $IPV6 != 1 ]]; then
	# Router solicitations, DAD and MLD of fresh links create and expire
	# multicast neighbour entries for minutes: state churn that neither
	# exporter's scrape is about.
	ip netns exec "$NS" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
fi
batch=$RUN/links.batch
for ((i = 0; i < N / 2; i++)); do
	net="10.$((100 + i / 64)).$((i % 64 * 4))"
	echo "link add lgb${i}a type veth peer name lgb${i}b"
	echo "addr add $net.1/30 dev lgb${i}a"
	echo "addr add $net.2/30 dev lgb${i}b"
done >"$batch"
for ((i = 0; i < N / 2; i++)); do
	echo "link set lgb${i}a up"
	echo "link set lgb${i}b up"
done >>"$batch"
ip -n "$NS" -batch "$batch"

has_flag() { "$BIN/linkgate" exporter --help 2>&1 | grep -q -- "$1"; }

# free_port prints the first port from $1 on that nothing listens on and
# that was not handed out before (an exporter may not be listening yet).
TAKEN=("$port")
free_port() {
	local p=$1
	while [[ " ${TAKEN[*]} " == *" $p "* ]] || ss -Hltn "sport = :$p" | grep -q .; do
		p=$((p + 1))
	done
	echo "$p"
}

start_linkgate() { # name, binary, extra flags...
	local name=$1 bin=$2
	shift 2
	"${CLEAN_ENV[@]}" "$bin" exporter --netns "/run/netns/$NS" "$@" --log.level=warn \
		>"$RUN/$name.log" 2>&1 &
	PIDS+=($!)
	echo "started $name, pid $!: $(basename "$bin") exporter --netns /run/netns/$NS $*"
}

start_linkgate linkgate "$BIN/linkgate" --web.listen-address="$LG_ADDR"
LG_PID=${PIDS[-1]}
targets=(-target "name=linkgate,pid=$LG_PID,url=http://$LG_ADDR/metrics")
if [[ -n $COMPARE_BIN ]]; then
	port_c=$(free_port $((port + 1)))
	TAKEN+=("$port_c")
	start_linkgate linkgate-compare "$BIN/linkgate-compare" --web.listen-address="127.0.0.1:$port_c"
	targets+=(-target "name=linkgate-compare,pid=${PIDS[-1]},url=http://127.0.0.1:$port_c/metrics")
fi

if has_flag --collector.stats-min-interval; then
	port2=$(free_port $((port + 1)))
	TAKEN+=("$port2")
	start_linkgate linkgate-refresh "$BIN/linkgate" --web.listen-address="127.0.0.1:$port2" --collector.stats-min-interval=1ns
	targets+=(-target "name=linkgate-refresh,pid=${PIDS[-1]},url=http://127.0.0.1:$port2/metrics")
else
	echo "linkgate has no --collector.stats-min-interval: the refresh-every-scrape case is the paced run and BenchmarkCollect1000/stats=refresh"
fi

# `ip netns exec` and env both exec, so $! is node_exporter itself.
ip netns exec "$NS" "${CLEAN_ENV[@]}" "$NODE_EXPORTER" --web.listen-address="$NE_ADDR" \
	--collector.disable-defaults --collector.netdev --collector.netclass --collector.netclass.netlink \
	>"$RUN/node_exporter.log" 2>&1 &
NE_PID=$!
PIDS+=("$NE_PID")
echo "started node_exporter, pid $NE_PID, in $NS: --collector.disable-defaults --collector.netdev --collector.netclass --collector.netclass.netlink"
targets+=(-target "name=node_exporter,pid=$NE_PID,url=http://$NE_ADDR/metrics,netns=/run/netns/$NS")

sleep 1
for pid in "${PIDS[@]}"; do
	kill -0 "$pid" 2>/dev/null || die "pid $pid exited; see $RUN/*.log"
done
[[ $(cat "/proc/$LG_PID/comm") == linkgate ]] || die "pid $LG_PID is not linkgate"
[[ $(cat "/proc/$NE_PID/comm") == prometheus-node* ]] || die "pid $NE_PID is not node_exporter"

{
	echo "date:          $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "host:          $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
	echo "kernel:        $(uname -r)"
	echo "node_exporter: $("$NODE_EXPORTER" --version 2>&1 | head -1)"
	echo "linkgate:      $LG_VERSION"
	[[ -z $COMPARE_BIN ]] || echo "compare:       $COMPARE_BIN (as linkgate-compare)"
	echo "interfaces:    $(ip -n "$NS" -o link | wc -l) in $NS (N=$N veth + lo), IPv6 $([[ $IPV6 == 1 ]] && echo on || echo off)"
	echo "scrapes:       M=$M back to back (blocks of $BLOCK), $PACED paced at $PACE, $WARMUP warm-up each, gzip"
	echo "load average:  $(cut -d' ' -f1-3 /proc/loadavg) (before)"
	echo
} | tee "$RUN/summary.txt"

# The scraper waits until every exporter shows N devices' series and has
# gone quiet (start-up dumps and linkwatch events done) before measuring.
SCRAPER=("$BIN/scraper" -clk-tck "$(getconf CLK_TCK)" -baseline node_exporter -warmup "$WARMUP" -ready-series "$N")
"${SCRAPER[@]}" -label "back to back: $M scrapes each" -scrapes "$M" -block "$BLOCK" -idle "$IDLE" \
	-json "$RUN/back-to-back.json" "${targets[@]}" | tee -a "$RUN/summary.txt"
if ((PACED > 0)); then
	"${SCRAPER[@]}" -label "paced: $PACED scrapes each, every $PACE" -scrapes "$PACED" -pace "$PACE" -idle 0 \
		-json "$RUN/paced.json" "${targets[@]}" | tee -a "$RUN/summary.txt"
fi
echo "load average:  $(cut -d' ' -f1-3 /proc/loadavg) (after)" | tee -a "$RUN/summary.txt"
echo "results in $RUN"
