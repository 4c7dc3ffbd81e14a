#!/usr/bin/env bash
# Filtered egress cost, side by side with a direct connection to the same server, in one run:
#   1. connection setup: 300 sequential HTTP requests on fresh connections (Python client),
#      direct from the host vs from inside `airlock run --net filtered`;
#   2. bulk throughput: one 512 MiB HTTP download (curl), direct vs filtered;
#   3. start-up: `airlock run --workspace none -- true`, --net off vs --net filtered (hyperfine).
# Needs root (a network namespace with a veth is the "internet"), python3, curl, hyperfine.
# Usage: bench/net.sh [AIRLOCK_BIN]    (default target/release/airlock)
set -euo pipefail
cd "$(dirname "$0")/.."
AIRLOCK=$(realpath "${1:-target/release/airlock}")
[ -x "$AIRLOCK" ] || { cargo build --release -p airlock >&2; AIRLOCK=$(realpath target/release/airlock); }
[ "$(id -u)" = 0 ] || { echo "bench/net.sh needs root (it creates a network namespace)" >&2; exit 1; }
NS=airlock-bench-inet HOST_IF=alkbench0 PEER_IF=alkbench1 HOST_IP=198.18.250.1 IP=198.18.250.2
work=$(mktemp -d)
cleanup() { kill "${srv:-0}" 2>/dev/null || true; ip link del $HOST_IF 2>/dev/null || true; ip netns del $NS 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip netns add $NS
ip link add $HOST_IF type veth peer name $PEER_IF
ip link set $PEER_IF netns $NS
ip addr add $HOST_IP/30 dev $HOST_IF && ip link set $HOST_IF up
ip -n $NS addr add $IP/30 dev $PEER_IF && ip -n $NS link set $PEER_IF up && ip -n $NS link set lo up
mkdir -p "$work/files" && head -c $((512 << 20)) /dev/zero > "$work/files/big"
ip netns exec $NS python3 crates/airlock/tests/fixtures/internet.py --name bench.test=$IP \
  --serve-dir "$work/files" --ready "$work/ready" --lifetime 900 >/dev/null 2>&1 &
srv=$!
for _ in $(seq 100); do [ -e "$work/ready" ] && break; sleep 0.1; done
export AIRLOCK_STATE_DIR="$work/state" AIRLOCK_DNS_UPSTREAM=$IP:53
mkdir -p "$work/ws" && cd "$work/ws"

cat > "$work/conn.py" <<'PY'
import socket, sys, time, statistics
host, ip, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
addr = socket.getaddrinfo(host, 80, socket.AF_INET)[0][4][0] if ip == "-" else ip
times = []
for _ in range(n):
    t = time.perf_counter()
    s = socket.create_connection((addr, 80))
    s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    while s.recv(65536):
        pass
    s.close()
    times.append(time.perf_counter() - t)
print(f"{statistics.median(times) * 1000:.3f}")
PY
conn_direct=$(python3 "$work/conn.py" bench.test $IP 300)
conn_filtered=$("$AIRLOCK" run --workspace none --allow bench.test --ro "$work/conn.py:/conn.py" -- python3 /conn.py bench.test - 300 2>/dev/null)

speed() { awk '{ if ($2 != 536870912) { print "incomplete download: " $2 " bytes" > "/dev/stderr"; exit 1 } printf "%.1f", $1 / 1048576 }'; }
tp_direct=$(curl -s -o /dev/null -w '%{speed_download} %{size_download}' --resolve bench.test:80:$IP http://bench.test/files/big | speed)
tp_filtered=$("$AIRLOCK" run --workspace none --allow bench.test -- curl -s --noproxy '*' -o /dev/null -w '%{speed_download} %{size_download}' http://bench.test/files/big 2>/dev/null | speed)

hyperfine -N --runs "${RUNS:-200}" --warmup 20 --export-json "$work/h.json" \
  -n 'run --net off' "$AIRLOCK run --workspace none --net off -- true" \
  -n 'run --net filtered' "$AIRLOCK run --workspace none --net filtered -- true" >&2
read -r off filt < <(python3 -c "import json;r={x['command']:x['median']*1000 for x in json.load(open('$work/h.json'))['results']};print(r['run --net off'],r['run --net filtered'])")

python3 - "$conn_direct" "$conn_filtered" "$tp_direct" "$tp_filtered" "$off" "$filt" <<'PY'
import sys
cd, cf, td, tf, off, filt = map(float, sys.argv[1:])
print("| measurement | direct / off | filtered | ratio or delta | goal |")
print("|---|---:|---:|---:|---|")
print(f"| connection + request, median (ms) | {cd:.3f} | {cf:.3f} | +{cf - cd:.3f} ms | ≤ +1 ms |")
print(f"| bulk download (MiB/s) | {td:.1f} | {tf:.1f} | {tf / td:.2f}× | ≥ 0.9× |")
print(f"| `run -- true` start-up, median (ms) | {off:.2f} | {filt:.2f} | +{filt - off:.2f} ms | ≤ +2 ms |")
PY

# The intercepted path (a secret bound to the host: TLS ended by the proxy, key swapped in, new
# TLS upstream) next to SNI passthrough, in the same invocation (issue 17's goals: ≤ +10 ms per
# connection with handshakes, ≥ 0.8× passthrough throughput). INJECT=0 skips it.
if [ "${INJECT:-1}" != 0 ]; then
  echo
  bash bench/inject.sh "$AIRLOCK"
fi
