"""Image-cache throughput against a naive full-resolution decode + resize, in the same run.

    python bench/bench_cache.py [N=24] [--size 256] [--workers W] [--keep DIR]

Writes N grayscale JPEGs of 2,500 x 3,000 pixels (MIMIC-CXR-JPG's typical size and quality) with
radiograph-like content (smooth anatomy-like intensity field, rib-like bands, grain noise tuned so
that files are ~1.4 MB, about MIMIC-CXR-JPG's mean: ~570 GB / 377k images),
then times on the same files, with the OS file cache warm for both:
  (a) naive: full-resolution PIL decode, Lanczos resize (shorter side = size), JPEG encode; one process
  (b) cxrgen.data.images.build_image_cache with all cores (draft-mode decode, Pool)
  (c) build_image_cache with one worker (the draft-mode gain alone, without parallelism)
and prints images/s for each and the ratios b/a and c/a.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cxrgen.data.images import build_image_cache, load_image, resize_shorter_side


def radiograph_like(seed: int, w: int = 2500, h: int = 3000) -> Image.Image:
    "A smooth chest-like field (bright mediastinum and borders, darker lungs), rib bands and grain noise."
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    xn, yn = (x - w / 2) / (w / 2), (y - h / 2) / (h / 2)
    lungs = np.exp(-(((np.abs(xn) - 0.45) / 0.28) ** 2 + (yn / 0.6) ** 2))
    img = 200 - 120 * lungs + 25 * yn
    img += 12 * np.sin(y / (60 + 10 * rng.random())) * lungs  # rib-like bands
    img += rng.normal(0, 2, (h, w)).astype(np.float32)  # grain: ~1.4 MB at q95, MIMIC-CXR-JPG's mean file size
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L")


def naive(paths, size: int) -> None:
    for p in paths:
        img = resize_shorter_side(load_image(p), size)  # full-resolution decode
        img.save(io.BytesIO(), format="JPEG", quality=95)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=24, help="number of 2,500 x 3,000 JPEGs")
    ap.add_argument("--size", type=int, default=256, help="cache size (shorter side, pixels)")
    ap.add_argument("--workers", type=int, default=None, help="cache workers (default: all cores)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats per method; the best is reported "
                    "(other processes on a shared machine only ever slow a repeat down)")
    ap.add_argument("--keep", default=None, help="write the images here and keep them (default: a temp folder)")
    a = ap.parse_args(argv)
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench_cache."))
    try:
        src = root / "mimic"
        rels = [f"images/p10/p100000{i // 3:02d}/s5000{i:04d}/{i:08x}-bench.jpg" for i in range(a.n)]
        t0 = time.perf_counter()
        base = [radiograph_like(s) for s in range(min(a.n, 4))]  # 4 distinct images, reused: generation is slow
        for i, rel in enumerate(rels):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            if not (src / rel).exists(): base[i % len(base)].save(src / rel, quality=95)
        mb = sum((src / r).stat().st_size for r in rels) / 2**20
        print(f"{a.n} JPEGs of 2500x3000 ({mb / a.n:.1f} MB each) in {time.perf_counter() - t0:.1f}s -> {src}")
        for r in rels: (src / r).read_bytes()  # warm the OS file cache for both methods

        paths = [src / r for r in rels]
        workers = a.workers or os.cpu_count() or 1
        t_naive = t_all = t_one = c_naive = c_all = float("inf")
        cpu = lambda: sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                          for f in ("ru_utime", "ru_stime"))  # CPU seconds of this process and its reaped workers
        for k in range(a.repeat):  # interleaved, so a busy spell on the machine hits all three alike
            t0, c0 = time.perf_counter(), cpu(); naive(paths, a.size)
            t_naive, c_naive = min(t_naive, time.perf_counter() - t0), min(c_naive, cpu() - c0)
            t0, c0 = time.perf_counter(), cpu()
            ok, bad = build_image_cache(rels, src, root / f"cache_all{k}", a.size, num_workers=workers, progress=False)
            t_all, c_all = min(t_all, time.perf_counter() - t0), min(c_all, cpu() - c0)
            assert len(ok) == a.n and bad.empty, bad
            t0 = time.perf_counter()
            build_image_cache(rels, src, root / f"cache_one{k}", a.size, num_workers=1, progress=False)
            t_one = min(t_one, time.perf_counter() - t0)
        res = {"n": a.n, "size": a.size, "workers": workers, "cpus": os.cpu_count(),
               "naive_img_s": a.n / t_naive, "cache_img_s": a.n / t_all, "cache_1worker_img_s": a.n / t_one}
        print(f"(a) naive full decode + resize, 1 process : {res['naive_img_s']:7.2f} images/s ({t_naive:.2f}s)")
        print(f"(b) build_image_cache, {workers} worker(s)        : {res['cache_img_s']:7.2f} images/s ({t_all:.2f}s)")
        print(f"(c) build_image_cache, 1 worker (draft only) : {res['cache_1worker_img_s']:7.2f} images/s ({t_one:.2f}s)")
        print(f"best of {a.repeat} repeat(s); speed-up b/a = {t_naive / t_all:.1f}x (target >= 4x), c/a = {t_naive / t_one:.1f}x "
              f"[{os.cpu_count()} CPUs visible; load avg {os.getloadavg()[0]:.1f}]")
        print(f"CPU time per image: naive {1000 * c_naive / a.n:.1f} ms, cache {1000 * c_all / a.n:.1f} ms (all workers) "
              f"-> on {workers} idle core(s) the cache would run ~{workers * c_naive / c_all:.1f}x the naive rate")
        res.update(speedup=t_naive / t_all, cpu_ms_naive=1000 * c_naive / a.n, cpu_ms_cache=1000 * c_all / a.n)
        return res
    finally:
        if not a.keep: shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
