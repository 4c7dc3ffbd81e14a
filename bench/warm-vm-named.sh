#!/usr/bin/env bash
# Named microVM starts (issue 16): `airlock start NAME` + `airlock exec NAME -- true` for a
# clone-workspace microVM sandbox, started cold (a guest boot) vs claimed from a `daemon start
# --backend microvm --workspace clone` pool (the sandbox's ext4 image made in the member's
# slot, mounted by the guest, hostname and job bound). Interleaved rounds (cold, warm, the
# order alternating); before each warm start the script waits, untimed, until the pool is
# full again. Also the `start` alone and the claimer's own split (`claimed in`, `bound in`).
# Usage: [ROUNDS=3] bench/warm-vm-named.sh [AIRLOCK_BIN]   (default target/debug/airlock; root)
# VM artifacts from AIRLOCK_CACHE_DIR (default /var/cache/airlock-test, the tests' cache).
set -euo pipefail
cd "$(dirname "$0")/.."
export AIRLOCK=$(realpath "${1:-target/debug/airlock}") ROUNDS=${ROUNDS:-3}
export AIRLOCK_CACHE_DIR=${AIRLOCK_CACHE_DIR:-/var/cache/airlock-test}
exec python3 - <<'PY'
import json, os, re, statistics, subprocess, tempfile, time
exe, rounds = os.environ["AIRLOCK"], int(os.environ["ROUNDS"])
work = tempfile.mkdtemp()
proj = work + "/project"
os.makedirs(proj + "/src")
for i in range(20):
    open(f"{proj}/src/f{i}.txt", "w").write("x\n" * 10)
git = lambda *a: subprocess.run(["git", *a], cwd=proj, check=True, capture_output=True)
git("init", "-q", "-b", "main"); git("-c", "user.name=b", "-c", "user.email=b@b", "add", ".")
git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init")
env = {k: dict(os.environ, AIRLOCK_STATE_DIR=f"{work}/{k}", AIRLOCK_RUNTIME_DIR=f"{work}/{k}-rt")
       for k in ("cold", "warm")}
def airlock(which, *args, **kw):
    return subprocess.run([exe, *args], cwd=proj, env=env[which], **kw)
pol = ["--backend", "microvm", "--net", "off"]
res = {k: {"start": [], "start+exec": []} for k in ("cold", "warm")}
split, load = [], [os.getloadavg()[0]]
try:
    r = airlock("warm", "daemon", "start", "--size", "1", "--workspace", "clone", *pol, "--wait",
                stdout=subprocess.DEVNULL)
    assert r.returncode == 0, r
    def full():
        for _ in range(3000):
            st = json.loads(airlock("warm", "daemon", "status", "--json", capture_output=True).stdout)
            if all(p["ready"] >= p["size"] for p in st["pools"]):
                return
            time.sleep(0.1)
        raise SystemExit("the pool did not refill")
    def once(k, i):
        name = f"b{k}{i}"
        assert airlock(k, "create", name, *pol, stdout=subprocess.DEVNULL).returncode == 0
        if k == "warm":
            full()
        t = time.perf_counter()
        s = airlock(k, "start", name, capture_output=True, text=True)
        ts = time.perf_counter() - t
        e = airlock(k, "exec", name, "--", "true")
        te = time.perf_counter() - t
        assert s.returncode == 0 and e.returncode == 0, (s.stderr, e)
        warm = "warm start" in s.stderr
        assert warm == (k == "warm"), s.stderr
        m = re.search(r"claimed in ([\d.]+) ms, bound in ([\d.]+) ms", s.stderr)
        if m:
            split.append((float(m[1]), float(m[2])))
        res[k]["start"].append(ts); res[k]["start+exec"].append(te)
        airlock(k, "rm", "-f", name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load.append(os.getloadavg()[0])
    for i in range(rounds):
        for k in (("cold", "warm") if i % 2 == 0 else ("warm", "cold")):
            once(k, i)
finally:
    airlock("warm", "daemon", "stop", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The engines this script auto-started (no `engine stop`): by their runtime directory.
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read()
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if f"AIRLOCK_RUNTIME_DIR={work}/".encode() in environ and b"engine" in cmd:
            os.kill(int(pid), 15)
med = lambda v: statistics.median(v) if v else float("nan")
print(f"| named microVM (clone, 20 files) | cold | warm | warm/cold |")
print(f"|---|---|---|---|")
for m in ("start", "start+exec"):
    c, w = med(res["cold"][m]), med(res["warm"][m])
    print(f"| `{m}` median of {rounds} | {c:.2f} s | {w:.2f} s | {w / c:.2f}x |")
if split:
    print(f"\nwarm split (median): claimed in {med([a for a, _ in split]):.1f} ms, "
          f"bound in {med([b for _, b in split]):.1f} ms")
print(f"load (1 min): {min(load):.1f}-{max(load):.1f}")
PY
