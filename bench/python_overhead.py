#!/usr/bin/python3
"""Python overhead of flashkm.KMeans over the C++ API (issue 5 target: <= 5 %).

    /usr/bin/python3 bench/python_overhead.py --cpp build/bench/cpu_vs_peers --pythonpath build/python

Same .npy data and init for both: the C++ side is bench/cpu_vs_peers (flashkm::fit with
InitMethod::given, tol = 0, `--iters` iterations, best of `--repeats` whole calls); the
Python side is flashkm.KMeans(init=C0, n_init=1, max_iter=iters, tol=0).fit(X) on the
memory-mapped array, best of `--repeats` whole calls. Overhead = python / C++ - 1.
Writes bench/results/python_overhead_<date>.json.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpp", required=True, help="path of the cpu_vs_peers binary")
    ap.add_argument("--pythonpath", required=True, help="folder holding the built flashkm package")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    sys.path.insert(0, args.pythonpath)
    import flashkm

    rng = np.random.default_rng(20261129)
    centers = rng.standard_normal((args.k, args.d), dtype=np.float32)
    work = tempfile.mkdtemp(prefix="flashkm_pyov_")
    xp, cp = os.path.join(work, "X.npy"), os.path.join(work, "C0.npy")
    x = np.lib.format.open_memmap(xp, mode="w+", dtype=np.float32, shape=(args.n, args.d))
    step = 1 << 16
    for s in range(0, args.n, step):
        e = min(args.n, s + step)
        x[s:e] = centers[rng.integers(0, args.k, e - s)] + 1.5 * rng.standard_normal((e - s, args.d), dtype=np.float32)
    x.flush()
    c0 = np.ascontiguousarray(x[rng.permutation(args.n)[: args.k]])
    np.save(cp, c0)
    del x

    out = subprocess.run([args.cpp, "--data", xp, "--init", cp, "--iters", str(args.iters), "--threads",
                          str(args.threads), "--repeats", str(args.repeats), "--no-assign"],
                         check=True, capture_output=True, text=True)
    cpp = json.loads(out.stdout)
    cpp_s = cpp["lloyd"]["wall_s_best"]

    X = np.load(xp, mmap_mode="r")
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        km = flashkm.KMeans(args.k, init=c0, n_init=1, max_iter=args.iters, tol=0.0, n_threads=args.threads).fit(X)
        times.append(time.perf_counter() - t)
    py_s = min(times)
    result = {
        "date": datetime.date.today().isoformat(), "n": args.n, "d": args.d, "k": args.k, "iters": args.iters,
        "threads": args.threads, "cpp_best_s": cpp_s, "python_best_s": py_s, "python_runs_s": times,
        "python_n_iter": int(km.n_iter_), "overhead": py_s / cpp_s - 1.0 if cpp_s else None,
        "simd": flashkm.cpu_simd_level(), "cpp_report": cpp,
    }
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, f"python_overhead_{result['date']}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
    print(f"C++ fit {cpp_s:.3f} s, Python fit {py_s:.3f} s ({args.n}x{args.d}, K={args.k}, {args.iters} iterations): "
          f"overhead {100 * result['overhead']:+.2f} %  -> {path}")


if __name__ == "__main__":
    main()
