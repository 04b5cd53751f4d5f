#!/usr/bin/env bash
# /metrics and /ready under load (issue 8, "Evidence": 64 connections for
# 30 s with wrk; errors 0, p99 reported).
#
#   sudo bench/load.sh
#
# Creates a private network namespace lgload-PID holding N interfaces (N/2
# veth pairs, one `ip -batch`), runs `linkgate demo` (the sidecar with
# govmomi's vCenter simulator in-process, generated credentials) on
# 127.0.0.1 watching that namespace, waits until /ready answers 200 and
# /metrics shows all N interfaces, then runs wrk against:
#
#   metrics-gzip   /metrics, CONNS connections, Accept-Encoding: gzip (as Prometheus scrapes)
#   metrics-plain  /metrics, CONNS connections, no Accept-Encoding
#   ready          /ready,   CONNS connections, Accept-Encoding: gzip (ignored by /ready)
#   metrics-gzip-c10   /metrics, 10 connections (linkgate's render limit), gzip:
#                  only when the CONNS runs got non-2xx answers (or C10=1)
#
# Each for DURATION, with -t THREADS --latency. Per run it reports
# requests/s (all, and 2xx only), p50/p90/p99/max latency, socket errors
# (connect/read/write/timeout), non-2xx answers, and linkgate's CPU time
# and RSS from /proc/PID/stat and /proc/PID/status, plus a few linkgate_*,
# process_* and go_* series before and after.
#
# linkgate renders at most 10 /metrics responses at once
# (maxScrapesInFlight, sidecar/metricshandler.go) and answers an 11th
# concurrent one 503 at once. wrk's connections each send their next request
# the moment an answer arrives, so with more than 10 connections some of
# /metrics' answers are that documented 503; the summary says how many and
# why, and the 10-connection run shows the errors at the limit.
#
# `linkgate demo` has no --netns flag. It builds its sidecar from a command
# line parsed like any other, which reads the LINKGATE_* environment, so
# LINKGATE_NETNS points it at the namespace; the script checks that
# linkgate's /metrics does show the namespace's interfaces before it
# measures, and stops if not.
#
# Environment:
#   N=100            interfaces in the namespace (even: N/2 veth pairs)
#   CONNS=64         wrk connections (-c)
#   THREADS=2        wrk threads (-t)
#   DURATION=30s     each wrk run (-d)
#   TIMEOUT=2s       wrk --timeout (wrk's default): an answer slower than
#                    this counts as a timeout error and is left out of the
#                    latency figures
#   PAUSE=3          seconds between runs
#   C10=             1: always run the 10-connection /metrics run; 0: never
#   LINKGATE_BIN=    a linkgate binary to run instead of building
#                    ./cmd/linkgate from the working tree
#
# Needs root, ip (iproute2), curl, wrk (apt-get install -y wrk) and go
# (unless LINKGATE_BIN). Creates only: the namespace lgload-PID (deleted on
# exit), the processes it starts (killed on exit by PID, Ctrl-C included),
# bench/out/bin/linkgate, and bench/out/load-<UTC timestamp>/ (summary.txt,
# wrk output, linkgate's log, metrics before and after).
# Exit status 0 when no run had a socket error, /ready answered only 2xx,
# linkgate logged no failed render (500) and, if the CONNS-connection
# /metrics runs got 503s, the 10-connection run got none.
set -euo pipefail

N=${N:-100}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
DURATION=${DURATION:-30s}
TIMEOUT=${TIMEOUT:-2s}
PAUSE=${PAUSE:-3}
C10=${C10:-}
LINKGATE_BIN=${LINKGATE_BIN:-}
RENDER_LIMIT=10 # maxScrapesInFlight in sidecar/metricshandler.go

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out
NS=lgload-$$
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN=$OUT/load-$STAMP
CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin)
T0=$(date +%s)

die() { echo "load.sh: $*" >&2; exit 1; }

