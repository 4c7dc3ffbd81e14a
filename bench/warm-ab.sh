#!/usr/bin/env bash
# Two builds of airlock, warm and cold `run --workspace none --net off -- true`, in the same
# rounds: each round runs every (binary, cold|warm) once, in an order that rotates, so both
# builds see the same machine load (on a shared machine, separate bench/warm.sh runs minutes
# apart do not). One state dir per binary and kind; the warm ones keep a pool of SIZE members
# and every timed run (cold too) waits, untimed, for both pools to be full again.
# WS=overlay: `run --workspace overlay` (the default run) of a 21-file project instead.
# NET=filtered: `--net filtered` (an empty allowlist) instead of `--net off`.
# Usage: [ROUNDS=40] [SIZE=2] [WS=none|overlay] [NET=off|filtered] bench/warm-ab.sh BEFORE AFTER
#   (root)
# Prints one markdown row per binary: cold and warm medians, warm/cold, and the load average.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bench/warm-ab.sh BEFORE AFTER" >&2; exit 2; }
export A=$(realpath "$1") B=$(realpath "$2") ROUNDS=${ROUNDS:-40} SIZE=${SIZE:-2} WS=${WS:-none} NET=${NET:-off}
exec python3 - <<'PY'
import json, os, statistics, subprocess, tempfile, time
bins = {"before": os.environ["A"], "after": os.environ["B"]}
rounds, size, ws, net = int(os.environ["ROUNDS"]), os.environ["SIZE"], os.environ["WS"], os.environ["NET"]
work = tempfile.mkdtemp()
proj = work + "/project"
os.makedirs(proj + "/src")
for n in range(20):
    open(f"{proj}/src/f{n}.txt", "w").write("x\n")
open(proj + "/README", "w").write("bench\n")
env = {(b, k): dict(os.environ, AIRLOCK_STATE_DIR=f"{work}/{b}-{k}") for b in bins for k in ("cold", "warm")}
def airlock(b, k, *args, **kw):
    return subprocess.run([bins[b], *args], cwd=proj, env=env[(b, k)], **kw)
res = {key: [] for key in env}
load = []
try:
    for b in bins:
        r = airlock(b, "warm", "daemon", "start", "--size", size, "--workspace", ws, "--net", net,
                    "--wait", stdout=subprocess.DEVNULL)
        assert r.returncode == 0, r
    def full(b):
        for _ in range(4000):
            st = json.loads(airlock(b, "warm", "daemon", "status", "--json", capture_output=True).stdout)
            if all(p["ready"] >= p["size"] and p["warming"] == 0 and p["claimed"] == 0 for p in st["pools"]):
                return
            time.sleep(0.005)
        raise SystemExit("the pool did not refill")
    keys = list(env)
    for i in range(rounds + 3):
        order = keys[i % len(keys):] + keys[:i % len(keys)]
        for b, k in order:
            # Both daemons' pools full before every timed run, cold or warm: no refill of an
            # earlier claim's member overlaps it.
            for x in bins:
                full(x)
            t = time.perf_counter()
            r = airlock(b, k, "run", "--workspace", ws, "--net", net, "--", "true",
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            dt = (time.perf_counter() - t) * 1000
            assert r.returncode == 0, (b, k, r.stderr)
            assert ("warm start" in r.stderr) == (k == "warm"), (b, k, r.stderr)
            if i >= 3:
                res[(b, k)].append(dt)
        load.append(os.getloadavg()[0])
finally:
    for b in bins:
        airlock(b, "warm", "daemon", "stop", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", work])
med = statistics.median
print(f"| binary ({rounds} shared rounds, --workspace {ws}) | cold median (ms) | warm median (ms) | warm/cold | warm p25–p75 (ms) |")
print("|---|---:|---:|---:|---:|")
for b in bins:
    c, w = med(res[(b, "cold")]), med(res[(b, "warm")])
    q = statistics.quantiles(res[(b, "warm")], n=4)
    print(f"| {b} | {c:.2f} | {w:.2f} | {w / c:.2f} | {q[0]:.2f}–{q[2]:.2f} |")
print()
print(f"- load average (1 min) during the rounds: {min(load):.1f}–{max(load):.1f}")
PY
