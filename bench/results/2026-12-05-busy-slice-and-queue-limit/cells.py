"""Every cell of the alternating runs here, by run set, build and workload:
`python3 cells.py`. A file `SET-BUILD-N.json.gz` is the N-th run of BUILD
in set SET; builds of one set alternated in one session."""
import glob, gzip, json, re, statistics as st
from collections import defaultdict

rows = defaultdict(list)
for path in sorted(glob.glob('*.json.gz')):
    m = re.match(r'(\w+)-(\w+)-(\d+)\.json\.gz$', path)
    if not m:
        continue
    run_set, build, n = m.group(1), m.group(2), int(m.group(3))
    with gzip.open(path) as f:
        r = json.load(f)
    for s in r['samples']:
        if not s.get('tcp'):
            continue
        lat = s.get('latency') or {}
        rows[(run_set, s['system'], s['workload'], build)].append((
            n, s['repeat'] + 1, s['tcp']['gbps'], s.get('tunnel_cpu_s_per_gb'),
            s.get('cpu_s_per_gb'), lat.get('p50_ns'), lat.get('p99_ns')))

print('set system workload build: median Gbit/s (min-max), median tunnel CPU s/GB, '
      'median probe p99 us (min-max)')
for (run_set, system, w, b), v in sorted(rows.items()):
    g = [x[2] for x in v]
    t = [x[3] for x in v if x[3]]
    p99 = [x[6] / 1000 for x in v if x[6]]
    line = f'{run_set} {system} {w} {b}: {st.median(g):.2f} ({min(g):.2f}-{max(g):.2f}) Gbit/s'
    if t:
        line += f', {st.median(t):.3f} s/GB'
    if p99:
        line += f', p99 {st.median(p99):.0f} ({min(p99):.0f}-{max(p99):.0f}) us'
    print(line + f', n={len(v)}')