[[ $N =~ ^[0-9]+$ && $N -ge 2 && $((N % 2)) -eq 0 ]] || die "N must be an even number >= 2 (veth pairs), got $N"
[[ $CONNS =~ ^[0-9]+$ && $CONNS -ge 1 ]] || die "CONNS must be a positive number, got $CONNS"
[[ $THREADS =~ ^[0-9]+$ && $THREADS -ge 1 && $THREADS -le $CONNS ]] || die "THREADS must be between 1 and CONNS, got $THREADS"
[[ $DURATION =~ ^[0-9]+[smh]?$ ]] || die "DURATION must look like 30s, got $DURATION"
[[ $TIMEOUT =~ ^[0-9]+[smh]?$ ]] || die "TIMEOUT must look like 2s, got $TIMEOUT"
[[ $PAUSE =~ ^[0-9]+$ ]] || die "PAUSE must be a number of seconds, got $PAUSE"
[[ -z $C10 || $C10 == 0 || $C10 == 1 ]] || die "C10 must be empty, 0 or 1, got $C10"
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
for c in ip curl ss; do
	command -v "$c" >/dev/null || die "needs $c"
done
command -v wrk >/dev/null || die "needs wrk: apt-get install -y wrk"
[[ -n $LINKGATE_BIN ]] || command -v go >/dev/null || die "needs go to build linkgate (or LINKGATE_BIN)"
[[ -z $LINKGATE_BIN || -x $LINKGATE_BIN ]] || die "$LINKGATE_BIN is not an executable"

PIDS=()
NS_CREATED=
cleanup() {
	local rc=$?
	trap - INT TERM
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		# linkgate shuts down within 5 s (and removes the simulator's
		# temporary directory); anything still there after 10 s is killed.
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n $NS_CREATED ]] && ip netns list | grep -q "^$NS\( \|$\)"; then
		ip netns del "$NS" || echo "load.sh: could not delete namespace $NS" >&2
	fi
	rm -f "$RUN/linkgate" # the copy that ran; bench/out/bin/linkgate stays
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT/bin" "$RUN"
if [[ -n $LINKGATE_BIN ]]; then
	cp "$LINKGATE_BIN" "$OUT/bin/linkgate"
	LG_VERSION=$LINKGATE_BIN
else
	echo "building linkgate"
	(cd "$ROOT" && go build -o "$OUT/bin/linkgate" ./cmd/linkgate)
	LG_VERSION="$(cd "$ROOT" && git --no-optional-locks describe --always --dirty 2>/dev/null || echo unknown), $(go version | cut -d' ' -f3)"
fi
# Run a private copy under the same name (/proc/PID/comm is "linkgate"):
# another engineer's scrape.sh rebuilds bench/out/bin/linkgate.
cp "$OUT/bin/linkgate" "$RUN/linkgate"
BIN=$RUN/linkgate
BUILT=$(date +%s)

port=19960
while ss -Hltn "sport = :$port" | grep -q .; do
	port=$((port + 1))
done
ADDR=127.0.0.1:$port
BASE=http://$ADDR

echo "creating namespace $NS with $N interfaces"
ip netns add "$NS"
NS_CREATED=1
ip -n "$NS" link set lo up
# Fresh links' IPv6 (DAD, router solicitations, MLD) churns neighbour
# entries for a minute: state changes the load test is not about.
ip netns exec "$NS" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
for ((i = 0; i < N / 2; i++)); do
	net="10.$((100 + i / 64)).$((i % 64 * 4))"
	echo "link add lgl${i}a type veth peer name lgl${i}b"
	echo "addr add $net.1/30 dev lgl${i}a"
	echo "addr add $net.2/30 dev lgl${i}b"
done >"$RUN/links.batch"
for ((i = 0; i < N / 2; i++)); do
	echo "link set lgl${i}a up"
	echo "link set lgl${i}b up"
done >>"$RUN/links.batch"
ip -n "$NS" -batch "$RUN/links.batch"

