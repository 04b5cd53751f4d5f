#!/usr/bin/env python3
"""Check that every PromQL query in a Grafana dashboard parses.

    python3 dashboards/check_queries.py [dashboards/linkgate.json ...]

Collects each panel target's expr and each query variable's selector,
replaces Grafana's variables ($__rate_interval, $__range, $job, ...) with
valid stand-ins, writes them as recording rules to a temporary file and
runs `promtool check rules` on it (promtool comes with Debian's
`prometheus` package). Exits non-zero if the JSON or a query is invalid.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# Durations Grafana substitutes; any other $variable is used in a regex
# matcher (label=~"$var") and stands for ".+".
DURATIONS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${__rate_interval}": "1m",
    "${__interval}": "1m",
    "${__range}": "1h",
}


def substitute(expr):
    for var, value in DURATIONS.items():
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?\w+\}?", ".+", expr)


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def queries(path):
    with open(path) as f:
        dash = json.load(f)
    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield "panel %s (%s) %s" % (p.get("id"), p.get("title"), t.get("refId")), t["expr"]
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q or "")
        if m:
            yield "variable %s" % v["name"], m.group(1)
        elif q:
            yield "variable %s" % v["name"], q


def main(paths):
    rules, where = [], []
    for path in paths:
        for name, expr in queries(path):
            where.append("%s: %s" % (os.path.basename(path), name))
            rules.append({"record": "dashboard_query_%d" % len(rules), "expr": substitute(expr)})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        # JSON is YAML: no YAML library needed.
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
        tmp = f.name
    try:
        r = subprocess.run(["promtool", "check", "rules", tmp], capture_output=True, text=True)
    finally:
        os.unlink(tmp)
    if r.returncode != 0:
        out = r.stdout + r.stderr
        # Name the query behind each rule promtool complains about.
        out = re.sub(r"dashboard_query_(\d+)", lambda m: where[int(m.group(1))], out)
        sys.stderr.write(out)
        return 1
    print("%d queries parse (%s)" % (len(rules), ", ".join(paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or [os.path.join(HERE, "linkgate.json")]))
