#!/usr/bin/env bash
# Secret injection cost (docs/design/secrets.md): HTTPS from inside `airlock run --net filtered`
# to a host without a bound secret (SNI passthrough) vs one with a secret bound (TLS ended by
# the proxy, key swapped in, new TLS upstream), in one run against the same server:
#   1. connection setup: N sequential HTTPS requests on fresh connections (Python client);
#   2. bulk throughput: one 256 MiB HTTPS download (curl).
# Needs root (a network namespace with a veth is the "internet"), python3, curl, openssl.
# Usage: bench/inject.sh [AIRLOCK_BIN]    (default target/release/airlock)
set -euo pipefail
cd "$(dirname "$0")/.."
AIRLOCK=$(realpath "${1:-target/release/airlock}")
[ -x "$AIRLOCK" ] || { cargo build --release -p airlock >&2; AIRLOCK=$(realpath target/release/airlock); }
[ "$(id -u)" = 0 ] || { echo "bench/inject.sh needs root (it creates a network namespace)" >&2; exit 1; }
N=${N:-200}
NS=airlock-bench-inj HOST_IF=alkbinj0 PEER_IF=alkbinj1 HOST_IP=198.18.251.1 IP=198.18.251.2
work=$(mktemp -d)
cleanup() { kill "${srv:-0}" 2>/dev/null || true; ip link del $HOST_IF 2>/dev/null || true; ip netns del $NS 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip netns add $NS
ip link add $HOST_IF type veth peer name $PEER_IF
ip link set $PEER_IF netns $NS
ip addr add $HOST_IP/30 dev $HOST_IF && ip link set $HOST_IF up
ip -n $NS addr add $IP/30 dev $PEER_IF && ip -n $NS link set $PEER_IF up && ip -n $NS link set lo up
# A test CA and a certificate for both names (the proxy trusts it through AIRLOCK_UPSTREAM_CA).
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 1 -subj /CN=bench-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req "${ec[@]}" -subj /CN=bench -keyout "$work/key.pem" -out "$work/srv.csr" 2>/dev/null
printf 'subjectAltName=DNS:plain.test,DNS:bound.test\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$work/ext"
openssl x509 -req -in "$work/srv.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -set_serial 2 -days 1 \
  -extfile "$work/ext" -out "$work/cert.pem" 2>/dev/null
mkdir -p "$work/files" && head -c $((256 << 20)) /dev/zero > "$work/files/big"
chmod 644 "$work/ca.pem"
ip netns exec $NS python3 crates/airlock/tests/fixtures/internet.py --name plain.test=$IP --name bound.test=$IP \
  --cert "$work/cert.pem" --key "$work/key.pem" --serve-dir "$work/files" --ready "$work/ready" --lifetime 900 >/dev/null 2>&1 &
srv=$!
for _ in $(seq 100); do [ -e "$work/ready" ] && break; sleep 0.1; done
export AIRLOCK_STATE_DIR="$work/state" AIRLOCK_DNS_UPSTREAM=$IP:53 AIRLOCK_UPSTREAM_CA="$work/ca.pem" BENCH_KEY=bench-real-key
mkdir -p "$work/ws" && cd "$work/ws"

cat > "$work/conn.py" <<'PY'
import os, socket, ssl, sys, time, statistics
host, cafile, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=None if cafile == "-" else cafile)
key = os.environ.get("KEY", "")
times = []
for _ in range(n):
    t = time.perf_counter()
    s = ctx.wrap_socket(socket.create_connection((host, 443)), server_hostname=host)
    s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n".encode())
    while s.recv(65536):
        pass
    s.close()
    times.append(time.perf_counter() - t)
print(f"{statistics.median(times) * 1000:.3f}")
PY
run() { "$AIRLOCK" run --workspace none --allow plain.test --allow bound.test --ro "$work/conn.py:/conn.py" \
  --ro "$work/ca.pem:/ca.pem" --secret 'KEY=env:BENCH_KEY;hosts=bound.test;header=x-api-key' -- "$@" 2>/dev/null; }
# Passthrough: the client trusts the server's CA; intercepted: the sandbox's bundle (default).
conn_pass=$(run env -u HTTPS_PROXY -u https_proxy python3 /conn.py plain.test /ca.pem "$N")
conn_icpt=$(run env -u HTTPS_PROXY -u https_proxy python3 /conn.py bound.test - "$N")

speed() { awk '{ if ($2 != 268435456) { print "incomplete download: " $2 " bytes" > "/dev/stderr"; exit 1 } printf "%.1f", $1 / 1048576 }'; }
tp_pass=$(run curl -s --noproxy '*' --cacert /ca.pem -o /dev/null -w '%{speed_download} %{size_download}' https://plain.test/files/big | speed)
tp_icpt=$(run sh -c 'curl -s --noproxy "*" -H "x-api-key: $KEY" -o /dev/null -w "%{speed_download} %{size_download}" https://bound.test/files/big' | speed)

python3 - "$conn_pass" "$conn_icpt" "$tp_pass" "$tp_icpt" <<'PY'
import sys
cp, ci, tp, ti = map(float, sys.argv[1:])
print("| measurement | passthrough | intercepted | ratio or delta | goal |")
print("|---|---:|---:|---:|---|")
print(f"| HTTPS connection + request, median (ms) | {cp:.3f} | {ci:.3f} | +{ci - cp:.3f} ms | ≤ +10 ms |")
print(f"| HTTPS bulk download (MiB/s) | {tp:.1f} | {ti:.1f} | {ti / tp:.2f}× | ≥ 0.8× |")
PY
