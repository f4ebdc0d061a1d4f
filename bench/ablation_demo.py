"""Ablation of the findings classifier and the findings prompt on the demo's data and budget.

Each variant trains the demo's two stages (same synthetic data, same epochs, same decoding) for
each training seed, without notebooks, then evaluates on the test split, and the script prints
one row per variant: CheXpert F1 micro-14 and micro-5 (uncertain = positive), BLEU-4, the share
of generated sentences found verbatim in the training reports, distinct reports, the image-only
classifier's F1 (when the model has one) and CPU minutes, as mean and standard deviation over
the seeds, plus per-label F1 means. Runs already finished in `--out` are reused, so an
interrupted ablation continues where it stopped.

    python bench/ablation_demo.py                        # all variants, seeds 42 43 44
    python bench/ablation_demo.py --variants today conditioned --seeds 42

Variants (each a set of config overrides on top of the demo preset):
- today:        the demo before the classifier existed (no classifier, no prompt, no_repeat_ngram_size 3)
- classifier:   + the findings classifier's loss (attention pooling), reports not conditioned on it
- prompt_mixed: + the labels prompt, half the training prompts the classifier's own findings (teacher_forcing 0.5)
- conditioned:  + the labels prompt, training prompts the true labels (model.conditioning=labels)
- findings:     + each present finding's prompt token carries its pooled features and where the classifier looks
- findings_balanced: + the classifier loss weighs rare findings up (model.label_balance=sqrt): the demo preset now
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

VARIANTS = {
    "today": {"model.aux_label_weight": 0.0, "model.conditioning": "none", "model.classifier": "linear",
              "model.label_balance": "none", "generation.no_repeat_ngram_size": 3},
    "classifier": {"model.conditioning": "none", "model.label_balance": "none"},
    "prompt_mixed": {"model.conditioning": "labels", "model.label_balance": "none", "model.teacher_forcing": 0.5},
    "conditioned": {"model.conditioning": "labels", "model.label_balance": "none"},
    "findings": {"model.conditioning": "findings", "model.label_balance": "none"},
    "findings_balanced": {"model.conditioning": "findings", "model.label_balance": "sqrt"},
}
HEADLINE = [("F1-14", "chexpert_f1_micro14_upos"), ("F1-5", "chexpert_f1_micro5_upos"), ("BLEU-4", "bleu_4"),
            ("train sent.", "train_sentence_share"), ("distinct", "distinct_reports")]


def run_one(out: Path, variant: str, seed: int) -> dict:
    "Train stage 1 and 2 of the demo with `variant`'s overrides and `seed`, evaluate on test; returns the summary (cached)."
    from cxrgen.config import apply_overrides
    from cxrgen.core import atomic_write_json, data_cache_dir
    from cxrgen.data.dataloader import prepare_image_cache
    from cxrgen.data.mimic import preprocess
    from cxrgen.data.synthetic import generate_dataset
    from cxrgen.evaluation.evaluate import evaluate_checkpoint
    from cxrgen.demo import DEMO_EPOCHS, DEMO_STUDIES, demo_config
    from cxrgen.training.stage import train_stage
    done = out / "ablation_run.json"
    if done.is_file(): return json.loads(done.read_text())
    data_dir = data_cache_dir() / f"synthetic-demo-{DEMO_STUDIES}-seed0"  # the demo's own data
    generate_dataset(data_dir, n_studies=DEMO_STUDIES, seed=0)  # a no-op when this exact dataset is there
    cfg1 = demo_config(data_dir, out, 1)
    if not (data_dir / cfg1.data.csv_file).exists(): preprocess(data_dir, section=cfg1.data.section, views=cfg1.data.views)
    prepare_image_cache(cfg1, progress=False)
    cpu0, prev = time.process_time(), None
    for stage in (1, 2):
        cfg = apply_overrides(demo_config(data_dir, out, stage),
                              {"train.max_epochs": DEMO_EPOCHS[stage], "train.seed": seed, **VARIANTS[variant]})
        if not (out / f"stage{stage}" / "summary.json").exists(): train_stage(cfg, init_from=prev, overwrite=True)
        prev = str(out / f"stage{stage}")
    res = evaluate_checkpoint(out / "stage2", split="test", output_dir=out / "eval", bertscore=False, n_boot=200)
    row = {"variant": variant, "seed": seed, "cpu_minutes": (time.process_time() - cpu0) / 60,
           "metrics": res["metrics"], "classifier": res.get("classifier", {}).get("metrics", {})}
    atomic_write_json(done, row)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/ablation", help="one folder per variant and seed")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    a = ap.parse_args()
    from cxrgen.config import resolve_path
    from cxrgen.core import CHEXPERT_LABELS
    from cxrgen.evaluation.metrics import label_slug
    root = resolve_path(a.out)
    rows = {v: [run_one(root / f"{v}-s{s}", v, s) for s in a.seeds] for v in a.variants}
    ms = lambda xs: f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"
    print(f"\ndemo test split, seeds {a.seeds} (mean ± sd); CPU minutes of this process (training + evaluation)")
    head = ["variant"] + [h for h, _ in HEADLINE] + ["classifier F1-14", "CPU min"]
    print(" | ".join(head))
    for v, rs in rows.items():
        cells = [v] + [ms([r["metrics"][f"test_{k}"] for r in rs]) for _, k in HEADLINE]
        cls = [r["classifier"].get("test_chexpert_f1_micro14_upos") for r in rs]
        cells += [ms(cls) if all(c is not None for c in cls) else "-", ms([r["cpu_minutes"] for r in rs])]
        print(" | ".join(cells))
    print("\nper-label F1 (uncertain = positive), mean over seeds")
    print(" | ".join(["label"] + list(rows)))
    for lab in CHEXPERT_LABELS:
        k = f"test_chexpert_f1_{label_slug(lab)}_upos"
        print(" | ".join([lab] + [f"{statistics.mean(r['metrics'][k] for r in rs):.3f}" for rs in rows.values()]))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
