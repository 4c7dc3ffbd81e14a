#!/usr/bin/env bash
# The warm pool (issue 16): `airlock run -- true` started cold vs claimed from a warm pool.
# Containers (default): interleaved (each round runs every case cold and warm once, the order
# alternating, so both see the same machine load), for a run without a workspace and for the
# default overlay run; plus the claim-only latency (`daemon status` percentiles) and the
# claimer's own split of a warm start (`warm start (… claimed in X ms, bound in Y ms)`).
# RUN_ARGS: more options for every timed run, cold and warm alike, not for the pool (e.g.
# RUN_ARGS="--ro /usr/share/doc:/data": the claim binds the run's own mounts).
# Usage: [ROUNDS=100] [SIZE=2] [NET=off] [RUN_ARGS=...] bench/warm.sh [AIRLOCK_BIN]
#   (default: target/release/airlock; builds it if missing; root)
# Two state dirs: one with no pool (cold), one with a daemon keeping SIZE members of each pool
# ready (warm). Before each timed run (cold too) the script waits, untimed, until the pools are
# full again, so every timed warm run is a claim rather than a miss and no refill overlaps a
# timed run; hits and misses are printed to check.
# BACKEND=microvm: both rows boot microVMs (`run --backend microvm --workspace none -- true`,
# cold = a guest boot, warm = a claimed guest), in one hyperfine run; fewer runs by default
# (RUNS=10, WARMUP=1), the VM artifacts from AIRLOCK_CACHE_DIR (default
# /var/cache/airlock-test, the tests' cache). WS=overlay (microVM): the default overlay
# workspace instead (a 20-file project; warm = its image written into the claimed member's
# slot disk and mounted by the guest, plus the change summary read back). RO=SRC:DST
# (microVM): both rows add `--ro SRC:DST` (warm = the snapshot made at claim, written into the
# member's claim slot and mounted by the guest); then SPLIT=5 more warm runs print the
# claimer's own claim and claim-to-bound times.
# Prints a markdown table; paste it into bench/RESULTS.md with the date and machine.
set -euo pipefail
cd "$(dirname "$0")/.."
AIRLOCK=$(realpath "${1:-target/release/airlock}")
[ -x "$AIRLOCK" ] || cargo build --release -p airlock >&2
BACKEND=${BACKEND:-container}
if [ "$BACKEND" = container ]; then
export AIRLOCK ROUNDS=${ROUNDS:-100} SIZE=${SIZE:-2} NET=${NET:-off} RUN_ARGS=${RUN_ARGS:-}
exec python3 - <<'PY'
import json, os, re, statistics, subprocess, sys, tempfile, time
exe, rounds, size, net = os.environ["AIRLOCK"], int(os.environ["ROUNDS"]), os.environ["SIZE"], os.environ["NET"]
extra = os.environ["RUN_ARGS"].split()
work = tempfile.mkdtemp()
proj = work + "/project"
os.makedirs(proj + "/src")
for i in range(20):
    open(f"{proj}/src/f{i}.txt", "w").write("x\n" * 10)
open(proj + "/README", "w").write("bench\n")
env = {k: dict(os.environ, AIRLOCK_STATE_DIR=f"{work}/{k}") for k in ("cold", "warm")}
def airlock(which, *args, **kw):
    return subprocess.run([exe, *args], cwd=proj, env=env[which], **kw)
