#!/bin/bash
# profile.sh BIN TAG: one vxlan tcp1 lab; perf record of both gateways'
# tunnel processes for 5 s mid-cell; samples per symbol in TAG/sym.txt
# (per GB delivered: python3 persym.py TAG...). With PERF_G=-g, call graphs.
BIN=$1; TAG=$2; mkdir -p "$TAG"
cargo xtask bench --ringtun "$BIN" --only ringtun-vxlan,tcp1 --repeats 1 --seconds 15 \
    --fresh-labs --out "$TAG/report" > "$TAG/bench.log" 2>&1 & BP=$!
until pgrep -f "iperf3 -c" > /dev/null; do sleep 0.2; done
sleep 3
perf record $PERF_G -F 1999 -p "$(pgrep -d, -x ringtun)" -o "$TAG/p.data" -- sleep 5 > /dev/null 2>&1
wait $BP
perf report -i "$TAG/p.data" --no-children -n --sort sym --stdio > "$TAG/sym.txt" 2>/dev/null
