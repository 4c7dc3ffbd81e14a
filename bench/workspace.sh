#!/usr/bin/env bash
# Clone workspaces: `airlock create` (clone of the repository with the uncommitted state as a
# first commit, plus the engine's bookkeeping) + `airlock rm`, side by side with a plain
# `git clone --no-hardlinks` + `rm -rf` of the same repository, and `airlock fetch` of a one-commit
# branch (review repository, gate, fsck'd fetch) next to a plain `git fetch` between two local
# repositories. One hyperfine run; the repository is this one (or $REPO).
# Usage: bench/workspace.sh [AIRLOCK_BIN]   (default target/release/airlock)
set -euo pipefail
cd "$(dirname "$0")/.."
AIRLOCK=$(realpath "${1:-target/release/airlock}")
[ -x "$AIRLOCK" ] || { cargo build --release -p airlock >&2; AIRLOCK=$(realpath target/release/airlock); }
REPO=$(realpath "${REPO:-.}")
work=$(mktemp -d)
export AIRLOCK_STATE_DIR="$work/state" AIRLOCK_RUNTIME_DIR="$work/rt"
cleanup() {
  "$AIRLOCK" rm -f fb >/dev/null 2>&1 || true
  "$AIRLOCK" rm -f cb >/dev/null 2>&1 || true
  for p in $(pgrep -f 'airlock engine serve' || true); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "AIRLOCK_STATE_DIR=$work/state"; then
      kill "$p" || true
    fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
git clone -q --no-hardlinks "$REPO" "$work/proj"
echo "uncommitted" >> "$work/proj/README.md"
cd "$work/proj"
"$AIRLOCK" list >/dev/null   # start the engine outside the measurement
"$AIRLOCK" create fb --net off >/dev/null
"$AIRLOCK" start fb >/dev/null
"$AIRLOCK" exec fb -- sh -c 'cd /workspace && echo x >> README.md && git commit -qam bench'
# (the sandbox's clone is owned by the sandbox user: plain git refuses it without an exception)
printf '[safe]\n\tdirectory = *\n' > "$work/gitconfig"
GIT_CONFIG_GLOBAL="$work/gitconfig" git clone -q --no-hardlinks "$work/state/sandboxes/fb/workspace" "$work/peer"
hyperfine -N --runs "${RUNS:-20}" --warmup 2 --export-json "$work/r.json" \
  -n 'git clone + rm' "sh -c 'git clone -q --no-hardlinks $work/proj $work/gc && rm -rf $work/gc'" \
  -n 'airlock create (clone) + rm' "sh -c '$AIRLOCK create cb --net off >/dev/null && $AIRLOCK rm cb >/dev/null'" \
  -n 'git fetch (local)' "git -C $work/proj fetch -q $work/peer +refs/heads/airlock/fb:refs/heads/peer-fb" \
  -n 'airlock fetch (gated)' "sh -c '$AIRLOCK fetch fb --force >/dev/null'" >&2
python3 - "$work/r.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] * 1000 for x in json.load(open(sys.argv[1]))["results"]}
print("| command | median (ms) |")
print("|---|---:|")
for k, v in r.items():
    print(f"| {k} | {v:.1f} |")
print(f"\ncreate/clone ratio {r['airlock create (clone) + rm'] / r['git clone + rm']:.2f}x, "
      f"fetch/git-fetch ratio {r['airlock fetch (gated)'] / r['git fetch (local)']:.2f}x")
PY
