"""Inference throughput on CPU for the demo-size model: batched vs one-by-one generation, in the same run.

    python bench/bench_inference.py                       # 32 images, batch sizes 8 and 16, 1 thread
    python bench/bench_inference.py --n_images 64 --batch_sizes 4,8,32 --threads 4 --json bench_inference.json

The model is the `demo` preset (resnet10t at 128 px, a 2-layer GPT-2, 256 wide) with random weights,
saved and loaded as a checkpoint. Every report is forced to exactly `--tokens` new tokens
(min_new_tokens = max_new_tokens), so one-by-one and batched runs do the same work and the
speed-up measures batching, not when an untrained model happens to emit </s>.
Images are 512-px JPEGs (MIMIC-CXR-JPG files are larger; loading is timed separately).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_images(folder: Path, n: int, size: int = 512, seed: int = 0) -> list[Path]:
    "n chest-like grayscale JPEGs (two dark lung fields in a bright body, noise)."
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        cx = 0.3 + rng.normal(0, 0.02)
        lungs = np.exp(-(((x - cx) / 0.13) ** 2 + ((y - 0.5) / 0.28) ** 2)) + np.exp(-(((x - 1 + cx) / 0.13) ** 2 + ((y - 0.5) / 0.28) ** 2))
        img = np.clip(200 - 150 * lungs + rng.normal(0, 6, (size, size)), 0, 255).astype(np.uint8)
        p = folder / f"s{i // 2:04d}" / f"view{i % 2}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(p, quality=90)
        out.append(p)
    return out


def timed(fn, repeats: int = 1):
    "Best wall time of `repeats` calls (seconds) and the last result."
    best, res = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter(); res = fn(); best = min(best, time.perf_counter() - t)
    return best, res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n_images", type=int, default=32)
    ap.add_argument("--batch_sizes", default="8,16", help="comma-separated batch sizes to time")
    ap.add_argument("--tokens", type=int, default=60, help="new tokens per report (forced)")
    ap.add_argument("--num_beams", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many timings per mode (shared machines are noisy)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    from cxrgen.inference import infer_batch, load_generator
    from cxrgen.testing import make_demo_checkpoint

    dec = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens, num_beams=args.num_beams, no_repeat_ngram_size=0)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ck = make_demo_checkpoint(d / "ck")
        gen = load_generator(ck, device="cpu")
        paths = make_images(d / "imgs", args.n_images)
        n = len(paths)
        gen.generate_reports(paths[:2], batch_size=2, **dec)  # warm-up (allocator, kernels)
        from cxrgen.inference import label_texts
        label_texts(["warm-up: compiles the labeler's patterns"])
        R = args.repeats

        t_pre, pix = timed(lambda: [gen.preprocess(p) for p in paths])
        t_one, one = timed(lambda: [gen.generate_from_pixels([px], **dec)[0] for px in pix], R)
        rows = [{"mode": "one-by-one (model only)", "batch_size": 1, "seconds": t_one, "images_per_s": n / t_one, "speedup": 1.0}]
        for bs in [int(b) for b in args.batch_sizes.split(",") if b.strip()]:
            t_b, rep = timed(lambda: [r for i in range(0, n, bs) for r in gen.generate_from_pixels(pix[i:i + bs], **dec)], R)
            rows.append({"mode": "batched (model only)", "batch_size": bs, "seconds": t_b, "images_per_s": n / t_b, "speedup": t_one / t_b})
        bs0 = int(args.batch_sizes.split(",")[0])
        t_e1, _ = timed(lambda: [gen.generate_report(p, **dec) for p in paths], R)
        t_e, summary = timed(lambda: infer_batch(d / "imgs", d / "out", gen, batch_size=bs0, overwrite=True, progress=False, **dec), R)
        rows.append({"mode": "one-by-one generate_report (load+model)", "batch_size": 1, "seconds": t_e1, "images_per_s": n / t_e1, "speedup": 1.0})
        rows.append({"mode": "infer_batch end to end (load+model+labels+files)", "batch_size": bs0, "seconds": t_e,
                     "images_per_s": n / t_e, "speedup": t_e1 / t_e})
        assert summary["n_reports"] == n, summary

    info = {"device": "cpu", "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
            "os_cpus": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0], "n_images": n,
            "tokens_per_report": args.tokens, "repeats": R, "num_beams": args.num_beams, "model": "demo preset (resnet10t 128px + GPT-2 2x256), random init",
            "preprocess_ms_per_image": 1000 * t_pre / n}
    print(f"cxrgen inference benchmark: {n} images, {args.tokens} tokens/report, beams={args.num_beams}, "
          f"CPU {info['cpu']} with {info['torch_threads']} torch thread(s) ({info['os_cpus']} cores seen), torch {info['torch']}")
    print(f"preprocessing (read 512-px JPEG, resize, transform): {info['preprocess_ms_per_image']:.1f} ms/image")
    print(f"{'mode':<52}{'batch':>6}{'seconds':>10}{'images/s':>10}{'speed-up':>10}")
    for r in rows: print(f"{r['mode']:<52}{r['batch_size']:>6}{r['seconds']:>10.2f}{r['images_per_s']:>10.2f}{r['speedup']:>9.2f}x")
    res = {"info": info, "results": rows}
    if args.json: Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
