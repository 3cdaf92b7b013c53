#!/usr/bin/python3
"""Cluster a real data set with flashkm and with scikit-learn; print time and inertia side by side.

Data sets:
  digits      scikit-learn's bundled handwritten digits (1797 x 64), K = 10
  embeddings  a generated embedding-like set: unit-norm vectors around random topic
              directions with a heavy-tailed topic distribution (default 100,000 x 128, K = 256)

Both libraries start from the same initial centroids (k-means++ from flashkm, seed 0) and run
Lloyd (n_init=1) to the same tolerance, so the inertias should agree to ~1e-6.

    PYTHONPATH=build/python /usr/bin/python3 examples/cluster_embeddings.py [--data embeddings] [-k 256]
"""
import argparse
import time

import numpy as np

import flashkm


def embeddings(n, d, topics, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, topics + 1) ** 1.1          # Zipf-like topic popularity
    topic = rng.choice(topics, size=n, p=weights / weights.sum())
    X = centres[topic] + 0.35 * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d) * 4
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["digits", "embeddings"], default="embeddings")
    ap.add_argument("-n", type=int, default=100_000, help="rows of the generated embeddings")
    ap.add_argument("-d", type=int, default=128, help="dimension of the generated embeddings")
    ap.add_argument("-k", type=int, default=None, help="clusters (default 10 for digits, 256 for embeddings)")
    ap.add_argument("--max-iter", type=int, default=100)
    args = ap.parse_args()

    if args.data == "digits":
        from sklearn.datasets import load_digits
        X = load_digits().data.astype(np.float32)
        k = args.k or 10
    else:
        X = embeddings(args.n, args.d, topics=max(2 * (args.k or 256), 16))
        k = args.k or 256
    print(f"data: {args.data} {X.shape[0]} x {X.shape[1]} float32, K = {k}, "
          f"flashkm {flashkm.version()} ({flashkm.cpu_simd_level()})")

    init = flashkm.fit(X, k, seed=0, max_iter=1).model  # k-means++ seeding (+1 step), shared by both
    init_centroids = init.centroids

    t0 = time.perf_counter()
    fk = flashkm.KMeans(k, init=init_centroids, max_iter=args.max_iter, tol=1e-4).fit(X)
    t_fk = time.perf_counter() - t0

    rows = [("flashkm", t_fk, fk.inertia_, fk.n_iter_)]
    try:
        from sklearn.cluster import KMeans as SkKMeans
        t0 = time.perf_counter()
        sk = SkKMeans(k, init=init_centroids, n_init=1, max_iter=args.max_iter, tol=1e-4, algorithm="lloyd").fit(X)
        rows.append(("scikit-learn", time.perf_counter() - t0, sk.inertia_, sk.n_iter_))
        agree = float(np.mean(sk.labels_ == fk.labels_))
    except ImportError:
        agree = None

    print(f"{'library':<14}{'time [s]':>10}{'inertia':>20}{'iterations':>12}")
    for name, t, inertia, iters in rows:
        print(f"{name:<14}{t:>10.3f}{inertia:>20.6f}{iters:>12d}")
    if len(rows) == 2:
        rel = abs(rows[0][2] - rows[1][2]) / rows[1][2]
        print(f"speed-up {rows[1][1] / rows[0][1]:.1f}x, inertia relative difference {rel:.2e}, "
              f"labels equal on {100 * agree:.3f}% of rows")


if __name__ == "__main__":
    main()
