#!/usr/bin/python3
"""flashkm.KMeans against scikit-learn's KMeans at default settings (issue 5 target: >= 3x
faster on N=200k D=128 K=256, 2 threads, same final inertia +-1 %).

    /usr/bin/python3 bench/python_vs_sklearn.py --pythonpath build/python [--sklearn-n-init 1,10]

Data: config a of bench/cpu_vs_peers.py (same generator and seed). flashkm.KMeans(256,
random_state=s) with its defaults (k-means++, n_init=1, tol=1e-4, max_iter=300) against
sklearn.cluster.KMeans(256, random_state=s) with n_init=1 and with scikit-learn 1.2's own
default n_init=10 (everything else default, algorithm='lloyd'). scikit-learn runs in a
subprocess with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (they halve OpenBLAS here) and
OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=2. Inertia: one float64 function on each library's
centroids. Writes bench/results/python_vs_sklearn_<date>.json.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from cpu_vs_peers import make_data  # noqa: E402  (the same data as the CPU benchmark)


def inertia64(X, C, chunk=1 << 15):
    C = C.astype(np.float64)
    cn = (C * C).sum(1)
    total = 0.0
    for s in range(0, X.shape[0], chunk):
        x = X[s:s + chunk].astype(np.float64)
        lab = np.argmin(cn[None, :] - 2.0 * x @ C.T, axis=1)
        total += float(((x - C[lab]) ** 2).sum())
    return total


SKLEARN_WORKER = r"""
import json, sys, time, numpy as np
from sklearn.cluster import KMeans
X = np.load(sys.argv[1]); n_init = int(sys.argv[2]); seed = int(sys.argv[3])
t = time.perf_counter(); km = KMeans(256, n_init=n_init, random_state=seed).fit(X); s = time.perf_counter() - t
np.save(sys.argv[4], km.cluster_centers_.astype(np.float32))
print(json.dumps({"seconds": s, "n_iter": int(km.n_iter_)}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pythonpath", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--sklearn-n-init", default="1,10")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "flashkm_cpu_bench"))
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    args = ap.parse_args()
    sys.path.insert(0, args.pythonpath)
    import flashkm

    os.makedirs(args.workdir, exist_ok=True)
    xp, _ = make_data("a", 200_000, 128, 256, args.workdir)
    X = np.load(xp)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        t = time.perf_counter()
        km = flashkm.KMeans(256, random_state=seed, n_threads=args.threads).fit(X)
        fk = {"library": "flashkm", "seed": seed, "seconds": time.perf_counter() - t, "n_iter": int(km.n_iter_),
              "inertia64": inertia64(X, km.cluster_centers_)}
        runs.append(fk)
        print(f"flashkm  seed {seed}: {fk['seconds']:.2f} s, n_iter {fk['n_iter']}, inertia {fk['inertia64']:.7e}", flush=True)
        for n_init in [int(v) for v in args.sklearn_n_init.split(",")]:
            cpath = os.path.join(args.workdir, "sk_centers.npy")
            out = subprocess.run([sys.executable, "-c", SKLEARN_WORKER, xp, str(n_init), str(seed), cpath],
                                 env=env, check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            sk = {"library": f"sklearn n_init={n_init}", "seed": seed, "seconds": r["seconds"], "n_iter": r["n_iter"],
                  "inertia64": inertia64(X, np.load(cpath))}
            runs.append(sk)
            print(f"sklearn  seed {seed} n_init={n_init}: {sk['seconds']:.2f} s, n_iter {sk['n_iter']}, "
                  f"inertia {sk['inertia64']:.7e}; flashkm is {sk['seconds'] / fk['seconds']:.1f}x faster, "
                  f"inertia ratio {fk['inertia64'] / sk['inertia64']:.5f}", flush=True)
    result = {"date": datetime.date.today().isoformat(), "config": "a: 200000x128, K=256", "threads": args.threads,
              "simd": flashkm.cpu_simd_level(), "load_avg": os.getloadavg(), "runs": runs}
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, f"python_vs_sklearn_{result['date']}{'_' + args.tag if args.tag else ''}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
    print("->", path)


if __name__ == "__main__":
    main()