# env and linkgate exec in turn: $! is linkgate itself.
"${CLEAN_ENV[@]}" LINKGATE_NETNS="/run/netns/$NS" "$BIN" demo --web.listen-address="$ADDR" \
	>"$RUN/linkgate.log" 2>&1 &
LG_PID=$!
PIDS+=("$LG_PID")
echo "started linkgate demo, pid $LG_PID, on $ADDR, LINKGATE_NETNS=/run/netns/$NS"

code=
for _ in $(seq 300); do
	kill -0 "$LG_PID" 2>/dev/null || die "linkgate exited; see $RUN/linkgate.log"
	code=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/ready" || true)
	[[ $code == 200 ]] && break
	sleep 0.2
done
[[ $code == 200 ]] || die "/ready did not answer 200 within 60 s (last: ${code:-no answer}); see $RUN/linkgate.log and: curl '$BASE/ready?verbose'"
[[ $(cat "/proc/$LG_PID/comm") == linkgate ]] || die "pid $LG_PID is not linkgate"
seen=0
for _ in $(seq 100); do
	seen=$(curl -s "$BASE/metrics" | grep -c '^linkgate_link_up{device="lgl[0-9]*[ab]"} 1$' || true)
	((seen == N)) && break
	sleep 0.2
done
((seen == N)) || die "linkgate's /metrics shows $seen of the namespace's $N interfaces up: demo did not watch $NS (LINKGATE_NETNS ignored?)"
READY_AT=$(date +%s)
echo "linkgate is ready and shows all $N interfaces of $NS"

gz_bytes=$(curl -s -H 'Accept-Encoding: gzip' -o /dev/null -w '%{size_download}' "$BASE/metrics")
plain_bytes=$(curl -s -o /dev/null -w '%{size_download}' "$BASE/metrics")
series=$(curl -s "$BASE/metrics" | grep -vc '^#')
ready_bytes=$(curl -s -o /dev/null -w '%{size_download}' "$BASE/ready")

# Only done(): a response() callback would make wrk copy every body into Lua.
cat >"$RUN/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LOADRESULT requests=%.0f duration_us=%.0f bytes=%.0f connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f mean_us=%.0f\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
LUA

