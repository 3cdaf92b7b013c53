#!/usr/bin/python3
"""flashkm vs scikit-learn vs FAISS on the CPU, side by side in one run.

Run with Debian's interpreter (it sees numpy, scikit-learn 1.2.1 and faiss 1.7.3):

    /usr/bin/python3 bench/cpu_vs_peers.py --flashkm-bench build/bench/cpu_vs_peers

What it does (docs/BENCHMARKS.md has the long form):
  * builds the data sets of the CPU anchor (../shared/anchors/cpu_anchor_2026-11-29.md):
    Gaussian blobs, K true centres ~ N(0, I), noise N(0, 1.5^2 I); the init C0 is the first K
    rows of a fixed permutation. X and C0 are written as .npy and every library reads the
    same arrays;
  * flashkm: the C++ program bench/cpu_vs_peers.cpp (fit from C0 with tol=0, max_iter=iters;
    predict() as one assign pass; k-means++ init; default fit);
  * scikit-learn: KMeans(algorithm='lloyd', init=C0, n_init=1, tol=0, max_iter=iters);
    FAISS: Kmeans(niter=iters, max_points_per_centroid=1e9).train(X, init_centroids=C0);
    both in a subprocess whose environment has OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE
    removed (the environment of these machines may set OPENBLAS_CORETYPE=Haswell, which
    halves OpenBLAS) and OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = threads;
  * the machine: numpy sgemm 4096^3 GFLOP/s (in the peers' environment) and the fp32 FMA
    peak (bench/fma_peak.c, compiled here with gcc, AVX-512 / AVX2 chosen at run time);
  * every inertia that is compared is computed by one float64 numpy function
    (inertia64) from the final centroids of each library.

Writes bench/results/cpu_<date>-<machine>.json and .md and prints the table.
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name: (N, D, K). a-d are the configs of issue 3 and of the CPU anchor.
CONFIGS = {
    "a": (200_000, 128, 256),
    "b": (100_000, 128, 1024),
    "c": (50_000, 768, 256),
    "d": (1_000_000, 32, 64),
}
DATA_SEED = 20261129   # the anchor's data seed
INIT_SEED = 20261130   # the anchor's permutation seed for C0
PEER_ENV_REMOVED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# ----------------------------------------------------------------------------------------------
# helpers shared by the parent and the workers


def inertia64(X, C, chunk=32768):
    """Sum over rows of the squared distance to the nearest centroid, in float64.

    The nearest centroid is found from the expanded form in float64; the distance to it is
    then recomputed from the differences (no cancellation). Same function for every library.
    """
    C64 = np.asarray(C, dtype=np.float64)
    cn = np.einsum("ij,ij->i", C64, C64)
    total = 0.0
    for s in range(0, X.shape[0], chunk):
        x = np.asarray(X[s:s + chunk], dtype=np.float64)
        d = cn[None, :] - 2.0 * (x @ C64.T)
        j = np.argmin(d, axis=1)
        diff = x - C64[j]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def lloyd64(X, C0, iters, chunk=32768):
    """Reference Lloyd in float64 from C0: `iters` rounds of assign + mean update, stopping
    early (like scikit-learn and flashkm) when no label changes. Empty clusters keep their
    centroid. Returns (centroids float64, n_iter)."""
    import scipy.sparse as sp
    N = X.shape[0]
    C = np.asarray(C0, dtype=np.float64).copy()
    K = C.shape[0]
    prev = None
    n_iter = 0
    for it in range(iters):
        cn = np.einsum("ij,ij->i", C, C)
        labels = np.empty(N, dtype=np.int64)
        sums = np.zeros_like(C)
        for s in range(0, N, chunk):
            x = np.asarray(X[s:s + chunk], dtype=np.float64)
            lab = np.argmin(cn[None, :] - 2.0 * (x @ C.T), axis=1)
            labels[s:s + chunk] = lab
            m = sp.csr_matrix((np.ones(len(lab)), (lab, np.arange(len(lab)))), shape=(K, len(lab)))
            sums += m @ x
        counts = np.bincount(labels, minlength=K).astype(np.float64)
        n_iter = it + 1
        if prev is not None and np.array_equal(labels, prev):
            break
        nz = counts > 0
        C[nz] = sums[nz] / counts[nz, None]
        prev = labels
    return C, n_iter


def load_avg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = fn()
        t = time.perf_counter() - t0
        if not times or t < min(times):
            out = r
        times.append(t)
    return min(times), times, out


def sgemm_gflops(n=4096, repeats=3):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up (thread pool start, page faults)
    t, times, _ = best_of(lambda: a @ b, repeats)
    return {"n": n, "seconds_best": t, "seconds_runs": times, "gflops": 2.0 * n ** 3 / t / 1e9}


def threadpool_info():
    try:
        from threadpoolctl import threadpool_info as tpi
        return [{k: v for k, v in d.items() if k in ("internal_api", "prefix", "version", "threading_layer",
                                                   "architecture", "num_threads", "filepath")} for d in tpi()]
    except Exception as e:  # threadpoolctl missing or broken: not fatal
        return [{"error": repr(e)}]


# ----------------------------------------------------------------------------------------------
# worker: runs inside the peers' environment (subprocess)


def worker_main(args):
    import sklearn
    from sklearn.cluster import KMeans, kmeans_plusplus
    import faiss

    spec = json.loads(args.worker_spec)
    out = {"env": {k: os.environ.get(k) for k in PEER_ENV_REMOVED + ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
           "threadpool_info": threadpool_info(), "versions": {"sklearn": sklearn.__version__,
                                                              "faiss": faiss.__version__, "numpy": np.__version__}}
    try:
        out["faiss_compile_options"] = faiss.get_compile_options()
    except Exception:
        out["faiss_compile_options"] = None
    threads = spec["threads"]
    faiss.omp_set_num_threads(threads)
    out["faiss_omp_max_threads"] = faiss.omp_get_max_threads()

    if spec["task"] == "sgemm":
        out["sgemm"] = sgemm_gflops(spec.get("n", 4096))
        print(json.dumps(out))
        return

    X = np.load(spec["data"])
    C0 = np.load(spec["init"])
    N, D = X.shape
    K = C0.shape[0]
    iters, reps = spec["iters"], spec["repeats"]

    if spec["task"] == "lloyd":
        def sk(max_iter):
            km = KMeans(n_clusters=K, init=C0, n_init=1, max_iter=max_iter, tol=0.0, algorithm="lloyd",
                        random_state=spec["seed"])
            km.fit(X)
            return km

        t, times, km = best_of(lambda: sk(iters), reps)
        np.save(spec["out_prefix"] + "sklearn_C.npy", km.cluster_centers_.astype(np.float32))
        t1, times1, km1 = best_of(lambda: sk(1), reps)
        n_it = int(km.n_iter_)
        out["sklearn"] = {"wall_s_runs": times, "wall_s_best": t, "n_iter": n_it,
                          "s_per_iter_wall": t / max(1, n_it), "inertia_reported": float(km.inertia_),
                          "wall_s_max_iter1": t1,
                          "s_per_iter_marginal": (t - t1) / (n_it - 1) if n_it > 1 else None}

        if not spec.get("skip_faiss"):
            def fa():
                km = faiss.Kmeans(D, K, niter=iters, max_points_per_centroid=10 ** 9, seed=spec["seed"],
                                  verbose=False)
                km.train(X, init_centroids=C0)
                return km

            t, times, km = best_of(fa, reps)
            np.save(spec["out_prefix"] + "faiss_C.npy", km.centroids.astype(np.float32))
            out["faiss"] = {"wall_s_runs": times, "wall_s_best": t, "n_iter": iters,
                            "s_per_iter_wall": t / iters, "obj": [float(v) for v in km.obj],
                            "nsplit": [int(s.nsplit) for s in km.iteration_stats] if hasattr(
                                km.iteration_stats[0], "nsplit") else
                            [int(s["nsplit"]) for s in km.iteration_stats]}
    elif spec["task"] == "default":
        t, times, _ = best_of(lambda: kmeans_plusplus(X, K, random_state=spec["seed"]), spec["repeats"])
        out["sklearn_kmeanspp"] = {"wall_s_runs": times, "wall_s_best": t,
                                   "call": f"kmeans_plusplus(X, {K}, random_state={spec['seed']})"}

        def skd():
            km = KMeans(n_clusters=K, n_init=1, random_state=spec["seed"])
            km.fit(X)
            return km

        t, times, km = best_of(skd, spec["repeats"])
        np.save(spec["out_prefix"] + "sklearn_default_C.npy", km.cluster_centers_.astype(np.float32))
        out["sklearn_default"] = {"wall_s_runs": times, "wall_s_best": t, "n_iter": int(km.n_iter_),
                                  "inertia_reported": float(km.inertia_),
                                  "call": f"KMeans({K}, n_init=1, random_state={spec['seed']}).fit(X) "
                                          "(algorithm='lloyd', tol=1e-4, max_iter=300, k-means++)"}
    print(json.dumps(out))


def peer_env(threads):
    env = dict(os.environ)
    for k in PEER_ENV_REMOVED:
        env.pop(k, None)
    env["OMP_NUM_THREADS"] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    return env


def run_worker(spec, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker-spec", json.dumps(spec)]
    p = subprocess.run(cmd, env=peer_env(spec["threads"]), capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"peer worker failed ({spec['task']}): {p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# machine description


def machine_info():
    info = {"hostname": socket.gethostname(), "platform": platform.platform(), "nproc": os.cpu_count(),
            "python": platform.python_version(), "python_executable": sys.executable}
    model, flags, mhz = None, set(), None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "model name" and model is None:
                    model = v.strip()
                elif k == "flags" and not flags:
                    flags = set(v.split())
                elif k == "cpu MHz" and mhz is None:
                    mhz = float(v)
    except OSError:
        pass
    info["cpu_model"] = model
    info["cpu_mhz_proc_cpuinfo"] = mhz
    info["flags"] = {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                                              "avx512_bf16", "avx512_fp16", "amx_tile", "hypervisor")}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info["lscpu"] = [l.strip() for l in lscpu.splitlines()
                         if re.match(r"\s*(Vendor ID|Model name|CPU family|Model|Thread\(s\) per core|"
                                     r"Core\(s\) per socket|L2 cache|L3 cache|CPU max MHz)\s*:", l)]
    except OSError:
        info["lscpu"] = []
    info["env_of_this_shell"] = {k: os.environ.get(k) for k in PEER_ENV_REMOVED + ("OMP_NUM_THREADS",)}
    return info


def git_state():
    """HEAD of the checkout and the uncommitted library paths (the binary was built from the tree)."""
    def git(*a):
        p = subprocess.run(["git", "-C", ROOT] + list(a), capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None
    st = git("status", "--porcelain", "--", "src", "include", "CMakeLists.txt")
    return {"head": git("rev-parse", "HEAD"), "head_subject": git("log", "-1", "--format=%s"),
            "uncommitted_library_paths": st.splitlines() if st else []}


def machine_slug(info):
    host = info["hostname"]
    if host and host not in ("vm", "localhost") and not re.fullmatch(r"[0-9a-f]{8,}", host):
        base = host
    else:
        base = info["cpu_model"] or "cpu"
    base = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
    isa = "avx512" if info["flags"]["avx512f"] else ("avx2" if info["flags"]["avx2"] else "generic")
    return f"{base}-{info['nproc']}c-{isa}"


def fma_peak(workdir, threads):
    src = os.path.join(HERE, "fma_peak.c")
    exe = os.path.join(workdir, "fma_peak")
    subprocess.run(["gcc", "-O2", "-fopenmp", src, "-o", exe], check=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    p = subprocess.run([exe], capture_output=True, text=True, env=env, check=True)
    res = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    return {r["isa"]: r for r in res}


# ----------------------------------------------------------------------------------------------
# data


def make_data(name, N, D, K, workdir):
    """Gaussian blobs as in the anchor; cached in workdir as X.npy / C0.npy."""
    xp = os.path.join(workdir, f"{name}_{N}x{D}x{K}_X.npy")
    cp = os.path.join(workdir, f"{name}_{N}x{D}x{K}_C0.npy")
    if not (os.path.exists(xp) and os.path.exists(cp)):
        rng = np.random.default_rng(DATA_SEED)
        centers = rng.standard_normal((K, D), dtype=np.float32)
        assign = rng.integers(0, K, size=N)
        X = rng.standard_normal((N, D), dtype=np.float32)
        X *= np.float32(1.5)
        X += centers[assign]
        perm = np.random.default_rng(INIT_SEED).permutation(N)
        C0 = np.ascontiguousarray(X[perm[:K]])
        np.save(xp, X)
        np.save(cp, C0)
    return xp, cp


# ----------------------------------------------------------------------------------------------
# the run


def wait_for_quiet(max_load, max_wait):
    if max_load is None:
        return load_avg()
    t0 = time.time()
    while time.time() - t0 < max_wait:
        la = load_avg()
        if la is None or la[0] <= max_load:
            return la
        time.sleep(10)
    return load_avg()


def run_flashkm(exe, xp, cp, cfg_dir, args, extra):
    cmd = [exe, "--data", xp, "--init", cp, "--iters", str(args.iters), "--threads", str(args.threads),
           "--repeats", str(args.repeats), "--seed", str(args.seed),
           "--centroids-out", os.path.join(cfg_dir, "flashkm_C.npy")] + extra
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-3000:]}")
    return json.loads(p.stdout)


def rel(a, b):
    if a is None or b is None or b == 0:
        return None
    return abs(a - b) / abs(b)


def ratio(a, b):
    if a is None or b is None or a == 0:
        return None
    return b / a


def run_config(name, N, D, K, args, exe, workdir, peak, results):
    print(f"[{name}] N={N} D={D} K={K}: data ...", file=sys.stderr, flush=True)
    xp, cp = make_data(name, N, D, K, workdir)
    cfg_dir = os.path.join(workdir, f"out_{name}")
    os.makedirs(cfg_dir, exist_ok=True)
    X = np.load(xp, mmap_mode="r")
    C0 = np.load(cp)
    gflop = 2.0 * N * K * D / 1e9
    r = {"N": N, "D": D, "K": K, "gflop_per_iter": gflop, "iters": args.iters,
         "data": f"gaussian blobs: K centres ~N(0, I), noise N(0, 1.5^2 I), seed {DATA_SEED}",
         "init": f"first K rows of np.random.default_rng({INIT_SEED}).permutation(N)"}
    r["load_before"] = wait_for_quiet(args.max_load, args.max_wait)

    default_cfg = name == args.default_config and not args.skip_default
    extra = ["--kmeanspp", "--default-fit", "--default-centroids-out",
             os.path.join(cfg_dir, "flashkm_default_C.npy")] if default_cfg else []
    if exe:
        print(f"[{name}] flashkm ...", file=sys.stderr, flush=True)
        r["flashkm"] = run_flashkm(exe, xp, cp, cfg_dir, args, extra)
    r["load_after_flashkm"] = load_avg()
    if not args.skip_peers:
        print(f"[{name}] scikit-learn, faiss ...", file=sys.stderr, flush=True)
        spec = {"task": "lloyd", "data": xp, "init": cp, "iters": args.iters, "repeats": args.repeats,
                "threads": args.threads, "seed": args.seed, "out_prefix": os.path.join(cfg_dir, ""),
                "skip_faiss": args.skip_faiss}
        w = run_worker(spec, args.timeout)
        r["peer_env"] = w["env"]
        r["peer_threadpool_info"] = w["threadpool_info"]
        r["sklearn"] = w["sklearn"]
        if "faiss" in w:
            r["faiss"] = w["faiss"]
    r["load_after_peers"] = load_avg()

    # ---- inertia of every final centroid set, one float64 function ----
    print(f"[{name}] inertia64 ...", file=sys.stderr, flush=True)
    r["inertia64_C0"] = inertia64(X, C0)
    finals = {}
    for lib in ("flashkm", "sklearn", "faiss"):
        path = os.path.join(cfg_dir, f"{lib}_C.npy")
        if lib in r and os.path.exists(path):
            finals[lib] = np.load(path)
            r[lib]["inertia64"] = inertia64(X, finals[lib])
    if not args.skip_reference:
        print(f"[{name}] float64 reference Lloyd ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        Cref, nref = lloyd64(X, C0, args.iters)
        r["reference64"] = {"what": "numpy float64 Lloyd from C0, same iterations, stop when no label changes",
                            "n_iter": nref, "inertia64": inertia64(X, Cref),
                            "seconds": time.perf_counter() - t0}
        for lib in finals:
            r[lib]["inertia_rel_diff_vs_reference64"] = rel(r[lib]["inertia64"], r["reference64"]["inertia64"])
            r[lib]["max_abs_centroid_diff_vs_reference64"] = float(np.max(np.abs(finals[lib] - Cref)))
    if "faiss" in r and r["faiss"].get("obj"):
        r["faiss"]["obj0_over_inertia64_C0"] = r["faiss"]["obj"][0] / r["inertia64_C0"]

    # ---- derived numbers ----
    fk = r.get("flashkm", {}).get("lloyd")
    if fk:
        fk["inertia64"] = r["flashkm"]["inertia64"]
    for lib, d in (("flashkm", fk), ("sklearn", r.get("sklearn")), ("faiss", r.get("faiss"))):
        if d:
            d["gflops_equiv_wall"] = gflop / d["s_per_iter_wall"]
    cmp = {}
    if fk and "sklearn" in r:
        cmp["speedup_vs_sklearn"] = ratio(fk["s_per_iter_wall"], r["sklearn"]["s_per_iter_wall"])
        cmp["inertia_rel_diff_vs_sklearn"] = rel(fk["inertia64"], r["sklearn"]["inertia64"])
        cmp["max_abs_centroid_diff_vs_sklearn"] = float(np.max(np.abs(finals["flashkm"] - finals["sklearn"])))
        cmp["same_n_iter_as_sklearn"] = fk["n_iter"] == r["sklearn"]["n_iter"]
    if "sklearn" in r and "faiss" in r:
        cmp["inertia_rel_diff_sklearn_vs_faiss"] = rel(r["sklearn"]["inertia64"], r["faiss"]["inertia64"])
    if fk and "faiss" in r:
        cmp["speedup_vs_faiss"] = ratio(fk["s_per_iter_wall"], r["faiss"]["s_per_iter_wall"])
        cmp["inertia_rel_diff_vs_faiss"] = rel(fk["inertia64"], r["faiss"]["inertia64"])
    asg = r.get("flashkm", {}).get("assign_predict")
    peak_isa = "avx512" if "avx512" in peak else ("avx2" if "avx2" in peak else None)
    if peak_isa:
        cmp["fma_peak_isa"] = peak_isa
        cmp["fma_peak_gflops"] = peak[peak_isa]["gflops_best"]
        if asg:
            cmp["assign_fraction_of_fma_peak"] = asg["gflops_equiv"] / peak[peak_isa]["gflops_best"]
        if fk:
            cmp["lloyd_iter_fraction_of_fma_peak"] = fk["gflops_equiv_wall"] / peak[peak_isa]["gflops_best"]
    r["compare"] = cmp

    # ---- default fit and k-means++ (one config) ----
    if default_cfg:
        dflt = {}
        if not args.skip_peers:
            print(f"[{name}] scikit-learn default KMeans and kmeans_plusplus ...", file=sys.stderr, flush=True)
            spec = {"task": "default", "data": xp, "init": cp, "iters": args.iters, "repeats": args.default_repeats,
                    "threads": args.threads, "seed": args.seed, "out_prefix": os.path.join(cfg_dir, "")}
            w = run_worker(spec, args.timeout)
            dflt["sklearn_kmeanspp"] = w["sklearn_kmeanspp"]
            dflt["sklearn_default"] = w["sklearn_default"]
            dflt["sklearn_default"]["inertia64"] = inertia64(X, np.load(os.path.join(cfg_dir,
                                                                                     "sklearn_default_C.npy")))
        if exe:
            dflt["flashkm_kmeanspp"] = r["flashkm"].get("kmeanspp")
            dflt["flashkm_default"] = r["flashkm"].get("default_fit")
            p = os.path.join(cfg_dir, "flashkm_default_C.npy")
            if dflt["flashkm_default"] and os.path.exists(p):
                dflt["flashkm_default"]["inertia64"] = inertia64(X, np.load(p))
        fkd, skd = dflt.get("flashkm_default"), dflt.get("sklearn_default")
        fkp, skp = dflt.get("flashkm_kmeanspp"), dflt.get("sklearn_kmeanspp")
        if fkd and skd:
            dflt["speedup_default_fit"] = skd["wall_s_best"] / fkd["wall_s_best"]
            dflt["inertia_default_fit_flashkm_over_sklearn"] = fkd["inertia64"] / skd["inertia64"]
        if fkp and skp:
            dflt["speedup_kmeanspp"] = skp["wall_s_best"] / fkp["init_s_best"]
        dflt["load_after"] = load_avg()
        results["default_fit"] = {"config": name, **dflt}
    return r


def fmt(v, spec):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def iter1(r, peak_gflops):
    """(seconds, GFLOP/s-eq, fraction of peak) of flashkm's first Lloyd iteration: assign + update
    with no row skipped by bounds yet, so an upper bound on the assign pass's time."""
    ms = r.get("flashkm", {}).get("lloyd", {}).get("iter_ms") or []
    if not ms:
        return None, None, None
    t = ms[0] / 1e3
    g = r["gflop_per_iter"] / t
    return t, g, (g / peak_gflops if peak_gflops else None)


