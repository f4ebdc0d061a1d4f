"""Synthetic dataset generation speed: 2,000 studies at 512 px (the issue's target: well under a minute
on 2 cores) and a few studies at 3,000 px (the size the image-cache benchmark needs).

    python bench/bench_synth.py [--n_studies 2000] [--workers 2]

With --agreement N it instead plans N studies per seed (0, 1, 2; no images) and prints, per CheXpert
observation, how often the generator's true labels equal cxrgen's CheXpert-style labeler on the
findings + impression text (exact 1/0/-1/blank agreement; the target is 1.000 everywhere).
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from cxrgen.data.synthetic import INFO_FILE, generate_dataset, plan_dataset
from cxrgen.evaluation.agreement import labeler_agreement


def run(n_studies: int, image_size: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        out = generate_dataset(Path(d) / "synthetic", n_studies=n_studies, seed=0, image_size=image_size,
                               num_workers=workers, progress=False)
        dt = time.perf_counter() - t0
        n_img = json.loads((out / INFO_FILE).read_text())["n_images"]
        mb = sum(p.stat().st_size for p in (out / "images").rglob("*.jpg")) / 1e6
        print(f"{n_studies:5d} studies / {n_img:5d} images at {image_size:4d} px, {workers} workers: "
              f"{dt:6.1f} s ({n_img / dt:6.1f} images/s, {mb:7.1f} MB of JPEG)")


def agreement(n_studies: int, seeds=(0, 1, 2)) -> pd.DataFrame:
    t0 = time.perf_counter()
    table = pd.DataFrame({f"seed {s}": labeler_agreement(plan_dataset(n_studies, seed=s))["exact"] for s in seeds})
    print(f"label agreement, generator vs labeler, {n_studies} studies per seed ({time.perf_counter() - t0:.1f} s):")
    print(table.round(4).to_string())
    return table


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_studies", type=int, default=2000)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--agreement", type=int, default=0, metavar="N",
                   help="measure label agreement with the labeler on N planned studies per seed instead")
    a = p.parse_args()
    if a.agreement:
        agreement(a.agreement)
        raise SystemExit
    print(f"cpu_count={os.cpu_count()}, load average={os.getloadavg()[0]:.1f} (timings on a shared machine vary)")
    run(a.n_studies, 512, a.workers)
    run(20, 3000, a.workers)
