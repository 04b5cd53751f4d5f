#!/usr/bin/env bash
# Does linkgate survive a flood of idle connections inside the memory limit
# the shipped Kubernetes manifests set, and keep answering meanwhile?
# Issue 8: 8000 idle keep-alive connections cost ~20 KB each, and linkgate
# was OOM-killed at ~5300 of them under 128 MiB.
#
#   sudo bench/connflood.sh
#
# Runs `linkgate demo` (the sidecar with the vCenter simulator in-process:
# more memory than a sidecar alone) in a cgroup v1 memory cgroup limited to
# LIMIT, opens CONNS connections to it from a Python client outside the
# cgroup, each sending one request and then holding the connection idle,
# and scrapes /metrics and /ready once a second from a second client
# throughout. Then it holds the connections HOLD longer (past linkgate's
# 30 s idle timeout) and reports: connections answered / refused / closed
# by linkgate, scrapes answered, peak memory, and whether linkgate
# survived. Exit status 0 only if linkgate survived and every scrape was
# answered.
#
# Environment:
#   CONNS=10000       connections the flood opens
#   LIMIT=128M        memory.limit_in_bytes of linkgate's cgroup
#   HOLD=35           seconds the flood holds its connections after opening them
#   SILENT=0          1: flood connections send nothing (instead of one request each)
#   MAX_CONNECTIONS=  --web.max-connections for linkgate (empty: its default)
#   LINKGATE_BIN=     a linkgate binary to run instead of building
#                     ./cmd/linkgate from the working tree (e.g. an older
#                     build, to see the failure this guards against)
#
# Creates only: the memory cgroup linkgate-connflood-PID under this shell's
# own (removed on exit), the processes it starts (killed on exit, by PID),
# and files under bench/out/connflood-<UTC timestamp>/ (summary.txt, logs,
# the clients' JSON).
set -euo pipefail

CONNS=${CONNS:-10000}
LIMIT=${LIMIT:-128M}
HOLD=${HOLD:-35}
SILENT=${SILENT:-0}
MAX_CONNECTIONS=${MAX_CONNECTIONS:-}
LINKGATE_BIN=${LINKGATE_BIN:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=$HERE/out
RUN=$OUT/connflood-$(date -u +%Y%m%dT%H%M%SZ)
CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin)

die() { echo "connflood.sh: $*" >&2; exit 1; }

[[ $CONNS =~ ^[0-9]+$ && $CONNS -ge 1 ]] || die "CONNS must be a positive number, got $CONNS"
[[ $HOLD =~ ^[0-9]+$ ]] || die "HOLD must be a number of seconds, got $HOLD"
[[ $(id -u) -eq 0 ]] || die "needs root (a memory cgroup)"
command -v python3 >/dev/null || die "needs python3"
[[ -n $LINKGATE_BIN ]] || command -v go >/dev/null || die "needs go to build linkgate (or LINKGATE_BIN)"
[[ -z $LINKGATE_BIN || -x $LINKGATE_BIN ]] || die "$LINKGATE_BIN is not an executable"
MEMCG_ROOT=/sys/fs/cgroup/memory
[[ -f $MEMCG_ROOT/memory.limit_in_bytes ]] || die "needs cgroup v1's memory controller at $MEMCG_ROOT"
# The flood client needs a descriptor per connection. (linkgate needs none
# raised: Go lifts its soft limit to the hard one, and it holds at most
# --web.max-connections per listener.)
ulimit -n $((CONNS + 1024)) 2>/dev/null || die "cannot raise the open files limit to $((CONNS + 1024)) (hard limit $(ulimit -Hn))"

own=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
CG=$MEMCG_ROOT${own%/}/linkgate-connflood-$$

PIDS=()
cleanup() {
	local rc=$?
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ -d $CG ]]; then
		rmdir "$CG" || echo "connflood.sh: could not remove cgroup $CG" >&2
	fi
	rm -f "${BIN:-}" # the copy under $RUN
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RUN"
# Copied under a fixed name: /proc/PID/comm identifies it.
BIN=$RUN/linkgate
if [[ -n $LINKGATE_BIN ]]; then
	cp "$LINKGATE_BIN" "$BIN"
	LG_VERSION=$LINKGATE_BIN
else
	echo "building linkgate"
	(cd "$ROOT" && go build -o "$BIN" ./cmd/linkgate)
	LG_VERSION="$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown), $(go version | cut -d' ' -f3)"
fi

port=19990
while ss -Hltn "sport = :$port" | grep -q .; do
	port=$((port + 1))
done
ADDR=127.0.0.1:$port