cases = {"none": ["--workspace", "none"], "overlay": []}
res = {(c, k): [] for c in cases for k in ("cold", "warm")}
load = [os.getloadavg()[0]]
split = {c: [] for c in cases}
try:
    for c, ws in (("none", "none"), ("overlay", "overlay")):
        r = airlock("warm", "daemon", "start", "--size", size, "--workspace", ws, "--net", net, "--wait",
                    stdout=subprocess.DEVNULL)
        assert r.returncode == 0, r
    def full():
        for _ in range(4000):
            st = json.loads(airlock("warm", "daemon", "status", "--json", capture_output=True).stdout)
            if all(p["ready"] >= p["size"] and p["warming"] == 0 and p["claimed"] == 0 for p in st["pools"]):
                return
            time.sleep(0.005)
        raise SystemExit("the pools did not refill")
    def once(c, k):
        # Every timed run, cold or warm, starts with the pools full: no refill of an earlier
        # claim's member overlaps it.
        full()
        t = time.perf_counter()
        r = airlock(k, "run", *cases[c], "--net", net, *extra, "--", "true",
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        dt = time.perf_counter() - t
        assert r.returncode == 0, (c, k, r.stderr)
        m = re.search(r"warm start .*claimed in ([0-9.]+) ms, bound in ([0-9.]+) ms", r.stderr)
        assert (m is not None) == (k == "warm"), (c, k, r.stderr)
        if m:
            split[c].append((float(m.group(1)), float(m.group(2))))
        res[(c, k)].append(dt * 1000)
    for c in cases:
        for _ in range(5):
            once(c, "cold"); once(c, "warm")
    for c in cases:
        res[(c, "cold")].clear(); res[(c, "warm")].clear(); split[c].clear()
    for i in range(rounds):
        for c in cases:
            order = ("cold", "warm") if i % 2 == 0 else ("warm", "cold")
            for k in order:
                once(c, k)
        if i % 10 == 9:
            load.append(os.getloadavg()[0])
    load.append(os.getloadavg()[0])
    st = json.loads(airlock("warm", "daemon", "status", "--json", capture_output=True).stdout)
finally:
    airlock("warm", "daemon", "stop", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", work])
med = statistics.median
def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]
shown = " ".join(extra + ["--"]) if extra else "--"
print(f"| `run {shown} true`, --net {net}, {rounds} interleaved rounds | cold median (ms) | warm median (ms) | warm/cold |")
print("|---|---:|---:|---:|")
for c in cases:
    cold, warm = med(res[(c, "cold")]), med(res[(c, "warm")])
    label = "--workspace none" if c == "none" else "overlay workspace (default)"
    print(f"| {label} | {cold:.2f} | {warm:.2f} | {warm / cold:.2f} |")
print()
print(f"- load average (1 min) during the rounds: {min(load):.1f}–{max(load):.1f}")
for c in cases:
    cl = [a for a, _ in split[c]]; bd = [b for _, b in split[c]]
    print(f"- {c}: claim (the key, a ready marker renamed, the member's liveness) p50 {pct(cl, .5):.2f} ms, p95 "
          f"{pct(cl, .95):.2f} ms; binding after it (allowlist, secrets, cgroup, workspace) p50 "
          f"{pct(bd, .5):.2f} ms, p95 {pct(bd, .95):.2f} ms")
for p in st["pools"]:
    ms = lambda v: "-" if v is None else f"{v / 1000:.2f}"
    print(f"- pool {p['key'][:8]} ({p['label']}): {p['hits']} hits, {p['misses']} misses; "
          f"daemon status claim p50 {ms(p['claim_p50_us'])} ms, p95 {ms(p['claim_p95_us'])} ms, "
          f"p99 {ms(p['claim_p99_us'])} ms")
PY
fi
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
BACKEND=${BACKEND:-container}
if [ "$BACKEND" = microvm ]; then
  RUNS=${RUNS:-10}
  WARMUP=${WARMUP:-1}
  export AIRLOCK_CACHE_DIR=${AIRLOCK_CACHE_DIR:-/var/cache/airlock-test}
else
  RUNS=${RUNS:-100}
  WARMUP=${WARMUP:-5}
fi
SIZE=${SIZE:-2}
NET=${NET:-off}
WS=${WS:-none}
EXTRA=${RO:+--ro $RO}
# Waiting for a refill: a container member starts in milliseconds, a guest boots in seconds.
WAIT_STEPS=$([ "$BACKEND" = microvm ] && echo 60000 || echo 2000)
work=$(mktemp -d)
cold="$work/cold" warm="$work/warm"
mkdir -p "$cold" "$warm"
stop() { AIRLOCK_STATE_DIR="$warm" "$AIRLOCK" daemon stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap stop EXIT
mkdir -p "$work/project/src"
for i in $(seq 1 20); do printf 'x\n' > "$work/project/src/f$i.txt"; done
cd "$work/project"
AIRLOCK_STATE_DIR="$warm" "$AIRLOCK" daemon start --backend "$BACKEND" --size "$SIZE" --net "$NET" --workspace "$WS" --wait >&2
full="$work/full.sh"
cat > "$full" <<SH
#!/bin/sh
# Untimed: until the pool has $SIZE members ready again.
for _ in \$(seq 1 $WAIT_STEPS); do
  AIRLOCK_STATE_DIR="$warm" "$AIRLOCK" daemon status --json | grep -q '"ready":$SIZE' && exit 0
  sleep 0.01
done
exit 1
SH
chmod +x "$full"
hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --export-json "$work/r.json" \
  --prepare true --prepare "$full" \
  -n cold "env AIRLOCK_STATE_DIR=$cold $AIRLOCK run --backend $BACKEND --workspace $WS --net $NET $EXTRA -- true" \
  -n warm "env AIRLOCK_STATE_DIR=$warm $AIRLOCK run --backend $BACKEND --workspace $WS --net $NET $EXTRA -- true" >&2
if [ -n "$EXTRA" ]; then
  for _ in $(seq 1 "${SPLIT:-5}"); do
    "$full"
    AIRLOCK_STATE_DIR="$warm" "$AIRLOCK" run --backend "$BACKEND" --workspace "$WS" --net "$NET" $EXTRA -- true 2>&1 >/dev/null |
      sed -n 's/.*claimed in \([0-9.]*\) ms, bound in \([0-9.]*\) ms.*/\1 \2/p' >> "$work/split"
  done
fi
AIRLOCK_STATE_DIR="$warm" "$AIRLOCK" daemon status --json > "$work/status.json"
touch "$work/split"
python3 - "$work/r.json" "$work/status.json" "$NET" "$BACKEND" "$WS" "$EXTRA" "$work/split" <<'PY'
import json, statistics, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
split = [tuple(map(float, l.split())) for l in open(sys.argv[7]) if l.strip()]
p = json.load(open(sys.argv[2]))["pools"][0]
cold, warm = r["cold"]["median"] * 1000, r["warm"]["median"] * 1000
extra = f" {sys.argv[6]}" if sys.argv[6] else ""
print(f"| `run --backend {sys.argv[4]} --workspace {sys.argv[5]} --net {sys.argv[3]}{extra} -- true` | median (ms) | ratio to cold |")
print("|---|---:|---:|")
print(f"| cold | {cold:.2f} | 1.00 |")
print(f"| warm (claimed) | {warm:.2f} | {warm / cold:.2f} |")
ms = lambda v: "-" if v is None else f"{v / 1000:.2f}"
print()
print(f"claim only (store open + compare-and-set + liveness check), {p['hits']} claims, "
      f"{p['misses']} misses: p50 {ms(p['claim_p50_us'])} ms, p95 {ms(p['claim_p95_us'])} ms, "
      f"p99 {ms(p['claim_p99_us'])} ms")
if split:
    med = statistics.median
    print(f"claimer's split over {len(split)} more warm runs: claimed in {med([a for a, _ in split]):.2f} ms "
          f"(median), bound {med([b - a for a, b in split]):.2f} ms after the claim (median; "
          f"{min(b - a for a, b in split):.2f}–{max(b - a for a, b in split):.2f})")
PY
