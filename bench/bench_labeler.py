"""Speed of cxrgen's CheXpert-style labeler on one CPU core.

    python bench/bench_labeler.py [--n 2000] [--repeat 3] [--seed 0] [--min-rate 0] [--compare OTHER_LABELER_PY]

Builds N realistic MIMIC-CXR-style reports (a FINDINGS paragraph of 4-8 sentences and an
IMPRESSION of 1-3, drawn from a bank of real-style sentences with random sides, sizes, lobes and
devices; about a third are normal studies); a quarter are whole report files from
cxrgen.data.synthetic when that module is installed. Pins the process to one core and times
`label_reports` on all of them (best of --repeat runs after a warm-up; each run starts with the
labeler's sentence caches empty, so a run never reuses the previous run's work). Prints reports/s, how
often each observation came out positive / negative / uncertain, and the per-observation agreement
with the synthetic generator's own labels. Exits 1 when reports/s < --min-rate (the project's target
is 2,000).

`--compare path/to/labeler.py` (another version of cxrgen/evaluation/labeler.py, e.g. main's, copied
outside the repository) checks that it gives the same label table on these reports and times the two
alternately in the same process (best of --repeat each), printing both rates and their ratio: on a
shared machine only the ratio is comparable between runs.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import textwrap
import time

import numpy as np

from cxrgen.core import CHEXPERT_LABELS
import cxrgen.evaluation.labeler as labeler
from cxrgen.evaluation.labeler import label_reports

SIDE = ["left", "right", "bilateral"]
BASE = ["left base", "right base", "lung bases", "left lower lobe", "right lower lobe", "right middle lobe",
        "lingula", "right upper lobe", "left upper lobe", "retrocardiac region"]
SIZE = ["small", "moderate", "large", "trace", "tiny", "small to moderate"]
DEGREE = ["mild", "moderate", "severe", "minimal", "mild-to-moderate"]

DEVICES = [
    "Endotracheal tube terminates {n} cm above the carina.",
    "Nasogastric tube courses below the diaphragm with the tip in the stomach.",
    "Enteric tube tip is in the stomach, side port at the GE junction.",
    "{side2} internal jugular central venous catheter tip in the mid SVC.",
    "{side2} PICC line ends in the lower SVC.",
    "Left chest wall pacemaker with leads in the right atrium and right ventricle, unchanged.",
    "Median sternotomy wires and mediastinal clips are intact.",
    "Swan-Ganz catheter tip projects over the right pulmonary artery.",
    "{side2} chest tube is unchanged in position.",
    "Lines and tubes are unchanged in position.",
    "The endotracheal tube has been removed.",
    "Interval removal of the {side} chest tube.",
    "Overlying EKG leads are present.",
]
NORMAL = [
    "The lungs are clear.",
    "Lungs are clear without focal consolidation, pleural effusion, or pneumothorax.",
    "No focal consolidation, pleural effusion or pneumothorax is seen.",
    "There is no pleural effusion or pneumothorax.",
    "Heart size is normal.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Cardiac and mediastinal silhouettes are unremarkable.",
    "Heart size, mediastinal and hilar contours are normal.",
    "The heart is top normal in size.",
    "No acute osseous abnormality.",
    "Pulmonary vasculature is normal.",
    "No evidence of pneumonia.",
    "Costophrenic angles are sharp.",
    "Lung volumes are low.",
]
ABNORMAL = [
    "{size} {side} pleural effusion.",
    "{Size} bilateral pleural effusions with adjacent atelectasis.",
    "There is {degree} pulmonary edema.",
    "{Degree} pulmonary vascular congestion.",
    "{Degree} cardiomegaly is unchanged.",
    "The heart is {adv} enlarged.",
    "Heart size is mildly enlarged but stable.",
    "Opacity at the {base} may represent atelectasis or pneumonia.",
    "Patchy opacity in the {base}, concerning for pneumonia.",
    "{Base_cap} consolidation is new since the prior study.",
    "Bibasilar atelectasis.",
    "Linear atelectasis at the {base}.",
    "Small {side} apical pneumothorax.",
    "No pneumothorax is seen, but there is a {size} {side} effusion.",
    "A {n} mm nodule projects over the {base}.",
    "Calcified granuloma in the {base}.",
    "Old healed {side} rib fractures.",
    "Blunting of the {side} costophrenic angle.",
    "Biapical pleural thickening.",
    "Hyperinflated lungs consistent with emphysema.",
    "The mediastinum is widened.",
    "Interstitial opacities are unchanged.",
    "Previously seen {side} effusion has resolved.",
    "Infection cannot be excluded.",
    "The cardiac silhouette is partially obscured by the effusion.",
    "Moderate hiatal hernia.",
]
IMPRESSION_NORMAL = ["No acute cardiopulmonary process.", "No acute intrathoracic abnormality.",
                     "Normal chest radiograph.", "No evidence of acute disease."]
IMPRESSION_ABN = [
    "{Size} {side} pleural effusion, increased.",
    "{Base_cap} opacity, likely atelectasis, though pneumonia cannot be excluded.",
    "Findings consistent with mild CHF.",
    "Worsening pulmonary edema.",
    "No pneumothorax after chest tube removal.",
    "Tubes and lines in appropriate position.",
    "Possible early {base} pneumonia.",
    "Stable cardiomegaly with small bilateral effusions.",
    "Atelectasis versus pneumonia at the {base}.",
]


def _fill(template: str, rng: random.Random) -> str:
    base = rng.choice(BASE)
    s = template.format(
        n=rng.randint(2, 9), side=rng.choice(SIDE), side2=rng.choice(["Left", "Right"]),
        size=rng.choice(SIZE), Size=rng.choice(SIZE).capitalize(), degree=rng.choice(DEGREE),
        adv=rng.choice(["mildly", "moderately", "severely", "minimally"]),
        Degree=rng.choice(DEGREE).capitalize(), base=base, Base_cap=base[0].upper() + base[1:])
    return s[:1].upper() + s[1:]


def make_report(rng: random.Random) -> str:
    "One FINDINGS + IMPRESSION report in MIMIC-CXR's style."
    normal = rng.random() < 0.35
    findings = []
    if rng.random() < 0.4: findings += [_fill(rng.choice(DEVICES), rng) for _ in range(rng.randint(1, 2))]
    k = rng.randint(4, 8)
    pool = NORMAL if normal else NORMAL + ABNORMAL * 2
    findings += [_fill(rng.choice(pool), rng) for _ in range(k)]
    imp = [_fill(rng.choice(IMPRESSION_NORMAL if normal else IMPRESSION_ABN), rng) for _ in range(rng.randint(1, 3))]
    # MIMIC report files wrap lines mid-sentence; the labeler must not treat a line break as a sentence end
    return ("FINDINGS:\n" + textwrap.fill(" ".join(findings), 72) + "\n\nIMPRESSION:\n" + textwrap.fill(" ".join(imp), 72))


def synthetic_studies(n: int, seed: int) -> list[dict]:
    "Studies planned by cxrgen.data.synthetic (report text and its generator labels), or [] without that module."
    try:
        from cxrgen.data.synthetic import plan_dataset
    except ImportError:
        return []
    return plan_dataset(n, seed=seed, image_size=64) if n > 0 else []


def _section_text(study: dict) -> str:
    "The findings and impression (or the last paragraph) of a synthetic study: the text its labels describe."
    return " ".join(x for x in (study.get("findings", ""), study.get("impression", ""), study.get("last_paragraph", "")) if x)


def _clear_caches(module) -> None:
    "Empty every functools cache of a labeler module (its per-sentence caches), so a timed run starts cold."
    for f in vars(module).values():
        if hasattr(f, "cache_clear"): f.cache_clear()


def best_time(module, reports: list[str], repeat: int) -> float:
    "Best wall time of `module.label_reports(reports)` over `repeat` cold runs."
    times = []
    for _ in range(repeat):
        _clear_caches(module)
        t0 = time.perf_counter()
        module.label_reports(reports)
        times.append(time.perf_counter() - t0)
    return min(times)


def load_labeler(path: str):
    "Another labeler.py as a module of cxrgen.evaluation (its relative imports resolve there)."
    name = "cxrgen.evaluation._compared_labeler"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def compare(path: str, reports: list[str], repeat: int) -> None:
    "Check that the labeler at `path` labels `reports` as this one does, and time both alternately."
    import pandas as pd
    other = load_labeler(path)
    pd.testing.assert_frame_equal(other.label_reports(reports), label_reports(reports))
    best = {"this": float("inf"), "other": float("inf")}
    for _ in range(repeat):
        for k, m in (("other", other), ("this", labeler)):
            best[k] = min(best[k], best_time(m, reports, 1))
    r_this, r_other = len(reports) / best["this"], len(reports) / best["other"]
    print(f"\n--compare {path}: same labels on all {len(reports)} reports; best of {repeat} each, alternating: "
          f"{r_other:,.0f} reports/s there, {r_this:,.0f} here: {r_this / r_other:.2f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="number of reports")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-rate", type=float, default=0.0, help="exit 1 below this many reports/s (target: 2000)")
    ap.add_argument("--compare", default=None, help="another labeler.py to check for the same labels and time against this one")
    a = ap.parse_args(argv)

    core = None
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
    rng = random.Random(a.seed)
    synth = synthetic_studies(a.n // 4, a.seed)
    reports = [s["text"] for s in synth] + [make_report(rng) for _ in range(a.n - len(synth))]  # whole report files
    chars = np.mean([len(r) for r in reports])
    sents = np.mean([r.count(".") for r in reports])

    label_reports(reports[:50])  # warm-up
    best = best_time(labeler, reports, a.repeat)
    labels = label_reports(reports)
    rate = len(reports) / best
    print(f"cxrgen labeler: {len(reports)} reports ({len(synth)} whole files from cxrgen.data.synthetic), "
          f"mean {chars:.0f} chars / ~{sents:.1f} sentences each")
    print(f"one core{f' (cpu {core})' if core is not None else ''}: best of {a.repeat}: {best:.3f} s -> "
          f"{rate:,.0f} reports/s ({1e6 * best / len(reports):.0f} us/report); target >= 2,000 reports/s: "
          f"{'met' if rate >= 2000 else 'NOT met'}")
    print("\nlabel distribution (fraction of reports):")
    print(f"{'observation':28s} {'pos':>6s} {'neg':>6s} {'unc':>6s} {'blank':>6s}")
    for c in CHEXPERT_LABELS:
        v = labels[c]
        print(f"{c:28s} {(v == 1).mean():6.2f} {(v == 0).mean():6.2f} {(v == -1).mean():6.2f} {v.isna().mean():6.2f}")
    if synth:  # how the labeler agrees with the generator's own labels (same section text)
        import pandas as pd
        from cxrgen.evaluation.agreement import label_agreement
        ref = pd.DataFrame([s["labels"] for s in synth])[CHEXPERT_LABELS]
        agree = label_agreement(label_reports([_section_text(s) for s in synth]), ref)
        print(f"\nagreement with cxrgen.data.synthetic's labels on {len(synth)} studies (findings + impression):")
        print(agree.round(3).to_string())
    if a.compare: compare(a.compare, reports, a.repeat)
    return 0 if rate >= a.min_rate else 1


if __name__ == "__main__":
    sys.exit(main())
