# k-means++ on config a: fraction of rows a trial could skip by the triangle inequality against
# the chosen centres vs by an int8 sketch of X (float64 numpy, 40k random rows; see
# bench/results/cpu_2026-11-30-kpp-pruning-sim.md). Needs the array bench/cpu_vs_peers.py writes.
import numpy as np
X = np.load('/tmp/flashkm_cpu_bench/a_200000x128x256_X.npy', mmap_mode='r')
rng = np.random.default_rng(1)
X = np.asarray(X[rng.permutation(200000)[:40000]], dtype=np.float64)
N, D = X.shape; K = 256; m = 2 + int(np.log(K))
# int8 per-row sketch
s = np.abs(X).max(1) / 127.0
q = np.round(X / s[:, None]).clip(-127, 127) * s[:, None]
r = np.linalg.norm(X - q, axis=1)
xx = (X**2).sum(1)
C = [X[rng.integers(N)]]
mind = ((X - C[0])**2).sum(1); lab = np.zeros(N, int)
for step in range(1, K):
    pot = mind.sum()
    ids = np.searchsorted(np.cumsum(mind), rng.uniform(size=m) * pot)
    cand = X[ids]
    d = xx[:, None] - 2 * X @ cand.T + (cand**2).sum(1)[None]
    d = np.maximum(d, 0)
    Cm = np.array(C)
    delta = np.sqrt(((cand[:, None, :] - Cm[None])**2).sum(-1))  # m x C
    tri = (delta[:, lab] >= 2 * np.sqrt(mind)[None] + 1e-9).all(0)
    dq = np.sqrt(np.maximum(((q[:, None, :] - cand[None])**2).sum(-1), 0))  # N x m
    low = np.maximum(dq - r[:, None], 0) ** 2
    sk = (low >= mind[:, None] * (1 + 1e-6) + 0.05).all(1)
    new = np.minimum(mind[:, None], d)
    best = new.sum(0).argmin()
    improved = d[:, best] < mind
    lab[improved] = len(C); mind = new[:, best]; C.append(cand[best])
    if step % 32 == 1 or step == K - 1:
        print(step, f"tri-pruned {tri.mean():.3f}  int8-sketch-pruned {sk.mean():.3f}  needs-exact(any j improves) {(d < mind[:,None]).any(1).mean():.3f}  median mind {np.median(mind):.1f} r {r.mean():.3f}", flush=True)