mkdir "$CG"
echo "$LIMIT" >"$CG/memory.limit_in_bytes"
LIMIT_BYTES=$(cat "$CG/memory.limit_in_bytes")

# The child joins the cgroup before it execs linkgate: everything linkgate
# allocates is charged there. `exec` keeps the PID, so $! is linkgate.
lg_env=("${CLEAN_ENV[@]}")
[[ -z $MAX_CONNECTIONS ]] || lg_env+=(LINKGATE_WEB_MAX_CONNECTIONS="$MAX_CONNECTIONS")
sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$CG" \
	"${lg_env[@]}" "$BIN" demo --web.listen-address="$ADDR" >"$RUN/linkgate.log" 2>&1 &
LG_PID=$!
PIDS+=("$LG_PID")
echo "started linkgate demo, pid $LG_PID, on $ADDR in $CG (limit $LIMIT_BYTES bytes)"

for _ in $(seq 100); do
	curl -s -o /dev/null "http://$ADDR/ready" && break
	kill -0 "$LG_PID" 2>/dev/null || die "linkgate exited; see $RUN/linkgate.log"
	sleep 0.2
done
curl -s -o /dev/null "http://$ADDR/ready" || die "linkgate does not answer on $ADDR; see $RUN/linkgate.log"
[[ $(cat "/proc/$LG_PID/comm") == linkgate ]] || die "pid $LG_PID is not linkgate"
grep -qx "$LG_PID" "$CG/cgroup.procs" || die "linkgate is not in $CG"
echo 0 >"$CG/memory.max_usage_in_bytes" # the peak from here on
base_rss=$(awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$LG_PID/status")

cat >"$RUN/client.py" <<'PY'
"""connflood.sh's clients: flood (many idle connections) or scrape (one a second)."""
import asyncio, json, resource, socket, sys, time, urllib.request

def flood(host, port, conns, hold, silent):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    request = b"GET /healthz HTTP/1.1\r\nHost: linkgate\r\n\r\n"
    counts = {"answered": 0, "refused": 0, "closed_before_answer": 0,
              "connect_errors": {}, "closed_while_idle": 0}
    held = []

    async def one(sem):
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            except Exception as e:  # refused, reset, timeout
                counts["refused"] += 1
                k = type(e).__name__
                counts["connect_errors"][k] = counts["connect_errors"].get(k, 0) + 1
                return
            if not silent:
                try:
                    w.write(request)
                    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    await asyncio.wait_for(r.readexactly(length), 10)
                    counts["answered"] += 1
                except Exception:
                    counts["closed_before_answer"] += 1
                    w.close()
                    return
            held.append((r, w))

    async def watch(r):
        try:
            if await r.read(1) == b"":
                counts["closed_while_idle"] += 1
        except Exception:
            counts["closed_while_idle"] += 1

    async def main():
        sem = asyncio.Semaphore(256)
        t0 = time.monotonic()
        await asyncio.gather(*(one(sem) for _ in range(conns)))
        counts["open_seconds"] = round(time.monotonic() - t0, 1)
        watchers = [asyncio.ensure_future(watch(r)) for r, _ in held]
        await asyncio.sleep(0.5)
        counts["still_open_after_flood"] = sum(not w.done() for w in watchers)
        await asyncio.sleep(hold)
        counts["still_open_after_hold"] = sum(not w.done() for w in watchers)
        for _, w in held:
            w.close()
        for w in watchers:
            w.cancel()

    asyncio.run(main())
    counts["held_idle"] = len(held)
    print(json.dumps(counts))

def scrape(base, stop_file):
    import os
    results = {"metrics": {}, "ready": {}, "slowest_ms": 0}
    while not os.path.exists(stop_file):
        t0 = time.monotonic()
        for path, key in (("/metrics", "metrics"), ("/ready", "ready")):
            req = urllib.request.Request(base + path, headers={"Accept-Encoding": "gzip"})
            s = time.monotonic()
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    resp.read()
                    code = str(resp.status)
            except urllib.error.HTTPError as e:
                code = str(e.code)
            except Exception as e:
                code = type(e).__name__
            results["slowest_ms"] = max(results["slowest_ms"], round((time.monotonic() - s) * 1000))
            results[key][code] = results[key].get(code, 0) + 1
        time.sleep(max(0, 1 - (time.monotonic() - t0)))
    print(json.dumps(results))

if sys.argv[1] == "flood":
    flood(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1")
else:
    scrape(sys.argv[2], sys.argv[3])
PY

STOP=$RUN/scrape.stop
python3 "$RUN/client.py" scrape "http://$ADDR" "$STOP" >"$RUN/scrape.json" 2>"$RUN/scrape.err" &
SCRAPE_PID=$!
PIDS+=("$SCRAPE_PID")
sleep 2 # a few scrapes before the flood

echo "flooding: $CONNS connections, each $([[ $SILENT == 1 ]] && echo "sending nothing" || echo "sending one request"), held ${HOLD}s"
started=$(date +%s)
python3 "$RUN/client.py" flood 127.0.0.1 "$port" "$CONNS" "$HOLD" "$SILENT" >"$RUN/flood.json" 2>"$RUN/flood.err" &
FLOOD_PID=$!
PIDS+=("$FLOOD_PID")

max_fds=0
max_usage=0
while kill -0 "$FLOOD_PID" 2>/dev/null; do
	if [[ -d /proc/$LG_PID ]]; then
		fds=$(find "/proc/$LG_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
		((fds > max_fds)) && max_fds=$fds
	fi
	usage=$(cat "$CG/memory.usage_in_bytes")
	((usage > max_usage)) && max_usage=$usage
	sleep 0.5
done
wait "$FLOOD_PID" || true
took=$(($(date +%s) - started))
touch "$STOP"
wait "$SCRAPE_PID" || true

survived=no
if kill -0 "$LG_PID" 2>/dev/null && [[ $(cat "/proc/$LG_PID/comm") == linkgate ]]; then
	survived=yes
	hwm=$(awk '/^VmHWM/ { print $2 * 1024 }' "/proc/$LG_PID/status")
fi
peak=$(cat "$CG/memory.max_usage_in_bytes")
failcnt=$(cat "$CG/memory.failcnt")
oom_kills=$(awk '$1 == "oom_kill" { print $2 }' "$CG/memory.oom_control")

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
flood=$(cat "$RUN/flood.json" 2>/dev/null || echo '{}')
scrapes=$(cat "$RUN/scrape.json" 2>/dev/null || echo '{}')
field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2], {}, {"d": d}))' "$1" "$2" 2>/dev/null || echo "?"; }
{
	echo "date:            $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "host:            $(nproc) CPUs, kernel $(uname -r)"
	echo "linkgate:        $LG_VERSION (demo${MAX_CONNECTIONS:+, --web.max-connections=$MAX_CONNECTIONS})"
	echo "cgroup:          memory.limit_in_bytes=$LIMIT_BYTES ($(mib "$LIMIT_BYTES"))"
	echo "flood:           $CONNS connections, $([[ $SILENT == 1 ]] && echo "silent" || echo "one GET /healthz each, then idle"), held ${HOLD}s more; ${took}s in all"
	echo "  answered:      $(field "$flood" 'd["answered"]')  (opened in $(field "$flood" 'd["open_seconds"]')s)"
	echo "  refused:       $(field "$flood" 'd["refused"]') at connect $(field "$flood" 'd["connect_errors"]'), $(field "$flood" 'd["closed_before_answer"]') closed before an answer"
	echo "  held idle:     $(field "$flood" 'd["held_idle"]'); still open right after the flood: $(field "$flood" 'd["still_open_after_flood"]'), after ${HOLD}s: $(field "$flood" 'd["still_open_after_hold"]')"
	echo "  closed idle:   $(field "$flood" 'd["closed_while_idle"]') by linkgate (displaced at the limit, or idle timeout)"
	echo "scrapes (1/s):   /metrics $(field "$scrapes" 'd["metrics"]'), /ready $(field "$scrapes" 'd["ready"]'), slowest $(field "$scrapes" 'd["slowest_ms"]') ms"
	echo "linkgate:        survived: $survived; open fds max $max_fds"
	echo "memory:          cgroup peak $(mib "$peak") (memory.max_usage_in_bytes; sampled usage max $(mib "$max_usage")), failcnt $failcnt, oom_kill ${oom_kills:-?}"
	echo "                 RSS before the flood $(mib "$base_rss"), peak RSS $([[ -n ${hwm:-} ]] && mib "$hwm" || echo "?") (VmHWM, whole run, with the binary's mapped pages)"
} | tee "$RUN/summary.txt"
echo "logs and JSON in $RUN"

[[ $survived == yes ]] || exit 1
metrics_failed=$(field "$scrapes" 'sum(v for k, v in d["metrics"].items() if k != "200")')
ready_failed=$(field "$scrapes" 'sum(v for k, v in d["ready"].items() if k not in ("200", "503"))')
[[ $metrics_failed == 0 && $ready_failed == 0 ]] || exit 1
