#!/usr/bin/env bash
# Start-up cost of a sandbox, side by side with bubblewrap, in one hyperfine run.
# Usage: bench/startup.sh [AIRLOCK_BIN]   (default: target/release/airlock; builds it if missing)
# airlock's defaults include filtered egress (bwrap --unshare-all has no network at all), so the
# --net off rows are the like-for-like comparison.
# Prints a markdown table of medians and ratios to bwrap; appends nothing by itself —
# paste the output into bench/RESULTS.md with the date and machine.
set -euo pipefail
cd "$(dirname "$0")/.."
AIRLOCK=${1:-target/release/airlock}
[ -x "$AIRLOCK" ] || cargo build --release -p airlock >&2
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
command -v bwrap >/dev/null || { echo "needs bwrap (apt-get install bubblewrap)" >&2; exit 1; }
RUNS=${RUNS:-200}
WARMUP=${WARMUP:-20}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ws" && echo x > "$work/ws/file"
cd "$work/ws"
export AIRLOCK_STATE_DIR="$work/state"
hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --export-json "$work/r.json" \
  -n 'true' 'true' \
  -n 'bwrap' 'bwrap --unshare-all --ro-bind / / --die-with-parent true' \
  -n 'airlock --workspace none' "$OLDPWD/$AIRLOCK run --workspace none -- true" \
  -n 'airlock (overlay workspace)' "$OLDPWD/$AIRLOCK run -- true" \
  -n 'airlock --workspace none --net off' "$OLDPWD/$AIRLOCK run --workspace none --net off -- true" \
  -n 'airlock --net off (overlay workspace)' "$OLDPWD/$AIRLOCK run --net off -- true" >&2
python3 - "$work/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
med = {x["command"]: x["median"] * 1000 for x in r}
bw = med["bwrap"]
print("| command | median (ms) | ratio to bwrap |")
print("|---|---:|---:|")
for name, m in med.items():
    print(f"| {name} | {m:.2f} | {m / bw:.2f} |")
PY
