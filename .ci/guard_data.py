#!/usr/bin/env python3
"""Fail when git holds (or is about to commit) credentialed data: notebook outputs, or data files outside the allowed places.

MIMIC-CXR's data use agreement forbids sharing it; report text and images leak through notebook outputs
(a library notebook run on the real download) and through files added with `git add -A`.
Checks the git index (what is committed, or staged for the next commit):
  - every notebook under nbs/ has no cell outputs (nbdev_clean keeps outputs: settings.ini clear_all would also
    strip the papermill `parameters` tag, so `--fix` clears outputs and keeps cell metadata);
  - no data file (images, DICOM, CSV/compressed tables, model weights, report texts, MIMIC patient folders)
    is tracked outside ALLOWED.
Usage: python .ci/guard_data.py [--fix]    (make test runs it; .githooks/pre-commit runs it before each commit)
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

# Places where small, non-credentialed data files may be committed (prefixes of repo-relative paths): the README's
# pictures of the synthetic demo, the labeler's development gold on the public IU X-ray reports (report numbers
# and hand labels only, never report text), and the labeler notebook's test cases (sentences the team wrote, no patient data).
ALLOWED = ("nbs/images/", "bench/labeler_gold_iu_even.csv", "nbs/30_evaluation.labeler.cases.tsv")
DATA_EXT = re.compile(r"\.(csv|tsv|gz|zip|tar|tgz|bz2|xz|7z|parquet|feather|h5|hdf5|npy|npz|jpe?g|png|gif|bmp|tiff?|dcm|dicom|"
                      r"nii|safetensors|pt|pth|bin|ckpt|pkl|pickle|txt|jsonl)$", re.I)
MIMIC_PATH = re.compile(r"(^|/)(p1\d/p\d{8}|s\d{8}\.txt$)")  # the MIMIC-CXR patient/study layout


def _git(*args, root: Path) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def problems(root: Path) -> list[str]:
    "What is wrong with the index of the git repository at `root`, one line per file."
    out = []
    for path in _git("ls-files", "-z", root=root).split("\0"):
        if not path: continue
        if path.startswith("nbs/") and path.endswith(".ipynb"):
            try: nb = json.loads(_git("show", f":{path}", root=root))
            except json.JSONDecodeError: out.append(f"{path}: not valid JSON"); continue
            n = [i for i, c in enumerate(nb.get("cells", [])) if c.get("cell_type") == "code" and c.get("outputs")]
            if n: out.append(f"{path}: {len(n)} cell(s) with outputs (cells {', '.join(map(str, n[:5]))}{' ...' if len(n) > 5 else ''})")
        elif path.startswith(ALLOWED): continue
        elif DATA_EXT.search(path) or MIMIC_PATH.search(path):
            out.append(f"{path}: a data file outside the allowed places ({', '.join(ALLOWED)})")
    return out


def clear_outputs(root: Path) -> list[Path]:
    "Clear the outputs of every notebook under nbs/ in the working tree (cell metadata, e.g. papermill tags, kept)."
    done = []
    for p in sorted((root / "nbs").glob("*.ipynb")):
        nb = json.loads(p.read_text(encoding="utf-8"))
        dirty = False
        for c in nb.get("cells", []):
            if c.get("cell_type") == "code" and (c.get("outputs") or c.get("execution_count") is not None):
                c["outputs"], c["execution_count"], dirty = [], None, True
        if dirty:
            p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"); done.append(p)
    return done


def main(argv: list[str]) -> int:
    root = Path(_git("rev-parse", "--show-toplevel", root=Path.cwd()).strip())
    if "--fix" in argv:
        for p in clear_outputs(root): print(f"cleared outputs: {p.relative_to(root)}")
        return 0
    bad = problems(root)
    if bad:
        print("guard_data: git holds what must not be committed (MIMIC-CXR is credentialed data):", file=sys.stderr)
        for b in bad: print(f"  {b}", file=sys.stderr)
        print("Fix: clear notebook outputs (python .ci/guard_data.py --fix, then git add), and untrack data files "
              "(git rm --cached <file>; keep data under data_cache/, outputs/ or mimic/, which git ignores).", file=sys.stderr)
        return 1
    print("guard_data: no notebook outputs, no data files outside " + ", ".join(ALLOWED))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
