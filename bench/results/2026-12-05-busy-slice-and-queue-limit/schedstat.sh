#!/bin/bash
# schedstat.sh RINGTUN [WORKLOAD] [OUT]: one vxlan lab of WORKLOAD (default tcp1);
# 5 s mid-cell, the machine's idle and iowait (/proc/stat) and each tunnel
# and iperf3 thread's run time and run-queue wait (/proc/<pid>/task/<tid>/schedstat).
# Run as root from the repository's root.
set -e
BIN=$1; W=${2:-tcp1}; D=${3:-target/schedstat}; rm -rf "$D"; mkdir -p "$D"
cargo xtask bench --ringtun "$BIN" --only ringtun-vxlan,$W --repeats 1 --seconds 15 --fresh-labs --out "$D/rep" > "$D/bench.log" 2>&1 & BP=$!
until pgrep -f "iperf3 -c" >/dev/null; do sleep 0.2; done
sleep 4
snap() { for p in $(pgrep -x ringtun) $(pgrep -x iperf3); do for t in /proc/$p/task/*; do echo "$p $(basename $t) $(cat $t/comm) $(cat $t/schedstat 2>/dev/null)"; done; done; }
head -1 /proc/stat > "$D/stat0"; snap > "$D/s0"; sleep 5; snap > "$D/s1"; head -1 /proc/stat > "$D/stat1"
wait $BP
python3 - "$D" <<'PY'
import sys
d = sys.argv[1]
def rd(f):
    o = {}
    for l in open(f):
        x = l.split()
        if len(x) >= 6:
            o[(x[0], x[1])] = (x[2], int(x[3]), int(x[4]), int(x[5]))
    return o
a, b = rd(d + '/s0'), rd(d + '/s1')
s0 = list(map(int, open(d + '/stat0').read().split()[1:]))
s1 = list(map(int, open(d + '/stat1').read().split()[1:]))
dt = [y - x for x, y in zip(s0, s1)]
tot = sum(dt)
print(f"machine: idle {100*dt[3]/tot:.1f}%, iowait {100*dt[4]/tot:.1f}%, softirq {100*dt[6]/tot:.1f}%")
for k in sorted(b):
    if k not in a:
        continue
    run, wait = (b[k][1] - a[k][1]) / 5e9, (b[k][2] - a[k][2]) / 5e9
    if run > 0.02:
        print(f"{k[0]:>7} {b[k][0]:12} ran {run*100:5.1f}%  waited {wait*100:5.1f}%  slices/s {(b[k][3]-a[k][3])/5:7.0f}")
PY
grep -h "Gbit" "$D/bench.log" | head -1
