"""What the encoder knows about a finding's attributes against what the generated reports say.

Issue 15's distinct-reports gap, located: for findings whose sides, sizes and lobes the synthetic
generator records (effusion side and size, heart size, edema severity, consolidation lobe), a
linear probe (logistic regression) on a trained model's flattened patch tokens learns the
attribute on the training and validation images and predicts it on the test images; the
generated reports (`reports_test.csv` of `cxrgen eval`) are read for the same attribute on the
same test studies. A probe far above the reports means the decoder, not the encoder, loses the
attribute. For a model whose prompt carries each finding's place (`model.conditioning=findings`),
it also prints where the classifier's effusion attention sits on frontal images of each side (the
centre x and spread that the prompt receives) against the sides the generated reports name.
Synthetic data only: the truth is the generator's own record of each study.

    python bench/probe_attributes.py --run outputs/demo
"""
import argparse
import json
import re

import numpy as np
import pandas as pd
import torch
from PIL import Image

# (kind in the generator's record, attribute, how a report names the finding)
ATTRIBUTES = [("effusion", "side", r"effusion"), ("effusion", "size", r"effusion"),
              ("cardiomegaly", "size", r"enlarge|cardiomegaly"), ("edema", "size", r"edema"),
              ("consolidation", "lobe", r"consolidation|opacity|pneumonia")]


def truth(study: dict, kind: str, key: str):
    "The attribute of the study's (certain) finding of this kind, or None."
    found = [f for f in study["findings_list"] if f["kind"] == kind and f["certainty"] > 0]
    return found[0][key] if found else None


def report_says(report: str, pattern: str, value: str) -> bool | None:
    "Whether the report's sentences that name the finding (not negated) name `value`; None when none names it."
    sents = [s for s in re.split(r"(?<=\.)\s+", report.lower()) if re.search(pattern, s) and not re.search(r"\bno\b", s)]
    if not sents: return None
    return any(re.search(r"\b" + re.escape(value.lower()), s) for s in sents)  # "mild" also finds "mildly"


def patch_tokens(model, paths: list, transform, batch: int = 64) -> np.ndarray:
    "Encoder patch tokens (n, N, C) of the cached images."
    out = []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            x = torch.stack([transform(Image.open(p).convert("L")) for p in paths[i:i + batch]])
            out.append(model.encode_images(x).float().numpy())
    return np.concatenate(out)


SIDES = ("left", "right", "bilateral")


def effusion_place(model, tokens: np.ndarray, df: pd.DataFrame, reports: pd.DataFrame) -> None:
    "Per true effusion side: the effusion attention's centre x and spread on frontal images (what the prompt gets), and the sides the test reports name."
    from cxrgen.core import CHEXPERT_LABELS
    k = CHEXPERT_LABELS.index("Pleural Effusion")
    d = df[df.view_position.isin(["PA", "AP"])]
    with torch.no_grad():  # one image at a time, as a one-view study: x in [-1, 1] from the image's left edge to its right
        geo = model.finding_features(torch.from_numpy(tokens[d.index.to_numpy()]))[:, k, -4:].numpy()
    d = d.assign(cx=geo[:, 0], sx=geo[:, 2])
    test = d[d.split == "test"].drop_duplicates("study_id")
    print("\neffusion side | images | attention centre x | spread x | test reports naming: " + ", ".join(SIDES) + ", no side")
    for side, g in d.groupby("y"):
        named = [[w for w in SIDES if report_says(reports.generated[s], "effusion", w)] for s in test.study_id[test.y == side]
                 if s in reports.index and report_says(reports.generated[s], "effusion", "") is not None]
        counts = [sum(w in n for n in named) for w in SIDES] + [sum(not n for n in named)]
        print(f"{side} | {len(g)} | {g.cx.mean():+.2f} ± {g.cx.std():.2f} | {g.sx.mean():.2f} | " + ", ".join(map(str, counts)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="outputs/demo", help="a demo output folder: stage2/ and eval/reports_test.csv")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from sklearn.linear_model import LogisticRegression

    from cxrgen.checkpoints import checkpoint_run_config, find_checkpoint, load_model
    from cxrgen.config import csv_path, resolve_path
    from cxrgen.data.dataloader import build_transforms, cached_image_path, image_cache_dir
    from cxrgen.data.synthetic import INFO_FILE, plan_dataset
    run = resolve_path(a.run)
    ckpt = find_checkpoint(run / "stage2")
    cfg = checkpoint_run_config(ckpt)
    model = load_model(ckpt).eval()
    data = resolve_path(cfg.data.mimic_dir)
    info = json.loads((data / INFO_FILE).read_text())
    plan = {s["study_id"]: s for s in plan_dataset(info["n_studies"], info["seed"], info["image_size"])}
    df = pd.read_csv(csv_path(cfg))
    cache = image_cache_dir(resolve_path(cfg.data.cache_dir), data)
    df["cached"] = [cached_image_path(cache, cfg.data.cache_size, p) for p in df.image_path]
    reports = pd.read_csv(run / "eval" / "reports_test.csv").drop_duplicates("study_id").set_index("study_id")
    transform = build_transforms(cfg.data.image_size, train=False, **model.input_norm)  # as evaluation
    print(f"{ckpt}: linear probe on the patch tokens (fit on train + validate images, scored on test images) "
          "against the generated test reports")
    tokens = patch_tokens(model, df.cached.tolist(), transform)  # once for every image; rows aligned with df
    X = tokens.reshape(len(tokens), -1)
    print("finding, attribute | probe accuracy (test images) | majority class | reports right / reports naming the finding")
    side = None
    for kind, key, pattern in ATTRIBUTES:
        d = df.assign(y=[truth(plan[s], kind, key) for s in df.study_id]).dropna(subset=["y"])
        fit, test = d[d.split != "test"], d[d.split == "test"]
        probe = LogisticRegression(max_iter=2000, C=0.05).fit(X[fit.index], fit.y)
        acc = probe.score(X[test.index], test.y)
        said = [report_says(reports.generated[s], pattern, v) for s, v in zip(test.study_id, test.y) if s in reports.index]
        said = [x for x in said if x is not None]
        print(f"{kind}, {key} | {acc:.2f} (n={len(test)}) | {test.y.value_counts(normalize=True).iloc[0]:.2f} | "
              f"{sum(said)} / {len(said)}")
        if (kind, key) == ("effusion", "side") and getattr(model.findings_prompt, "features", None) is not None:
            side = d
    if side is not None: effusion_place(model, tokens, side, reports)


if __name__ == "__main__":
    main()
