"""persym.py TAG...: samples per GB delivered (the 5 s window at the cell's
rate), per symbol, mean over the labs of a build (a build is a TAG less its
last `-N`); TAG is a folder profile.sh made."""
import json, re, sys
from collections import defaultdict
by = defaultdict(lambda: defaultdict(float)); n = defaultdict(int); tot = defaultdict(float)
for tag in sys.argv[1:]:
    b = tag.rsplit('-', 1)[0]
    r = json.load(open(f'./{tag}/report/report.json'))
    g = [s['tcp']['gbps'] for s in r['samples'] if s.get('tcp')][0]
    gb = g * 5 / 8
    n[b] += 1
    for line in open(f'./{tag}/sym.txt'):
        m = re.match(r'\s+([\d.]+)%\s+(\d+)\s+\S+\s+(.*)$', line)
        if not m: continue
        c = int(m.group(2)) / gb
        by[b][m.group(3).strip()] += c; tot[b] += c
    print(tag, f'{g:.2f} Gbit/s')
bs = list(n)
for b in bs:
    for k in by[b]: by[b][k] /= n[b]
    tot[b] /= n[b]
print('total', '  '.join(f'{b} {tot[b]:.0f}' for b in bs))
keys = set().union(*[by[b].keys() for b in bs])
rows = sorted(keys, key=lambda k: -max(by[b].get(k, 0) for b in bs))[:45]
print('  '.join(f'{b:>8}' for b in bs), ' symbol')
for k in rows:
    print('  '.join(f'{by[b].get(k,0):8.1f}' for b in bs), ' ', k[:90])
