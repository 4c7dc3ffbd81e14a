#!/usr/bin/env bash
# The warm pool (issue 16): `airlock run --workspace none -- true` started cold vs claimed from a
# warm pool, in one hyperfine run, plus the claim-only latency (`daemon status` percentiles).
# Usage: bench/warm.sh [AIRLOCK_BIN]   (default: target/release/airlock; builds it if missing)
# Two state dirs: one with no pool (cold), one with a daemon keeping SIZE members ready (warm).
# Before each warm run hyperfine waits (--prepare, untimed) until the pool is full again, so
# every timed warm run is a claim rather than a miss; the hit/miss counts are printed to check.
# NET=off (default) or NET=filtered picks the network mode of both rows.
# BACKEND=microvm: both rows boot microVMs (`run --backend microvm --workspace none -- true`,
# cold = a guest boot, warm = a claimed guest); fewer runs by default (RUNS=10, WARMUP=1), the
# VM artifacts from AIRLOCK_CACHE_DIR (default /var/cache/airlock-test, the tests' cache).
# Prints a markdown table; paste it into bench/RESULTS.md with the date and machine.
set -euo pipefail
cd "$(dirname "$0")/.."
AIRLOCK=$(realpath "${1:-target/release/airlock}")
[ -x "$AIRLOCK" ] || cargo build --release -p airlock >&2
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
# Waiting for a refill: a container member starts in milliseconds, a guest boots in seconds.
WAIT_STEPS=$([ "$BACKEND" = microvm ] && echo 60000 || echo 2000)
work=$(mktemp -d)
cold="$work/cold" warm="$work/warm"
mkdir -p "$cold" "$warm"
stop() { AIRLOCK_STATE_DIR="$warm" "$AIRLOCK" daemon stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap stop EXIT
cd "$work"
AIRLOCK_STATE_DIR="$warm" "$AIRLOCK" daemon start --backend "$BACKEND" --size "$SIZE" --net "$NET" --wait >&2
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
  -n cold "env AIRLOCK_STATE_DIR=$cold $AIRLOCK run --backend $BACKEND --workspace none --net $NET -- true" \
  -n warm "env AIRLOCK_STATE_DIR=$warm $AIRLOCK run --backend $BACKEND --workspace none --net $NET -- true" >&2
AIRLOCK_STATE_DIR="$warm" "$AIRLOCK" daemon status --json > "$work/status.json"
python3 - "$work/r.json" "$work/status.json" "$NET" "$BACKEND" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
p = json.load(open(sys.argv[2]))["pools"][0]
cold, warm = r["cold"]["median"] * 1000, r["warm"]["median"] * 1000
print(f"| `run --backend {sys.argv[4]} --workspace none --net {sys.argv[3]} -- true` | median (ms) | ratio to cold |")
print("|---|---:|---:|")
print(f"| cold | {cold:.2f} | 1.00 |")
print(f"| warm (claimed) | {warm:.2f} | {warm / cold:.2f} |")
ms = lambda v: "-" if v is None else f"{v / 1000:.2f}"
print()
print(f"claim only (store open + compare-and-set + liveness check), {p['hits']} claims, "
      f"{p['misses']} misses: p50 {ms(p['claim_p50_us'])} ms, p95 {ms(p['claim_p95_us'])} ms, "
      f"p99 {ms(p['claim_p99_us'])} ms")
PY
