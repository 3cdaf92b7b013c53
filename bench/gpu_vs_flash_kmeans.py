#!/usr/bin/env python3
"""GPU benchmark: flashkm (CUDA backend, via bench/gpu_bench) vs flash-kmeans (Triton) vs
plain PyTorch (materialised distances), same configs, same H200, same call.

10 Lloyd iterations from the same kind of init (the first K rows of each problem) on
standard-normal data; ms/iter, ratio to flash-kmeans, TFLOP/s-equivalent (2*B*N*K*D per
iteration) against the measured cuBLAS fp16 GEMM rate, peak extra device memory.
Writes <out>/gpu_<date>-h200.json and <out>/gpu_<date>-h200.md.

flash-kmeans: copy ../shared/anchors/flash_kmeans into .peers/ (ignored) and carry it;
this script adds .peers to sys.path.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".peers"))

CONFIGS = [  # name, B, N, K, D, dtype
    ("svg_batch", 32, 75600, 1000, 128, "f16"),
    ("N1M_K1k_D128", 1, 1 << 20, 1024, 128, "f16"),
    ("N1M_K8k_D128", 1, 1 << 20, 8192, 128, "f16"),
    ("N4M_K64k_D128", 1, 1 << 22, 65536, 128, "f16"),
    ("N1M_K1k_D768", 1, 1 << 20, 1024, 768, "f16"),
    ("N1M_K4k_D1536", 1, 1 << 20, 4096, 1536, "f16"),
    ("tenants_B500_N20k", 500, 20000, 256, 128, "f16"),
    ("N1M_K1k_D128_f32", 1, 1 << 20, 1024, 128, "f32"),
    ("N1M_K256_D128", 1, 1 << 20, 256, 128, "f16"),
    ("tenants_ragged_B500", 500, 20000, 256, 128, "f16"),
]
# Ragged sizes (problem b: n_b in [N/2, 3N/2), K_b in [K/2, 3K/2), bench/gpu_bench.cu): flashkm
# only (the peers batch equal-sized problems); its TFLOP/s-equivalent counts sum 2 n_b K_b D.
RAGGED = {"tenants_ragged_B500"}
QUICK = {"N1M_K1k_D128", "N1M_K8k_D128", "N1M_K1k_D768", "tenants_B500_N20k", "N1M_K256_D128", "tenants_ragged_B500"}


def fmt(v):
    """A number for the tables (2 decimals), or a dash."""
    return f"{v:.2f}" if isinstance(v, (int, float)) else "—"


def gemm_tflops(torch):
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(10):
        a @ b
    e1.record()
    torch.cuda.synchronize()
    ms = e0.elapsed_time(e1) / 10
    return 2 * 8192 ** 3 / (ms * 1e-3) / 1e12


def timed(torch, fn):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    fn()
    e1.record()
    torch.cuda.synchronize()
    return e0.elapsed_time(e1), (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def run_peers(torch, B, N, K, D, dtype, iters, do_torch):
    dt = torch.float16 if dtype == "f16" else torch.float32
    g = torch.Generator(device="cuda").manual_seed(1234)
    x = torch.randn(B, N, D, device="cuda", dtype=dt, generator=g)
    init = x[:, :K, :].clone()
    out = {}
    try:
        from flash_kmeans import batch_kmeans_Euclid
        batch_kmeans_Euclid(x, K, max_iters=2, tol=0.0, init_centroids=init.clone())  # compile / warm-up
        ms, mb = timed(torch, lambda: batch_kmeans_Euclid(x, K, max_iters=iters, tol=0.0, init_centroids=init.clone()))
        out["flash_ms_per_iter"] = ms / iters
        out["flash_peak_extra_MB"] = mb
    except Exception as e:  # noqa: BLE001
        out["flash_error"] = repr(e)[:300]
    if do_torch:
        def torch_lloyd():
            c = init.clone().float()
            xf = x
            xsq = (xf.float() ** 2).sum(-1)
            for _ in range(iters):
                d = xsq[:, :, None] - 2 * torch.bmm(xf, c.to(dt).transpose(1, 2)).float() + (c ** 2).sum(-1)[:, None, :]
                lab = d.argmin(-1)
                s = torch.zeros(B, K, D, device="cuda", dtype=torch.float32)
                s.scatter_add_(1, lab[:, :, None].expand(-1, -1, D), xf.float())
                cnt = torch.zeros(B, K, device="cuda").scatter_add_(1, lab, torch.ones_like(lab, dtype=torch.float32))
                c = torch.where(cnt[:, :, None] > 0, s / cnt.clamp(min=1)[:, :, None], c)
            return c
        try:
            torch_lloyd()
            ms, mb = timed(torch, torch_lloyd)
            out["torch_ms_per_iter"] = ms / iters
            out["torch_peak_extra_MB"] = mb
        except Exception as e:  # noqa: BLE001
            out["torch_error"] = repr(e)[:200]
            torch.cuda.empty_cache()
    del x, init
    torch.cuda.empty_cache()
    return out


def run_flashkm(exe, B, N, K, D, dtype, iters, precision, certify, timeout, update="device", layout="equal"):
    cmd = [exe, str(B), str(N), str(K), str(D), dtype, str(iters), precision, str(int(certify)), "0", update, layout]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    for line in p.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (p.stderr or p.stdout)[-300:]}


def markdown(res):
    """The two tables of a results JSON."""
    stamp = res["date"]
    lines = [f"# flashkm vs flash-kmeans on {res['device']} ({stamp})", "",
             f"cuBLAS fp16 GEMM: {res['fp16_gemm_tflops']:.0f} TFLOP/s. {res['iters']} iterations, ms per iteration.", "",
             "| config | flash-kmeans | torch | flashkm | ratio | flashkm certified | ratio | assign TFLOP/s | re-checked rows/iter (all / fp64 / candidate pairs) | extra MB (flashkm / flash) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        u, c = r.get("uncertified", {}), r.get("certified", {})
        lines.append(f"| {r['name']} | {fmt(r.get('flash_ms_per_iter'))} | {fmt(r.get('torch_ms_per_iter'))} | "
                     f"{fmt(u.get('ms_per_iter'))} | {fmt(u.get('ratio_vs_flash'))} | {fmt(c.get('ms_per_iter'))} | "
                     f"{fmt(c.get('ratio_vs_flash'))} | {fmt(u.get('assign_tflops'))} | {fmt(c.get('rechecked_per_iter'))} / {fmt(c.get('rechecked_fp64_per_iter'))} / {fmt(c.get('candidates_per_iter'))} | "
                     f"{fmt(u.get('extra_MB_held'))} / {fmt(r.get('flash_peak_extra_MB'))} |")
    lines += ["", "Per-phase wall clock of the uncertified flashkm run, ms/iter (set_centroids / assign / update);"
              " 'host update' = the same binary with the host-path update (sums to the host), same run.", "",
              "| config | set | assign | update | total | host update: total (set / assign / update) | ratio |",
              "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        u, h = r.get("uncertified", {}), r.get("host_update", {})
        lines.append(f"| {r['name']} | {fmt(u.get('set_ms_in_loop'))} | {fmt(u.get('assign_ms_in_loop'))} | "
                     f"{fmt(u.get('update_ms_in_loop'))} | {fmt(u.get('ms_per_iter'))} | {fmt(h.get('ms_per_iter'))} "
                     f"({fmt(h.get('set_ms_in_loop'))} / {fmt(h.get('assign_ms_in_loop'))} / {fmt(h.get('update_ms_in_loop'))}) | "
                     f"{fmt(h.get('ratio_vs_flash'))} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flashkm-bench", required=True)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--no-certified", action="store_true", help="skip the certified flashkm runs")
    ap.add_argument("--no-torch", action="store_true", help="skip the plain PyTorch peer")
    ap.add_argument("--host-update", action="store_true",
                    help="also run flashkm with the host-path update (sums to the host), same run")
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    ap.add_argument("--render", default="", help="only write the .md tables of this results JSON (next to it)")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as fh:
            md = markdown(json.load(fh))
        with open(os.path.splitext(args.render)[0] + ".md", "w") as fh:
            fh.write(md)
        print(md)
        return
    import torch

    os.makedirs(args.out, exist_ok=True)
    res = {"device": torch.cuda.get_device_name(0), "date": datetime.date.today().isoformat(),
           "iters": args.iters, "rows": []}
    res["fp16_gemm_tflops"] = gemm_tflops(torch)
    print(f"cuBLAS fp16 GEMM 8192^3: {res['fp16_gemm_tflops']:.1f} TFLOP/s", flush=True)
    for name, B, N, K, D, dtype in CONFIGS:
        if args.quick and name not in QUICK:
            continue
        if args.only and name not in args.only.split(","):
            continue
        t0 = time.time()
        row = {"name": name, "B": B, "N": N, "K": K, "D": D, "dtype": dtype}
        flops = 2.0 * B * N * K * D
        do_torch = B * N * K * 4 < 40e9 and not args.no_torch
        layout = "ragged" if name in RAGGED else "equal"
        if layout == "equal":
            row.update(run_peers(torch, B, N, K, D, dtype, args.iters, do_torch))
        else:
            row["peers"] = "not run: flash-kmeans and the torch peer batch equal-sized problems only"
        for certify in (False,) if args.no_certified else (False, True):
            key = "certified" if certify else "uncertified"
            r = run_flashkm(args.flashkm_bench, B, N, K, D, dtype, args.iters, "auto", certify, 120, layout=layout)
            row[key] = r
            if "ms_per_iter" in r:
                r["tflops_equiv"] = r["iter_tflops_equiv"] if layout == "ragged" else flops / (r["ms_per_iter"] * 1e-3) / 1e12
                if "flash_ms_per_iter" in row:
                    r["ratio_vs_flash"] = row["flash_ms_per_iter"] / r["ms_per_iter"]
        if args.host_update and layout == "equal":
            r = run_flashkm(args.flashkm_bench, B, N, K, D, dtype, args.iters, "auto", False, 120, "host")
            row["host_update"] = r
            if "ms_per_iter" in r and "flash_ms_per_iter" in row:
                r["ratio_vs_flash"] = row["flash_ms_per_iter"] / r["ms_per_iter"]
        if "flash_ms_per_iter" in row:
            row["flash_tflops_equiv"] = flops / (row["flash_ms_per_iter"] * 1e-3) / 1e12
        row["wall_s"] = time.time() - t0
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
    stamp = res["date"] + (f"-{args.tag}" if args.tag else "")
    with open(os.path.join(args.out, f"gpu_{stamp}-h200.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res)
    with open(os.path.join(args.out, f"gpu_{stamp}-h200.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
