"""Every cell of the six runs, by build and workload: `python3 cells.py`."""
import gzip, json, statistics as st
from collections import defaultdict

rows = defaultdict(list)
for build in ('before-pinned', 'before-unpinned', 'now'):
    for i in (1, 2):
        with gzip.open(f'{build}-{i}.json.gz') as f:
            r = json.load(f)
        for s in r['samples']:
            if not s['tcp']:
                continue
            p = (s.get('placement') or {}).get('same_cpu')
            lat = s.get('latency') or {}
            rows[(s['workload'], build)].append((
                i, s['repeat'] + 1, s['tcp']['gbps'], s.get('tunnel_cpu_s_per_gb'),
                s.get('cpu_s_per_gb'), p, lat.get('p50_ns'), lat.get('p99_ns')))
print('workload build run lab Gbit/s tunnel-s/GB machine-s/GB same-CPU p50-us p99-us')
for (w, b), v in rows.items():
    g = [x[2] for x in v]
    print(f'# {w} {b}: median {st.median(g):.2f} Gbit/s, {min(g):.2f}-{max(g):.2f}')
    for i, lab, gbps, t, m, p, p50, p99 in v:
        f = lambda x, d=2: '-' if not x else f'{x:.{d}f}'
        print(w, b, i, lab, f'{gbps:.2f}', f(t), f(m), '-' if p is None else f'{p:.2f}',
              '-' if not p50 else round(p50 / 1000), '-' if not p99 else round(p99 / 1000))
