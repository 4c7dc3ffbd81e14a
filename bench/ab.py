#!/usr/bin/env python3
# Two builds of airlock, interleaved: each round runs every command once with A and once with B
# (the order alternating), so both see the same machine load — on a busy machine the only
# comparison that holds. Prints medians (including Python's spawn overhead) and B/A ratios.
# Usage: [ROUNDS=300] bench/ab.py BEFORE_BIN AFTER_BIN [startup|exec]   (root, release builds;
# copy both binaries to one directory first: the file's location alone moved medians by 5% here)
import os, subprocess, sys, time, statistics, tempfile
A, B = sys.argv[1], sys.argv[2]
rounds = int(os.environ.get("ROUNDS", "200"))
mode = sys.argv[3] if len(sys.argv) > 3 else "startup"
work = tempfile.mkdtemp()
env = dict(os.environ, AIRLOCK_STATE_DIR=work + "/state")
os.makedirs(work + "/ws"); open(work + "/ws/file", "w").write("x\n")
cases = {"startup": [["run", "--workspace", "none", "--net", "off", "--", "true"],
                     ["run", "--net", "off", "--", "true"],
                     ["run", "--workspace", "none", "--", "true"]]}
sups = []
if mode == "exec":
    cases["exec"] = []
    for tag, exe in (("a", A), ("b", B)):
        d = f"{work}/sbx-{tag}"
        p = subprocess.Popen([exe, "__supervise", "--dir", d, "--name", f"bench-{tag}", "--net", "off"],
                             cwd=work + "/ws", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sups.append(p)
        for _ in range(200):
            if os.path.exists(d + "/pid1"): break
            time.sleep(0.05)
    cases["exec"] = [["__exec", "--dir", "{sbx}", "--", "true"]]
res = {}
def once(exe, args, tag):
    args = [a.replace("{sbx}", f"{work}/sbx-{tag}") for a in args]
    t = time.perf_counter()
    r = subprocess.run([exe] + args, cwd=work + "/ws", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dt = time.perf_counter() - t
    assert r.returncode == 0, (exe, args, r.returncode)
    return dt
try:
    for c in cases[mode]:
        for _ in range(10): once(A, c, "a"); once(B, c, "b")
    for i in range(rounds):
        for c in cases[mode]:
            k = " ".join(c)
            pair = [("A", A, "a"), ("B", B, "b")]
            if i % 2: pair.reverse()
            for n, exe, tag in pair:
                res.setdefault((k, n), []).append(once(exe, c, tag))
finally:
    for p in sups:
        p.terminate(); p.wait()
    subprocess.run(["rm", "-rf", work])
print("| command | before (ms) | after (ms) | after/before |")
print("|---|---:|---:|---:|")
for c in cases[mode]:
    k = " ".join(c)
    a = statistics.median(res[(k, "A")]) * 1000; b = statistics.median(res[(k, "B")]) * 1000
    print(f"| airlock {k.replace('{sbx}','DIR')} | {a:.2f} | {b:.2f} | {b/a:.3f} |")
