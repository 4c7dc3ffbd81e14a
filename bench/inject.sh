#!/usr/bin/env bash
# Secret injection cost (docs/design/secrets.md): HTTPS from inside `airlock run --net filtered`
# to a host without a bound secret (SNI passthrough) vs one with a secret bound (TLS ended by
# the proxy, key swapped in, new TLS upstream), in one run against the same server:
#   1. connection setup: N sequential HTTPS requests on fresh connections (Python client);
#   2. bulk throughput: one SIZE_MIB HTTPS download (curl), and the CPU time the airlock
#      process (the proxy) spent on it per MiB: far less noisy than wall time on a loaded host.
# Needs root (a network namespace with a veth is the "internet"), python3, curl, openssl.
# Usage: bench/inject.sh [AIRLOCK_BIN [OTHER_BIN...]]    (default target/release/airlock)
#   With several binaries (e.g. a saved "before" and the "after"), ROUNDS rounds alternate them
#   against the same server (the order flips every round) and medians per binary are printed.
#   Environment: N (default 200; 0 skips the connection part), SIZE_MIB (256), ROUNDS (1),
#   CA_BUNDLE (default "system": the passthrough client trusts the test CA inside a copy of
#   the system's bundle, as large as the sandbox's own bundle that the intercepted client loads;
#   "single": the test CA alone, as before session 9 — OpenSSL then spends ≈50 ms less CPU
#   loading roots on the passthrough side only, a fixed cost that is not interception's).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# = 0 ]; then
  [ -x target/release/airlock ] || cargo build --release -p airlock >&2
  set -- target/release/airlock
fi
BINS=()
for b in "$@"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 1; }; BINS+=("$(realpath "$b")"); done
[ "$(id -u)" = 0 ] || { echo "bench/inject.sh needs root (it creates a network namespace)" >&2; exit 1; }
N=${N:-200} SIZE_MIB=${SIZE_MIB:-256} ROUNDS=${ROUNDS:-1}
NS=airlock-bench-inj HOST_IF=alkbinj0 PEER_IF=alkbinj1 HOST_IP=198.18.251.1 IP=198.18.251.2
work=$(mktemp -d)
cleanup() { [ -z "${srv:-}" ] || kill "$srv" 2>/dev/null || true; ip link del $HOST_IF 2>/dev/null || true; ip netns del $NS 2>/dev/null || true; rm -rf "$work"; }
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
mkdir -p "$work/files" && head -c $((SIZE_MIB << 20)) /dev/zero > "$work/files/big"
chmod 644 "$work/ca.pem"
# What the passthrough client trusts (see CA_BUNDLE above).
if [ "${CA_BUNDLE:-system}" = single ]; then
  cp "$work/ca.pem" "$work/trust.pem"
else
  # The system bundle the sandbox's own starts with (airlock-sandbox's SYSTEM_BUNDLES).
  for sysb in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/ca-bundle.pem /etc/ssl/cert.pem; do
    [ -f "$sysb" ] && break
  done
  { cat "$sysb"; echo; cat "$work/ca.pem"; } > "$work/trust.pem"
fi
chmod 644 "$work/trust.pem"
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
run() { exec "$AIRLOCK" run --workspace none --allow plain.test --allow bound.test --ro "$work/conn.py:/conn.py" \
  --ro "$work/trust.pem:/ca.pem" --secret 'KEY=env:BENCH_KEY;hosts=bound.test;header=x-api-key' -- "$@" 2>/dev/null; }
