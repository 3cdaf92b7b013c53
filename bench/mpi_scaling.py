#!/usr/bin/python3
"""Distributed CPU fit scaling: the same fit on 1 rank x 1 thread and on P ranks x 1 thread.

    /usr/bin/python3 bench/mpi_scaling.py --flashkm build/flashkm

Generates X [N x D] float32 (Gaussian blobs, noisy enough that labels keep changing) and
initial centroids (K rows of X), then runs `flashkm fit --init C0.npy --tol 0 --max-iter I
--threads 1` once plainly (--distributed off) and once under `mpirun -np P` (each rank
maps its own rows of the same file). ms/iter is the mean over the iterations of the
per-iteration wall time that rank 0 reports (assign + accumulate + the collectives);
speed-up = ms/iter(1 rank) / ms/iter(P ranks); target >= 1.7 for P = 2 on 2 free cores.
Also checks that both runs agree (inertia to 1e-10 relative, same iteration count).
Writes bench/results/mpi_scaling_<date>.json and .md. Run it on a quiet machine: other
processes on the cores skew exactly what it measures.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np


def fit(cmd_prefix, flashkm, x_path, c_path, report, k, iters):
    cmd = cmd_prefix + [flashkm, "fit", x_path, "-k", str(k), "--init", c_path, "--tol", "0",
                        "--max-iter", str(iters), "--threads", "1", "-q", "--report", report]
    subprocess.run(cmd, check=True)
    with open(report) as f:
        r = json.load(f)
    its = r["iterations"]
    return {"ms_per_iter": sum(it["ms"] for it in its) / len(its), "n_iter": r["n_iter"],
            "inertia": r["inertia"], "total_ms": r["time_ms"]["total"], "ranks": r["ranks"],
            "iteration_ms": [it["ms"] for it in its]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flashkm", required=True, help="path of the flashkm binary (built with MPI)")
    ap.add_argument("--mpirun", default="mpirun")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()

    rng = np.random.default_rng(20261129)
    with tempfile.TemporaryDirectory() as tmp:
        x_path, c_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "c0.npy")
        # Written in slabs: the whole X is 512 MB at the default size.
        x = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float32, shape=(args.n, args.d))
        centers = rng.standard_normal((args.k, args.d), dtype=np.float32) * 3.0
        for b in range(0, args.n, 65536):
            e = min(args.n, b + 65536)
            x[b:e] = centers[rng.integers(0, args.k, e - b)] + rng.standard_normal((e - b, args.d), dtype=np.float32)
        x.flush()
        c0 = np.ascontiguousarray(x[rng.choice(args.n, args.k, replace=False)])
        np.save(c_path, c0)
        del x

        one = fit([], args.flashkm, x_path, c_path, os.path.join(tmp, "r1.json"), args.k, args.iters)
        # One core per rank (Open MPI binds to cores for small -np; said explicitly here).
        mpi = [args.mpirun, "--oversubscribe", "--allow-run-as-root", "--bind-to", "core", "-np", str(args.ranks)]
        many = fit(mpi, args.flashkm, x_path, c_path, os.path.join(tmp, "rp.json"), args.k, args.iters)

    agree = one["n_iter"] == many["n_iter"] and abs(one["inertia"] - many["inertia"]) <= 1e-10 * abs(one["inertia"])
    speedup = one["ms_per_iter"] / many["ms_per_iter"]
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "problem": {"n": args.n, "d": args.d, "k": args.k, "dtype": "float32", "iters": args.iters, "init": "given"},
        "one_rank": one,
        f"{args.ranks}_ranks": many,
        "speedup": speedup,
        "target_speedup": 1.7,
        "results_agree": agree,
    }
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, f"mpi_scaling_{result['date']}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(f"# Distributed CPU fit: 1 rank vs {args.ranks} ranks (1 thread each)\n\n")
        f.write(f"N={args.n} D={args.d} K={args.k} float32, given init, {args.iters} iterations, "
                f"{os.cpu_count()} cores.\n\n| ranks | ms/iter | iterations | inertia |\n|---|---|---|---|\n")
        for r in (one, many):
            f.write(f"| {r['ranks']} | {r['ms_per_iter']:.1f} | {r['n_iter']} | {r['inertia']:.10g} |\n")
        f.write(f"\nSpeed-up: **{speedup:.2f}x** (target >= 1.7x); results agree: {agree}.\n")
    print(json.dumps({"speedup": round(speedup, 3), "one_rank_ms_per_iter": round(one["ms_per_iter"], 1),
                      "ranks_ms_per_iter": round(many["ms_per_iter"], 1), "results_agree": agree}))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