def targets(res):
    """(target, measured, met) rows for the targets of issue 3."""
    rows = []
    cf = res.get("configs", {})

    def yn(b):
        return "–" if b is None else ("yes" if b else "**no**")

    sk = {n: r.get("compare", {}).get("speedup_vs_sklearn") for n, r in cf.items()}
    fa = {n: r.get("compare", {}).get("speedup_vs_faiss") for n, r in cf.items()}
    if any(v is not None for v in sk.values()):
        vals = [v for v in sk.values() if v is not None]
        rows.append(("per Lloyd iteration ≥ 2× scikit-learn, every config",
                     ", ".join(f"{n} {fmt(v, '.2f')}×" for n, v in sk.items()), yn(min(vals) >= 2)))
    if any(v is not None for v in fa.values()):
        vals = [v for v in fa.values() if v is not None]
        rows.append(("per Lloyd iteration ≥ 4× FAISS, every config",
                     ", ".join(f"{n} {fmt(v, '.2f')}×" for n, v in fa.items()), yn(min(vals) >= 4)))
    big = {n: r.get("compare", {}) for n, r in cf.items() if r["K"] >= 256 and r["D"] >= 64}
    fr = {n: c.get("assign_fraction_of_fma_peak") for n, c in big.items()}
    f1 = {n: iter1(cf[n], c.get("fma_peak_gflops"))[2] for n, c in big.items()}
    if any(v is not None for v in fr.values()):
        isa = next(iter(big.values())).get("fma_peak_isa")
        best = [max(v for v in (fr[n], f1[n]) if v is not None) for n in big]
        ok = yn(min(best) >= 0.75) if isa == "avx512" else "not measurable here (no AVX-512)"
        rows.append((f"assign ≥ 75 % of the AVX-512 FMA peak, K ≥ 256 and D ≥ 64 (here: {isa} peak; "
                     "predict() / first Lloyd iteration incl. update)",
                     ", ".join(f"{n} {fmt(100 * fr[n] if fr[n] else None, '.0f')} % / "
                               f"{fmt(100 * f1[n] if f1[n] else None, '.0f')} %" for n in big), ok))
    d = res.get("default_fit") or {}
    if d.get("speedup_kmeanspp") is not None:
        rows.append(("k-means++ init ≥ 20× scikit-learn's (config a)",
                     f"{d['flashkm_kmeanspp']['init_s_best']:.3f} s vs {d['sklearn_kmeanspp']['wall_s_best']:.2f} s "
                     f"= {d['speedup_kmeanspp']:.1f}×", yn(d["speedup_kmeanspp"] >= 20)))
    if d.get("speedup_default_fit") is not None:
        ir = d["inertia_default_fit_flashkm_over_sklearn"]
        rows.append(("default fit ≥ 10× scikit-learn's at equal or lower inertia (config a)",
                     f"{d['flashkm_default']['wall_s_best']:.3f} s vs {d['sklearn_default']['wall_s_best']:.2f} s = "
                     f"{d['speedup_default_fit']:.1f}×; inertia ratio {ir:.6f}",
                     yn(d["speedup_default_fit"] >= 10 and ir <= 1 + 1e-6)))
    rd = {n: r.get("compare", {}).get("inertia_rel_diff_vs_sklearn") for n, r in cf.items()}
    if any(v is not None for v in rd.values()):
        vals = [v for v in rd.values() if v is not None]
        rows.append(("inertia = scikit-learn's within 1e-6 relative, same init and iterations",
                     ", ".join(f"{n} {fmt(v, '.1e')}" for n, v in rd.items()), yn(max(vals) <= 1e-6)))
    rr = {n: r.get("flashkm", {}).get("inertia_rel_diff_vs_reference64") for n, r in cf.items()}
    if any(v is not None for v in rr.values()):
        vals = [v for v in rr.values() if v is not None]
        rows.append(("(context) flashkm inertia = float64 reference Lloyd's within 1e-6",
                     ", ".join(f"{n} {fmt(v, '.1e')}" for n, v in rr.items()), yn(max(vals) <= 1e-6)))
    return rows