# The CPU time (utime + stime, ms) of the airlock process of a `run` that does one download: its
# threads are the proxy's (start-up and teardown are a few ms of it, the same in both paths).
# Run in the background (the subshell execs airlock: $! is its PID) and
# sampled until it has exited (a zombie still shows its threads' totals).
cpu_run() {
  local out=$1 pid st last=0 hz
  hz=$(getconf CLK_TCK)
  shift
  (run "$@") > "$out" &
  pid=$!
  while read -r st 2>/dev/null < "/proc/$pid/stat"; do
    st=${st##*) }
    set -- $st
    last=$(( (${12} + ${13}) * 1000 / hz ))
    [ "$1" = Z ] && break
    sleep 0.02
  done
  wait "$pid"
  echo "$last"
}
bytes=$((SIZE_MIB << 20))
speed() { awk -v want=$bytes '{ if ($2 != want) { print "incomplete download: " $2 " bytes" > "/dev/stderr"; exit 1 } printf "%.1f", $1 / 1048576 }'; }
ticks() { local st; read -r st < "/proc/$1/stat"; st=${st##*) }; set -- $st; echo $(( ${12} + ${13} )); }
# ms of CPU per MiB from clock ticks
per_mib() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v m="$SIZE_MIB" 'BEGIN { printf "%.3f", t * 1000 / hz / m }'; }
# One download from inside the sandbox: prints the proxy's, the server's and curl's CPU per MiB
# (curl's: the shell's children's time, read after curl has been waited for).
download() {
  local s0 s1 up
  s0=$(ticks "$srv")
  up=$(cpu_run "$work/tp" sh -c "curl -s --noproxy '*' $1 -o /dev/null -w '%{speed_download} %{size_download}' $2; echo; cat /proc/\$\$/stat")
  s1=$(ticks "$srv")
  head -1 "$work/tp" | speed
  echo " $(awk -v c="$up" -v m="$SIZE_MIB" 'BEGIN { printf "%.3f", c / m }') $(per_mib $((s1 - s0)))" \
    "$(tail -1 "$work/tp" | { read -r st; st=${st##*) }; set -- $st; per_mib $(( ${14} + ${15} )); })"
}
# One measurement of one binary: conn_pass conn_icpt, then per path: MiB/s and the proxy's,
# server's and client's CPU (ms per MiB).
measure() {
  AIRLOCK=$1
  local cp=0 ci=0
  if [ "$N" != 0 ]; then
    # Passthrough: the client trusts the server's CA; intercepted: the sandbox's bundle (default).
    cp=$( (run env -u HTTPS_PROXY -u https_proxy python3 /conn.py plain.test /ca.pem "$N") )
    ci=$( (run env -u HTTPS_PROXY -u https_proxy python3 /conn.py bound.test - "$N") )
  fi
  echo "$cp $ci $(download '--cacert /ca.pem' https://plain.test/files/big) $(download '-H "x-api-key: $KEY"' https://bound.test/files/big)"
}
: > "$work/results"
for r in $(seq "$ROUNDS"); do
  order=("${BINS[@]}")
  if [ $((r % 2)) = 0 ]; then order=(); for ((k=${#BINS[@]}-1; k>=0; k--)); do order+=("${BINS[k]}"); done; fi
  for b in "${order[@]}"; do
    line=$(measure "$b")
    echo "$b $line" >> "$work/results"
    [ "$ROUNDS" = 1 ] && [ ${#BINS[@]} = 1 ] || echo "round $r $(basename "$b"): $line" >&2
  done
done

python3 - "$work/results" "$N" "${BINS[@]}" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
n, bins = int(sys.argv[2]), sys.argv[3:]
med = st.median
summary = []
for b in bins:
    r = [list(map(float, x[1:])) for x in rows if x[0] == b]
    # cp ci | tp up sp cp_ | ti ui si ci_
    m = [med([x[i] for x in r]) for i in range(10)]
    ratio = med([x[6] / x[2] for x in r])
    delta = med([x[1] - x[0] for x in r])
    if len(bins) > 1:
        print(f"\n{b}:")
    if len(r) > 1:
        print(f"medians of {len(r)} runs; throughput ratio per run: " + ", ".join(f"{x[6] / x[2]:.2f}" for x in r))
    print("| measurement | passthrough | intercepted | ratio or delta | goal |")
    print("|---|---:|---:|---:|---|")
    if n:
        print(f"| HTTPS connection + request, median (ms) | {m[0]:.3f} | {m[1]:.3f} | {delta:+.3f} ms | ≤ +10 ms |")
    print(f"| HTTPS bulk download (MiB/s) | {m[2]:.1f} | {m[6]:.1f} | {ratio:.2f}× | ≥ 0.8× |")
    print(f"| CPU per MiB: airlock (the proxy) (ms) | {m[3]:.2f} | {m[7]:.2f} | {m[7] - m[3]:+.2f} ms | |")
    print(f"| CPU per MiB: server (Python, OpenSSL) (ms) | {m[4]:.2f} | {m[8]:.2f} | {m[8] - m[4]:+.2f} ms | |")
    print(f"| CPU per MiB: client (curl) (ms) | {m[5]:.2f} | {m[9]:.2f} | {m[9] - m[5]:+.2f} ms | |")
    tot_p, tot_i = m[3] + m[4] + m[5], m[7] + m[8] + m[9]
    print(f"| CPU per MiB, all three (ms) | {tot_p:.2f} | {tot_i:.2f} | {tot_i / tot_p:.2f}× | |")
    summary.append((b, m, ratio, tot_p, tot_i, len(r)))
if len(bins) > 1:
    # One line per binary, to compare them at a glance (medians; ms of CPU per MiB).
    print("\n| binary | runs | proxy CPU/MiB passthrough | proxy CPU/MiB intercepted | all three, passthrough → intercepted | MiB/s passthrough / intercepted | throughput ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for b, m, ratio, tot_p, tot_i, k in summary:
        print(f"| {b} | {k} | {m[3]:.2f} | {m[7]:.2f} | {tot_p:.2f} → {tot_i:.2f} ({tot_i / tot_p:.2f}×) | {m[2]:.1f} / {m[6]:.1f} | {ratio:.2f}× |")
PY
