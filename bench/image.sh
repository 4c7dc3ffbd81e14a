#!/usr/bin/env bash
# Images, side by side with the standard tools, in one run (root):
#  1. pull + unpack of a ~65 MB image (busybox-static + the host's /usr/lib/python3.*, gzip) from
#     a loopback docker-registry: `airlock image pull` (into an empty store) next to
#     `skopeo copy` + `umoci unpack` of the same image;
#  2. warm start: `airlock run --image X -- true` next to `airlock run -- true` (host).
# Usage: bench/image.sh [AIRLOCK_BIN]   (default: target/release/airlock; builds it if missing)
# Needs: docker-registry, skopeo, umoci, hyperfine, busybox-static (apt-get install …).
# Prints markdown tables of medians and ratios; paste them into bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
AIRLOCK=$(realpath "${1:-target/release/airlock}")
[ -x "$AIRLOCK" ] || cargo build --release -p airlock >&2
for t in docker-registry skopeo umoci hyperfine; do
  command -v "$t" >/dev/null || { echo "needs $t (apt-get install $t)" >&2; exit 1; }
done
PULL_RUNS=${PULL_RUNS:-10}
RUNS=${RUNS:-100}
work=$(mktemp -d)
reg_pid=
cleanup() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# The image: one gzip layer, written as an OCI layout by hand (sha256sum + printf).
mkdir -p "$work/rootfs/bin" "$work/rootfs/usr/lib" "$work/rootfs/etc" "$work/layout/blobs/sha256"
cp /bin/busybox "$work/rootfs/bin/busybox"
for a in sh true cat ls; do ln -s busybox "$work/rootfs/bin/$a"; done
cp -a /usr/lib/python3.* "$work/rootfs/usr/lib/" 2>/dev/null || true
echo 'ID=bench' > "$work/rootfs/etc/os-release"
tar -C "$work/rootfs" --numeric-owner -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -6 -c "$work/layer.tar" > "$work/layer.tar.gz"
blob() { local h; h=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$work/layout/blobs/sha256/$h"; echo "$h"; }
layer=$(blob "$work/layer.tar.gz")
layer_size=$(stat -c %s "$work/layer.tar.gz")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff_id" > "$work/config.json"
config=$(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$config" "$(stat -c %s "$work/config.json")" "$layer" "$layer_size" > "$work/manifest.json"
manifest=$(blob "$work/manifest.json")
printf '{"imageLayoutVersion":"1.0.0"}' > "$work/layout/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"1"}}]}' \
  "$manifest" "$(stat -c %s "$work/manifest.json")" > "$work/layout/index.json"
echo "image: $(du -sh "$work/layer.tar" | cut -f1) unpacked, $(du -sh "$work/layer.tar.gz" | cut -f1) compressed" >&2

# The registry, on a free loopback port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$work/registry" "$port" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 & reg_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
ref="127.0.0.1:$port/bench/py:1"
skopeo copy --quiet --dest-tls-verify=false "oci:$work/layout:1" "docker://$ref"

export AIRLOCK_STATE_DIR="$work/state" XDG_CONFIG_HOME="$work/config"
mkdir -p "$work/config/airlock" "$work/ws"
printf '[images]\ninsecure_registries = ["127.0.0.1:%s"]\n' "$port" > "$work/config/airlock/config.toml"
cd "$work/ws"
hyperfine --runs "$PULL_RUNS" --warmup 1 --export-json "$work/pull.json" \
  -n 'skopeo copy + umoci unpack' \
  --prepare "rm -rf $work/oci $work/bundle" \
  "skopeo copy --quiet --src-tls-verify=false docker://$ref oci:$work/oci:1 && umoci unpack --image $work/oci:1 $work/bundle >/dev/null" \
  -n 'airlock image pull' \
  --prepare "rm -rf $work/state/images" \
  "$AIRLOCK image pull $ref" >&2
"$AIRLOCK" image pull "$ref" >/dev/null
hyperfine -N --runs "$RUNS" --warmup 10 --export-json "$work/run.json" \
  -n 'airlock run -- true (host)' "$AIRLOCK run -- true" \
  -n 'airlock run --image (warm)' "$AIRLOCK run --image $ref -- true" >&2
python3 - "$work/pull.json" "$work/run.json" <<'PY'
import json, sys
def med(p): return {x["command"]: x["median"] * 1000 for x in json.load(open(p))["results"]}
pull, run = med(sys.argv[1]), med(sys.argv[2])
base = pull["skopeo copy + umoci unpack"]
print("| pull + unpack | median (ms) | ratio to skopeo+umoci |")
print("|---|---:|---:|")
for k, v in pull.items(): print(f"| {k} | {v:.0f} | {v / base:.2f} |")
host = run["airlock run -- true (host)"]
print()
print("| start-up | median (ms) | ratio to host |")
print("|---|---:|---:|")
for k, v in run.items(): print(f"| {k} | {v:.2f} | {v / host:.2f} |")
PY
