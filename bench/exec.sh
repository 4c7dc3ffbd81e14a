#!/usr/bin/env bash
# exec into a running persistent sandbox, side by side with nsenter(1) joining the same
# namespaces (the floor for "enter a running container") and plain `true`, in one hyperfine run.
# Usage: bench/exec.sh [AIRLOCK_BIN]   (root: nsenter needs it; default target/release/airlock)
set -euo pipefail
cd "$(dirname "$0")/.."
AIRLOCK=$(realpath "${1:-target/release/airlock}")
[ -x "$AIRLOCK" ] || { cargo build --release -p airlock >&2; AIRLOCK=$(realpath target/release/airlock); }
work=$(mktemp -d)
export AIRLOCK_STATE_DIR="$work/state"
mkdir -p "$work/ws" && cd "$work/ws"
"$AIRLOCK" __supervise --dir "$work/sbx" --name bench --net off >/dev/null 2>&1 &
sup=$!
trap 'kill $sup 2>/dev/null; wait $sup 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -e "$work/sbx/pid1" ] && break; sleep 0.05; done
pid1=$(cut -d' ' -f1 "$work/sbx/pid1")
hyperfine -N --runs "${RUNS:-300}" --warmup 20 --export-json "$work/r.json" \
  -n 'true' 'true' \
  -n 'nsenter -a (same namespaces)' "nsenter -t $pid1 -U -m -p -i -u -n --preserve-credentials true" \
  -n 'airlock exec' "$AIRLOCK __exec --dir $work/sbx -- true" >&2
python3 - "$work/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print("| command | median (ms) |")
print("|---|---:|")
for x in r:
    print(f"| {x['command']} | {x['median'] * 1000:.2f} |")
PY