def render(res):
    m = res["machine"]
    L = []
    L.append(f"# CPU benchmark: flashkm vs scikit-learn {res['versions'].get('sklearn')} vs "
             f"FAISS {res['versions'].get('faiss')} — {res['date']}")
    L.append("")
    L.append(f"Machine: `{m['cpu_model']}`, {m['nproc']} vCPUs, avx512f={m['flags']['avx512f']}, "
             f"avx2={m['flags']['avx2']}, hypervisor={m['flags']['hypervisor']}; {m['platform']}.")
    L.append(f"flashkm {res['flashkm_version']} (SIMD path `{res['flashkm_simd']}`); threads = {res['threads']} for "
             f"every library; {res['iters']} Lloyd iterations from the same init C0; times are best of "
             f"{res['repeats']} whole-call wall times; s/iter = wall / n_iter.")
    L.append(f"Peers ran in a subprocess with {', '.join(PEER_ENV_REMOVED)} **unset** "
             f"(this shell had OPENBLAS_CORETYPE={m['env_of_this_shell'].get('OPENBLAS_CORETYPE')!r}), "
             f"OMP_NUM_THREADS=OPENBLAS_NUM_THREADS={res['threads']}; OpenBLAS kernel there: "
             f"{res.get('peer_openblas_architecture')}.")
    pk = res["fma_peak"]
    L.append("Machine ceilings: numpy sgemm 4096³ = **" + fmt(res.get("sgemm", {}).get("gflops"), ".0f") +
             " GFLOP/s** (peers' env); fp32 FMA peak (bench/fma_peak.c) = " +
             ", ".join(f"**{v['gflops_best']:.0f} GFLOP/s ({k})**" for k, v in pk.items()) + ".")
    g = res.get("flashkm_git") or {}
    if g.get("head"):
        L.append(f"flashkm built from commit `{g['head'][:10]}` ({g.get('head_subject')})" +
                 (f" plus uncommitted changes in {len(g['uncommitted_library_paths'])} library paths"
                  if g.get("uncommitted_library_paths") else "") + ".")
    L.append(f"Load average (1 min) during the run: {res['load_summary']}.")
    L.append("")
    tg = targets(res)
    if tg:
        L.append("### Targets of issue 3")
        L.append("")
        L.append("| target | measured | met |")
        L.append("|---|---|---|")
        for t, v, ok in tg:
            L.append(f"| {t} | {v} | {ok} |")
        L.append("")
    L.append("### Time per Lloyd iteration (2·N·K·D GFLOP/s-equivalent in brackets)")
    L.append("")
    L.append("| config | N×D×K | flashkm s/iter | scikit-learn s/iter | FAISS s/iter | × sklearn | × faiss | "
             "flashkm driver median s/iter | flashkm iteration 1 s | flashkm assign (predict) s | "
             "% FMA peak: iteration 1 / predict |")
    L.append("|" + "---|" * 11)
    for name, r in res["configs"].items():
        fk = r.get("flashkm", {}).get("lloyd", {})
        sk, fa, c = r.get("sklearn", {}), r.get("faiss", {}), r.get("compare", {})
        asg = r.get("flashkm", {}).get("assign_predict", {})

        def cell(d, key="s_per_iter_wall", gk="gflops_equiv_wall"):
            return f"{fmt(d.get(key), '.4f')} ({fmt(d.get(gk), '.0f')})" if d.get(key) is not None else "–"

        med = fk.get("iter_ms_median")
        frac = c.get("assign_fraction_of_fma_peak")
        t1, g1, f1 = iter1(r, c.get("fma_peak_gflops"))
        L.append(
            f"| {name} | {r['N']}×{r['D']}×{r['K']} | {cell(fk)} | {cell(sk)} | {cell(fa)} | "
            f"{fmt(c.get('speedup_vs_sklearn'), '.2f')} | {fmt(c.get('speedup_vs_faiss'), '.2f')} | "
            f"{fmt(med / 1e3 if med else None, '.4f')} ({fmt(fk.get('gflops_equiv_iter_median'), '.0f')}) | "
            f"{fmt(t1, '.4f')} ({fmt(g1, '.0f')}) | {cell(asg, 'wall_s_best', 'gflops_equiv')} | "
            f"{fmt(100 * f1 if f1 else None, '.0f')} % / {fmt(100 * frac if frac else None, '.0f')} % "
            f"of {c.get('fma_peak_isa')} |")
    L.append("")
    L.append("### Result quality (inertia by one float64 function from each library's final centroids)")
    L.append("")
    L.append("Reference = Lloyd in float64 numpy from the same C0 and iterations. \"rel\" = |I − I_ref| / I_ref; "
             "\"Δc\" = max abs centroid difference from the reference.")
    L.append("")
    L.append("| config | n_iter flashkm / sklearn / faiss / ref | inertia C0 | inertia reference | "
             "rel flashkm | rel sklearn | rel faiss | rel diff flashkm–sklearn | rel diff sklearn–faiss | "
             "Δc flashkm | Δc sklearn | load (1, 5, 15 min) before |")
    L.append("|" + "---|" * 12)
    for name, r in res["configs"].items():
        fk = r.get("flashkm", {})
        fkl = fk.get("lloyd", {})
        sk, fa, c, ref = r.get("sklearn", {}), r.get("faiss", {}), r.get("compare", {}), r.get("reference64", {})
        L.append(
            f"| {name} | {fkl.get('n_iter', '–')} / {sk.get('n_iter', '–')} / {fa.get('n_iter', '–')} / "
            f"{ref.get('n_iter', '–')} | {fmt(r.get('inertia64_C0'), '.7e')} | {fmt(ref.get('inertia64'), '.9e')} | "
            f"{fmt(fk.get('inertia_rel_diff_vs_reference64'), '.1e')} | "
            f"{fmt(sk.get('inertia_rel_diff_vs_reference64'), '.1e')} | "
            f"{fmt(fa.get('inertia_rel_diff_vs_reference64'), '.1e')} | "
            f"{fmt(c.get('inertia_rel_diff_vs_sklearn'), '.1e')} | "
            f"{fmt(c.get('inertia_rel_diff_sklearn_vs_faiss'), '.1e')} | "
            f"{fmt(fk.get('max_abs_centroid_diff_vs_reference64'), '.1e')} | "
            f"{fmt(sk.get('max_abs_centroid_diff_vs_reference64'), '.1e')} | {r.get('load_before')} |")
    L.append("")
    L.append("Absolute inertias: " + "; ".join(
        f"{n}: flashkm {fmt(r.get('flashkm', {}).get('inertia64'), '.9e')}, sklearn "
        f"{fmt(r.get('sklearn', {}).get('inertia64'), '.9e')}, faiss {fmt(r.get('faiss', {}).get('inertia64'), '.9e')}"
        for n, r in res["configs"].items()) + ".")
    d = res.get("default_fit")
    if d:
        L.append("")
        L.append(f"## Default use (config {d['config']}, k-means++ then Lloyd to convergence, n_init=1)")
        L.append("")
        L.append("| call | seconds | n_iter | inertia (float64) |")
        L.append("|---|---|---|---|")
        fp, sp = d.get("flashkm_kmeanspp"), d.get("sklearn_kmeanspp")
        fd, sd = d.get("flashkm_default"), d.get("sklearn_default")
        if fp:
            L.append(f"| flashkm k-means++ init (fit max_iter=1 minus its iteration) | {fmt(fp['init_s_best'], '.3f')} "
                     f"| | |")
        if sp:
            L.append(f"| sklearn `{sp['call']}` | {fmt(sp['wall_s_best'], '.3f')} | | |")
        if fd:
            L.append(f"| flashkm `fit()` defaults (k-means++, tol=1e-4, max_iter=300) | {fmt(fd['wall_s_best'], '.3f')} | "
                     f"{fd.get('n_iter')} | {fmt(fd.get('inertia64'), '.7e')} |")
        if sd:
            L.append(f"| sklearn `{sd['call']}` | {fmt(sd['wall_s_best'], '.3f')} | {sd.get('n_iter')} | "
                     f"{fmt(sd.get('inertia64'), '.7e')} |")
        L.append("")
        L.append(f"k-means++ speed-up: {fmt(d.get('speedup_kmeanspp'), '.1f')}×; default fit speed-up: "
                 f"{fmt(d.get('speedup_default_fit'), '.1f')}× at inertia ratio flashkm/sklearn "
                 f"{fmt(d.get('inertia_default_fit_flashkm_over_sklearn'), '.6f')}.")
    if res.get("notes"):
        L.append("")
        L.append("Notes:")
        for n in res["notes"]:
            L.append(f"- {n}")
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flashkm-bench", default=os.path.join(ROOT, "build", "bench", "cpu_vs_peers"),
                    help="the cpu_vs_peers binary (bench/cpu_vs_peers.cpp)")
    ap.add_argument("--configs", default="a,b,c,d", help="comma list of a,b,c,d")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="best of R for the Lloyd and assign timings")
    ap.add_argument("--default-repeats", type=int, default=1, help="best of R for the default-fit comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--default-config", default="a", help="config of the default-fit / k-means++ comparison")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every N (smoke tests); "
                                                               "results then go to --workdir only")
    ap.add_argument("--workdir", default="/tmp/flashkm_cpu_bench")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--tag", default=None, help="suffix of the results file name")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-faiss", action="store_true")
    ap.add_argument("--skip-flashkm", action="store_true")
    ap.add_argument("--skip-default", action="store_true")
    ap.add_argument("--skip-reference", action="store_true", help="no float64 reference Lloyd")
    ap.add_argument("--max-load", type=float, default=None,
                    help="before each config, wait (up to --max-wait s) until the 1-min load is below this")
    ap.add_argument("--max-wait", type=float, default=300)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--note", action="append", default=[], help="free text recorded in the results")
    ap.add_argument("--render", metavar="RESULTS.json", help="only re-render the .md of a results file")
    ap.add_argument("--worker-spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker_spec:
        return worker_main(args)
    if args.render:
        with open(args.render) as f:
            md = render(json.load(f))
        with open(os.path.splitext(args.render)[0] + ".md", "w") as f:
            f.write(md)
        print(md)
        return

    os.makedirs(args.workdir, exist_ok=True)
    exe = None if args.skip_flashkm else os.path.abspath(args.flashkm_bench)
    if exe and not os.access(exe, os.X_OK):
        sys.exit(f"cpu_vs_peers.py: no flashkm bench binary at {exe} (build the cpu_vs_peers target, "
                 "or pass --flashkm-bench PATH or --skip-flashkm)")

    info = machine_info()
    print(f"machine: {info['cpu_model']}, {info['nproc']} vCPUs, avx512f={info['flags']['avx512f']}, "
          f"load {load_avg()}", file=sys.stderr, flush=True)
    res = {"date": datetime.date.today().isoformat(), "machine": info, "iters": args.iters,
           "threads": args.threads, "repeats": args.repeats, "seed": args.seed, "scale": args.scale,
           "peers_env": f"subprocess with {' and '.join(PEER_ENV_REMOVED)} unset, "
                        f"OMP_NUM_THREADS=OPENBLAS_NUM_THREADS={args.threads}",
           "load_start": load_avg(), "notes": list(args.note)}
    print("fma peak ...", file=sys.stderr, flush=True)
    res["fma_peak"] = fma_peak(args.workdir, args.threads)
    print("sgemm ...", file=sys.stderr, flush=True)
    w = run_worker({"task": "sgemm", "threads": args.threads}, args.timeout)
    res["sgemm"] = w["sgemm"]
    res["versions"] = dict(w["versions"], threadpoolctl=None)
    try:
        import threadpoolctl
        res["versions"]["threadpoolctl"] = threadpoolctl.__version__
    except Exception:
        pass
    res["faiss_compile_options"] = w.get("faiss_compile_options")
    res["peer_threadpool_info"] = w["threadpool_info"]
    res["peer_openblas_architecture"] = next((d.get("architecture") for d in w["threadpool_info"]
                                              if d.get("internal_api") == "openblas"), None)
    if os.environ.get("OPENBLAS_CORETYPE"):
        res["sgemm_this_shell_env"] = sgemm_gflops()
    res["flashkm_version"] = res["flashkm_simd"] = None
    res["flashkm_git"] = git_state()

    res["configs"] = {}
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        N, D, K = CONFIGS[name]
        N = max(K + 1, int(N * args.scale))
        r = run_config(name, N, D, K, args, exe, args.workdir, res["fma_peak"], res)
        res["configs"][name] = r
        if "flashkm" in r:
            res["flashkm_version"] = r["flashkm"].get("version")
            res["flashkm_simd"] = r["flashkm"].get("simd")
    res["load_end"] = load_avg()
    loads = [v for r in res["configs"].values() for k in ("load_before", "load_after_flashkm", "load_after_peers")
             if (v := r.get(k))]
    one = [l[0] for l in loads] + ([res["load_end"][0]] if res["load_end"] else [])
    before = [r["load_before"][0] for r in res["configs"].values() if r.get("load_before")]
    res["load_summary"] = (f"before each config {', '.join(f'{v:.2f}' for v in before)}; over the whole run min "
                           f"{min(one):.2f}, max {max(one):.2f} (1-min averages, sampled before and after each "
                           f"library, so they include the benchmark's own {args.threads} threads; "
                           f"{os.cpu_count()} vCPUs)") if one else "unknown"

    md = render(res)
    print(md)
    name = f"cpu_{res['date']}-{machine_slug(info)}" + (f"-{args.tag}" if args.tag else "")
    out_dir = args.out_dir if args.scale == 1.0 else args.workdir
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, name + ".json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(out_dir, name + ".md"), "w") as f:
        f.write(md)
    print(f"wrote {os.path.join(out_dir, name)}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
