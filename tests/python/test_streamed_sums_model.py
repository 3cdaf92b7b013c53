"""A model of the streamed update's index arithmetic (src/cuda/streamed_rows.cu, ChunkedClusterSums).

The CUDA kernels cannot run in CI; this checks, in plain Python floats (IEEE doubles, so the
same roundings), that the segment counts, the resume/complete flags, the seeding of open
pieces and the fold order written there reproduce the resident update's sums bitwise: each
cluster's rows in row order cut into pieces of R (piece_rows_for: 64 to 4096), each piece one add chain, pieces added
in order. Every statement below mirrors a kernel of that file (names kept). The GPU tests
(tests/gpu/test_streamed.cpp) check the code itself against the resident fit.
"""
import random

import pytest

def resident(labels, vals, nc, R):
    order = sorted(range(len(labels)), key=lambda i: (labels[i], i))
    sums = [0.0] * nc
    for c in range(nc):
        rows = [i for i in order if labels[i] == c]
        acc = 0.0
        for p0 in range(0, len(rows), R):
            chain = 0.0
            for i in rows[p0:p0 + R]:
                chain += vals[i]
            acc += chain
        sums[c] = acc
    return sums
def chunked(labels, vals, nc, bounds, R):
    total = [0.0] * nc; opn = [0.0] * nc; base = [0] * nc
    for (r0, r1) in bounds:
        loc = list(range(r0, r1))
        order = sorted(loc, key=lambda i: (labels[i], i))
        row_off = [0] * (nc + 1)
        for c in range(nc + 1):
            row_off[c] = sum(1 for i in order if labels[i] < c)
        nseg = []
        for c in range(nc):
            cnt = row_off[c + 1] - row_off[c]; b = base[c]
            nseg.append(0 if cnt == 0 else (b + cnt - 1) // R - b // R + 1)
        seg_first = [0]
        for v in nseg: seg_first.append(seg_first[-1] + v)
        segs = [None] * seg_first[-1]; resume = [0] * len(segs); complete = [0] * len(segs); ps = [0.0] * len(segs)
        for c in range(nc):
            cnt = row_off[c + 1] - row_off[c]; b = base[c]; pos0 = row_off[c]; s = seg_first[c]; lo = b
            while lo < b + cnt:
                pe = (lo // R + 1) * R; hi = min(pe, b + cnt)
                segs[s] = (pos0 + lo - b, pos0 + hi - b); resume[s] = lo % R != 0; complete[s] = hi % R == 0
                s += 1; lo = hi
            assert s == seg_first[c + 1]
        for c in range(nc):
            if row_off[c + 1] != row_off[c] and base[c] % R != 0: ps[seg_first[c]] = opn[c]
        for s, (a, e) in enumerate(segs):
            acc = ps[s] if resume[s] else 0.0
            for q in range(a, e): acc += vals[order[q]]
            ps[s] = acc
        for c in range(nc):
            for s in range(seg_first[c], seg_first[c + 1]):
                if complete[s]: total[c] += ps[s]
                else:
                    assert s == seg_first[c + 1] - 1
                    opn[c] = ps[s]
            base[c] += row_off[c + 1] - row_off[c]
        cap = (r1 - r0) // R + 2 * min(nc, r1 - r0) + 1
        assert len(segs) <= cap, (len(segs), cap)
    return [total[c] + (opn[c] if base[c] % R else 0.0) for c in range(nc)]


@pytest.mark.parametrize("seed", range(6))
def test_chunked_sums_equal_resident_bitwise(seed):
    rng = random.Random(seed)
    for _ in range(10):
        n = rng.randint(1, 6000)
        nc = rng.choice([1, 2, 3, 7, 40])
        granule = rng.choice([256, 512, 2048])
        skew = rng.random()  # one large cluster: pieces that straddle many chunks
        labels = [0 if rng.random() < skew else rng.randrange(nc) for _ in range(n)]
        vals = [rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8) for _ in range(n)]
        prefix = rng.randrange(0, n + 1) // granule * granule
        ch = rng.choice([granule, 2 * granule, 3 * granule])
        bounds = [(a, min(a + ch, prefix)) for a in range(0, prefix, ch)] + \
                 [(a, min(a + ch, n)) for a in range(prefix, n, ch)]
        R = rng.choice([64, 128, 256, 4096, 3, 1000])  # the resident piece rows (any size works)
        assert chunked(labels, vals, nc, bounds, R) == resident(labels, vals, nc, R)