ticks=$(getconf CLK_TCK)
# utime + stime of linkgate, in ticks (fields 14 and 15; after the ")" of comm).
lg_ticks() { sed 's/^.*) //' "/proc/$LG_PID/stat" | awk '{ print $12 + $13 }'; }
lg_kib() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$LG_PID/status"; }
# The machine's CPU: busy and total jiffies over all CPUs.
machine() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat; }
# CHILD_CPU: CPU time of this shell's reaped children (wrk), in seconds.
# `times` must run in this shell: a $(...) subshell starts from zero.
children_cpu() {
	times >"$RUN/.times"
	CHILD_CPU=$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); s += a[1] * 60 + a[2] } print s }' "$RUN/.times")
}
snapshot() { # file: the full exposition, uncompressed
	curl -s "$BASE/metrics" >"$1" || true
}
# metric FILE NAME[{labels}]: the value of one series, or "-".
metric() { awk -v s="$2" '$1 == s { print $2; f = 1; exit } END { if (!f) print "-" }' "$1"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RSS0=$(lg_kib VmRSS)
HWM0=$(lg_kib VmHWM)
TICKS0=$(lg_ticks)
snapshot "$RUN/metrics-before.txt"

RUNS=()
declare -A R # R[run,field]

bench() { # name, connections, path, header (or "")
	local name=$1 c=$2 path=$3 header=$4
	local args=(-t "$((THREADS < c ? THREADS : c))" -c "$c" -d "$DURATION" --timeout "$TIMEOUT" --latency -s "$RUN/report.lua")
	[[ -z $header ]] || args+=(-H "$header")
	echo
	echo "== $name: wrk ${args[*]} $BASE$path"
	local t0 m0 c0 w0 t1 m1 c1 w1 start end
	read -r m0 c0 < <(machine)
	t0=$(lg_ticks)
	children_cpu
	w0=$CHILD_CPU
	start=$(date +%s.%N)
	wrk "${args[@]}" "$BASE$path" >"$RUN/wrk-$name.txt" 2>&1 &
	local wpid=$!
	PIDS+=("$wpid")
	wait "$wpid" || echo "load.sh: wrk exited with status $? (see $RUN/wrk-$name.txt)" >&2
	end=$(date +%s.%N)
	kill -0 "$LG_PID" 2>/dev/null || die "linkgate died during $name; see $RUN/linkgate.log"
	children_cpu
	w1=$CHILD_CPU
	t1=$(lg_ticks)
	read -r m1 c1 < <(machine)
	unset 'PIDS[-1]'
	grep -v '^LOADRESULT' "$RUN/wrk-$name.txt"
	local line
	line=$(grep '^LOADRESULT' "$RUN/wrk-$name.txt") || die "wrk printed no result for $name; see $RUN/wrk-$name.txt"
	RUNS+=("$name")
	R[$name,conns]=$c
	R[$name,path]=$path
	R[$name,header]=${header:-none}
	local kv
	for kv in ${line#LOADRESULT }; do
		R[$name,${kv%%=*}]=${kv#*=}
	done
	R[$name,wall]=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
	R[$name,lg_cpu]=$(awk -v a="$t0" -v b="$t1" -v h="$ticks" 'BEGIN { printf "%.2f", (b - a) / h }')
	R[$name,wrk_cpu]=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.2f", b - a }')
	R[$name,machine_busy]=$(awk -v a="$m0" -v b="$m1" -v x="$c0" -v y="$c1" 'BEGIN { printf "%.0f", (y > x ? 100 * (b - a) / (y - x) : 0) }')
	R[$name,rss]=$(lg_kib VmRSS)
	R[$name,hwm]=$(lg_kib VmHWM)
	snapshot "$RUN/metrics-after-$name.txt"
	sleep "$PAUSE"
}

bench metrics-gzip "$CONNS" /metrics 'Accept-Encoding: gzip'
bench metrics-plain "$CONNS" /metrics ''
bench ready "$CONNS" /ready 'Accept-Encoding: gzip'
metrics_non2xx=$((${R[metrics-gzip,status]} + ${R[metrics-plain,status]}))
if [[ $C10 == 1 ]] || { [[ $C10 != 0 ]] && ((metrics_non2xx > 0)); }; then
	bench metrics-gzip-c10 "$RENDER_LIMIT" /metrics 'Accept-Encoding: gzip'
fi

snapshot "$RUN/metrics-after.txt"
RSS1=$(lg_kib VmRSS)
HWM1=$(lg_kib VmHWM)
TICKS1=$(lg_ticks)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
render_failures=$(grep -c 'gathering metrics failed' "$RUN/linkgate.log" || true)
DONE=$(date +%s)

# ---- the summary ----------------------------------------------------------

row() { printf '%-17s %5s %9s %9s %9s %8s %8s %8s %8s %13s %8s %7s %7s %5s\n' "$@"; }
socket_errors() { echo $((${R[$1,connect]} + ${R[$1,read]} + ${R[$1,write]} + ${R[$1,timeout]})); }
ok=yes
for r in "${RUNS[@]}"; do
	(($(socket_errors "$r") == 0)) || ok=no
done
((${R[ready,status]} == 0)) || ok=no
((render_failures == 0)) || ok=no
if ((metrics_non2xx > 0)); then
	if [[ -n ${R[metrics-gzip-c10,status]:-} ]]; then
		((${R[metrics-gzip-c10,status]} == 0)) || ok=no
	else
		ok=no
	fi
fi

{
	echo "linkgate load test (issue 8): /metrics and /ready, $CONNS connections, $DURATION each, wrk"
	echo
	echo "date:         $(date -u -d "@$T0" +%Y-%m-%dT%H:%M:%SZ) to $(date -u -d "@$DONE" +%H:%M:%SZ) ($((DONE - T0)) s: build $((BUILT - T0)) s, setup until ready $((READY_AT - BUILT)) s, runs $((DONE - READY_AT)) s)"
	echo "host:         $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), kernel $(uname -r)"
	echo "machine:      SHARED with other engineers' builds and tests: load average $LOAD_BEFORE before, $LOAD_AFTER after."
	echo "              wrk runs on the same CPUs as linkgate. Figures include that contention; they are not a dedicated-host benchmark."
	echo "linkgate:     $LG_VERSION; $("$BIN" version 2>/dev/null | head -1)"
	echo "setup:        linkgate demo (sidecar + in-process vCenter simulator) on $ADDR, LINKGATE_NETNS=/run/netns/$NS;"
	echo "              $N veth interfaces (+ lo), all up, IPv4 /30 each, IPv6 off; GOMAXPROCS default ($(nproc))"
	echo "responses:    /metrics $series series, $plain_bytes bytes plain, $gz_bytes bytes gzip; /ready $ready_bytes bytes"
	echo "wrk:          $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), -t $THREADS --timeout $TIMEOUT --latency, keep-alive; latency from wrk's histogram"
	echo
	row run conns requests "req/s" "2xx/s" "p50 ms" "p90 ms" "p99 ms" "max ms" "sock err c/r/w/t" non-2xx "lg cpu%" "wrk cpu%" "busy%"
	for r in "${RUNS[@]}"; do
		secs=$(awk -v d="${R[$r,duration_us]}" 'BEGIN { print d / 1e6 }')
		row "$r" "${R[$r,conns]}" "${R[$r,requests]}" \
			"$(awk -v n="${R[$r,requests]}" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')" \
			"$(awk -v n="${R[$r,requests]}" -v e="${R[$r,status]}" -v s="$secs" 'BEGIN { printf "%.0f", (n - e) / s }')" \
			"$(ms "${R[$r,p50_us]}")" "$(ms "${R[$r,p90_us]}")" "$(ms "${R[$r,p99_us]}")" "$(ms "${R[$r,max_us]}")" \
			"${R[$r,connect]}/${R[$r,read]}/${R[$r,write]}/${R[$r,timeout]}" "${R[$r,status]}" \
			"$(awk -v c="${R[$r,lg_cpu]}" -v s="$secs" 'BEGIN { printf "%.0f", 100 * c / s }')" \
			"$(awk -v c="${R[$r,wrk_cpu]}" -v s="$secs" 'BEGIN { printf "%.0f", 100 * c / s }')" \
			"${R[$r,machine_busy]}"
	done
	echo
	echo "  req/s counts every answer, 2xx/s only the successful ones. lg cpu% and wrk cpu% are of one CPU"
	echo "  (utime+stime from /proc/PID/stat, and wrk's rusage), busy% is the whole machine's ($(nproc) CPUs, /proc/stat)."
	echo "  Percentiles mix every answer, 503s included: see the 10-connection run for scrapes that all succeeded."
	busiest=0
	for r in "${RUNS[@]}"; do
		((${R[$r,machine_busy]} > busiest)) && busiest=${R[$r,machine_busy]}
	done
	if ((busiest >= 90)); then
		echo "  The machine was ${busiest}% busy during a run: linkgate, wrk and other work competed for the CPUs,"
		echo "  so the latency tails include time spent waiting for a CPU."
	fi
	echo "  A timeout is an answer slower than $TIMEOUT (wrk --timeout), left out of the percentiles. For scale:"
	echo "  Prometheus's default scrape_timeout is 10s; a kubelet probe's default timeoutSeconds is 1s."
	echo
	echo "per run:      linkgate CPU s, CPU ms per answer, RSS / HWM after the run"
	for r in "${RUNS[@]}"; do
		printf '  %-17s %6s s  %6s ms  %6s / %6s MiB\n' "$r" "${R[$r,lg_cpu]}" \
			"$(awk -v c="${R[$r,lg_cpu]}" -v n="${R[$r,requests]}" 'BEGIN { printf "%.3f", (n > 0 ? 1000 * c / n : 0) }')" \
			"$(mib "${R[$r,rss]}")" "$(mib "${R[$r,hwm]}")"
	done
	echo "linkgate:     RSS $(mib "$RSS0") MiB before, $(mib "$RSS1") MiB after (VmRSS); peak $(mib "$HWM1") MiB (VmHWM; $(mib "$HWM0") MiB before the runs)"
	echo "              CPU $(awk -v a="$TICKS0" -v b="$TICKS1" -v h="$ticks" 'BEGIN { printf "%.2f", (b - a) / h }') s over all runs ($(awk -v a="$TICKS0" -v h="$ticks" 'BEGIN { printf "%.2f", a / h }') s before them, start-up included)"
	echo
	echo "metrics:      before the runs -> after them (curl, uncompressed)"
	for f in process_cpu_seconds_total process_resident_memory_bytes process_open_fds go_goroutines \
		go_memstats_heap_inuse_bytes go_gc_duration_seconds_count linkgate_ready linkgate_ready_transitions_total \
		linkgate_vcenter_up linkgate_vcenter_probes_total linkgate_vcenter_probe_duration_seconds_count \
		linkgate_vcenter_probe_duration_seconds_sum linkgate_netlink_snapshot_version linkgate_netlink_state_verified \
		linkgate_netlink_resyncs_total linkgate_netlink_socket_drops_total linkgate_netlink_dump_failures_total; do
		awk -v f="$f" '{ n = $1; sub(/\{.*/, "", n) } n == f { print $1, $2 }' "$RUN/metrics-after.txt" | while read -r s a; do
			printf '  %-62s %14s -> %s\n' "$s" "$(metric "$RUN/metrics-before.txt" "$s")" "$a"
		done
	done
	echo
	echo "errors:"
	for r in "${RUNS[@]}"; do
		echo "  $r: socket errors $(socket_errors "$r") (connect ${R[$r,connect]}, read ${R[$r,read]}, write ${R[$r,write]}, timeout ${R[$r,timeout]}), non-2xx ${R[$r,status]}"
	done
	echo "  linkgate log: $render_failures failed renders (500, 'gathering metrics failed')"
	if ((metrics_non2xx > 0)); then
		echo
		echo "  The $metrics_non2xx non-2xx answers of /metrics at $CONNS connections are linkgate's documented limit, not"
		echo "  failures: it renders at most $RENDER_LIMIT scrapes at once (maxScrapesInFlight, sidecar/metricshandler.go) and"
		echo "  answers one more at once with 503 'Limit of concurrent requests reached ($RENDER_LIMIT), try again later',"
		echo "  as promhttp's MaxRequestsInFlight does, rather than queue renders without bound. Each wrk connection"
		echo "  sends its next request the moment an answer arrives, so up to $CONNS are in flight; Prometheus sends"
		echo "  one scrape per target per scrape interval. The only other non-2xx /metrics can send is a 500 for"
		echo "  a failed render, which linkgate logs: $render_failures logged."
		if [[ -n ${R[metrics-gzip-c10,status]:-} ]]; then
			echo "  At $RENDER_LIMIT connections (metrics-gzip-c10): socket errors $(socket_errors metrics-gzip-c10), non-2xx ${R[metrics-gzip-c10,status]}."
		fi
	fi
	echo
	echo "verdict:      $([[ $ok == yes ]] && echo "PASS: no socket errors; /ready all 2xx; /metrics all 2xx within the render limit" || echo "FAIL: see errors above")"
	echo "files:        $RUN"
} | tee "$RUN/summary.txt"
rm -f "$RUN/.times"

[[ $ok == yes ]]
