#!/usr/bin/python3
"""`make demo`: cluster an embedding-like data set with the flashkm CLI and with scikit-learn.

    /usr/bin/python3 scripts/demo.py --flashkm build/flashkm [--n 1000000 --d 128 --k 64]
    /usr/bin/python3 scripts/demo.py --flashkm build/flashkm --dataset digits

The default data set is 1,000,000 x 128 float32 "embeddings": K Gaussian clusters of unequal
sizes, anisotropic noise with a power-law spectrum (as in real embedding models), rotated by a
random orthogonal matrix. It is written to .npy, clustered by `flashkm fit DATA.npy -k K --seed S
-o MODEL --report REPORT.json` and by scikit-learn's KMeans with its defaults (k-means++, Lloyd,
tol=1e-4, max_iter=300) and n_init=1 (flashkm's default; scikit-learn 1.2 would run 10 inits),
both with every core of the machine. Both inertias are recomputed by the same float64 function
from the centroids each library returned. The whole demo takes about a minute on 2 cores.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def embeddings(n, d, k, seed):
    """Clustered, anisotropic, rotated float32 data resembling text/image embeddings."""
    rng = np.random.default_rng(seed)
    spectrum = (np.arange(1, d + 1, dtype=np.float32) ** -0.5)           # power-law variance decay
    sizes = rng.dirichlet(np.full(k, 2.0))                                 # unequal cluster sizes
    truth = rng.choice(k, size=n, p=sizes).astype(np.int32)
    centers = rng.standard_normal((k, d), dtype=np.float32) * (2.0 * spectrum)
    x = np.empty((n, d), dtype=np.float32)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))                       # random rotation
    q = q.astype(np.float32)
    step = 1 << 17
    for s in range(0, n, step):
        e = min(n, s + step)
        z = rng.standard_normal((e - s, d), dtype=np.float32)
        z *= spectrum
        z += centers[truth[s:e]]
        np.matmul(z, q, out=x[s:e])
    return x, truth


def inertia64(x, c, chunk=32768):
    """Sum of squared distances to the nearest centroid, in float64 (same for both libraries)."""
    c = np.asarray(c, dtype=np.float64)
    cn = np.einsum("ij,ij->i", c, c)
    total = 0.0
    for s in range(0, x.shape[0], chunk):
        xb = np.asarray(x[s:s + chunk], dtype=np.float64)
        j = np.argmin(cn[None, :] - 2.0 * (xb @ c.T), axis=1)
        diff = xb - c[j]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def find_key(obj, names):
    """First value under any of `names`, searching nested dicts breadth-first."""
    queue = [obj]
    while queue:
        o = queue.pop(0)
        if isinstance(o, dict):
            for n in names:
                if n in o and not isinstance(o[n], (dict, list)):
                    return o[n]
            queue.extend(v for v in o.values() if isinstance(v, dict))
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flashkm", default="build/flashkm", help="the flashkm CLI binary")
    ap.add_argument("--dataset", choices=["embeddings", "digits"], default="embeddings")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sklearn-n-init", type=int, default=1)
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--keep", help="keep the files in this directory instead of a temporary one")
    args = ap.parse_args()

    exe = shutil.which(args.flashkm) or args.flashkm
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        sys.exit(f"demo: no flashkm binary at {args.flashkm} (build it first: make build)")

    work = args.keep or tempfile.mkdtemp(prefix="flashkm_demo_")
    os.makedirs(work, exist_ok=True)
    try:
        t0 = time.perf_counter()
        if args.dataset == "digits":
            from sklearn.datasets import load_digits
            dg = load_digits()
            x, truth = (dg.data / 16.0).astype(np.float32), dg.target.astype(np.int32)
            k = 10 if args.k == 64 else args.k
            desc = f"scikit-learn digits, {x.shape[0]} x {x.shape[1]}, pixels / 16"
        else:
            x, truth = embeddings(args.n, args.d, args.k, args.seed)
            k = args.k
            desc = (f"{args.n:,} x {args.d} float32 embedding-like blobs ({k} clusters, unequal sizes, "
                    f"power-law anisotropic noise, random rotation)")
        data = os.path.join(work, "data.npy")
        np.save(data, x)
        print(f"data: {desc}  [{time.perf_counter() - t0:.1f} s to generate and write {os.path.getsize(data) / 2**20:.0f} MiB]")
        print(f"machine: {os.cpu_count()} cores; both libraries use all of them; k = {k}, seed = {args.seed}")
        print()

        # ---- flashkm (CLI) ----
        model, report = os.path.join(work, "model.fkm"), os.path.join(work, "report.json")
        cents, labels = os.path.join(work, "centroids.npy"), os.path.join(work, "labels.npy")
        cmd = [exe, "fit", data, "-k", str(k), "--seed", str(args.seed), "-o", model, "--report", report,
               "--centroids", cents, "--labels", labels]
        print("$ " + " ".join(cmd))
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        fk_wall = time.perf_counter() - t0
        if p.returncode != 0:
            sys.stderr.write(p.stdout + p.stderr)
            sys.exit(f"demo: flashkm fit failed with exit code {p.returncode}")
        with open(report) as f:
            rep = json.load(f)
        fk_iter = find_key(rep, ("n_iter",))
        tms = rep.get("time_ms") if isinstance(rep.get("time_ms"), dict) else {}
        fk_fit_s = tms["total"] / 1e3 if isinstance(tms.get("total"), (int, float)) else None
        fk_init_s = tms["init"] / 1e3 if isinstance(tms.get("init"), (int, float)) else None
        fk_inertia = inertia64(x, np.load(cents)) if os.path.exists(cents) else find_key(rep, ("inertia",))
        fk_labels = np.load(labels) if os.path.exists(labels) else None

        # ---- scikit-learn ----
        sk = None
        if not args.skip_sklearn:
            from sklearn.cluster import KMeans
            print(f"$ python: KMeans(n_clusters={k}, n_init={args.sklearn_n_init}, random_state={args.seed}).fit(X)")
            t0 = time.perf_counter()
            km = KMeans(n_clusters=k, n_init=args.sklearn_n_init, random_state=args.seed).fit(x)
            sk = {"wall": time.perf_counter() - t0, "n_iter": int(km.n_iter_),
                  "inertia": inertia64(x, km.cluster_centers_), "labels": km.labels_}

        # ---- side by side ----
        print()
        rows = [("", "flashkm (CLI)", "scikit-learn")]
        rows.append(("time, s", f"{fk_wall:.2f}" + (f" (fit {fk_fit_s:.2f}" + (f", init {fk_init_s:.2f}" if fk_init_s is not None else "") + ")"
                                       if fk_fit_s is not None else ""),
                     f"{sk['wall']:.2f}" if sk else "–"))
        rows.append(("n_iter", str(fk_iter), str(sk["n_iter"]) if sk else "–"))
        rows.append(("inertia", f"{fk_inertia:.7e}" if fk_inertia is not None else "?",
                     f"{sk['inertia']:.7e}" if sk else "–"))
        try:
            from sklearn.metrics import adjusted_rand_score as ari
            rows.append(("ARI vs true clusters", f"{ari(truth, fk_labels):.4f}" if fk_labels is not None else "–",
                         f"{ari(truth, sk['labels']):.4f}" if sk else "–"))
        except ImportError:
            pass
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        for r in rows:
            print(f"  {r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]:>14}")
        if sk:
            print()
            r = sk["wall"] / fk_wall
            speed = f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"
            print(f"flashkm is {speed} than scikit-learn end to end (its time includes process start, reading "
                  f"the .npy and writing the outputs); inertia ratio flashkm / scikit-learn = "
                  f"{fk_inertia / sk['inertia']:.6f}")
        print("(time = wall seconds of the whole `flashkm fit` call and of KMeans.fit; inertia recomputed in "
              "float64 from each library's centroids)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
