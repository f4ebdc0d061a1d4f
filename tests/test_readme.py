"""The README's papermill commands run as written on a fresh checkout (issue 14, item 11).

They are taken from README.md itself (`mkdir -p ...` and `papermill ...` lines of its sh blocks, `\\` continuations
joined) and run in an empty folder that holds only `nbs/` (a link to this checkout's notebooks) and a synthetic
MIMIC-CXR download at `mimic/`, preprocessed. Two edits make them small: `-p preset default` becomes the CPU
`demo` preset, and a few parameters are appended (2 optimizer steps, a tiny decoder, no bootstrap/BERTScore).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
       "PATH": str(BIN) + os.pathsep + os.environ.get("PATH", ""),
       "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
TINY_TRAIN = ["-p", "max_steps", "2", "-p", "batch_size", "4", "-p", "n_samples", "2", "-y",
              'overrides: ["data.image_size=64", "data.cache_size=64", "data.max_length=48", "data.vocab_size=400", '
              '"train.eval_every=2", "train.max_eval_batches=1", "generation.max_new_tokens=8", '
              '"model.decoder_config={\\"model_type\\": \\"gpt2\\", \\"n_layer\\": 1, \\"n_head\\": 2, \\"n_embd\\": 32, \\"n_positions\\": 64}"]']
TINY_EVAL = ["-p", "bootstrap", "False", "-p", "bertscore", "False", "-p", "baselines", "False", "-p", "max_samples", "4",
             "-p", "n_show", "1"]


def readme_commands() -> list[list[str]]:
    "The `mkdir -p` and `papermill` commands of README.md's sh blocks, as argument lists (comments dropped)."
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            args = shlex.split(line, comments=True)
            if args[:1] == ["papermill"] or args[:2] == ["mkdir", "-p"]: cmds.append(args)
    return cmds


def test_readme_has_the_commands():
    cmds = readme_commands()
    runs = [c for c in cmds if c[0] == "papermill" and "--help-notebook" not in c]
    assert len(runs) >= 3, cmds  # stage 1, stage 2, evaluation
    for c in runs:  # each output notebook's folder is created by an earlier README command
        folder = str(Path(c[2]).parent)
        assert any(m[:2] == ["mkdir", "-p"] and folder in m[2:] for m in cmds[: cmds.index(c)]) or folder in (".", ""), c


def test_readme_papermill_commands_run_as_written(tmp_path):
    from cxrgen.data.mimic import preprocess
    from cxrgen.data.synthetic import generate_dataset
    before = (ROOT / "outputs" / "vit-gpt2-s1").exists()
    (tmp_path / "nbs").symlink_to(ROOT / "nbs", target_is_directory=True)
    generate_dataset(tmp_path / "mimic", n_studies=40, seed=0, image_size=96, num_workers=1, progress=False)
    preprocess(tmp_path / "mimic", verbose=False)
    for args in readme_commands():
        if args[0] == "papermill" and "--help-notebook" not in args:
            args = [("demo" if a == "default" and args[i - 1] == "preset" else a) for i, a in enumerate(args)]
            args += TINY_TRAIN if "90_train.ipynb" in args[1] else TINY_EVAL
        p = subprocess.run(args, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, (args, p.stdout[-2000:], p.stderr[-4000:])
    for f in ("outputs/vit-gpt2-s1/90_train.ipynb", "outputs/vit-gpt2-s1/checkpoints/best/model.safetensors",
              "outputs/vit-gpt2-s2/90_train.ipynb", "outputs/vit-gpt2-s2/summary.json",
              "outputs/vit-gpt2-s2/91_evaluate.ipynb", "outputs/vit-gpt2-s2/metrics_test.json"):
        assert (tmp_path / f).exists(), f
    assert (ROOT / "outputs" / "vit-gpt2-s1").exists() == before  # relative paths resolved in the fresh folder, not this checkout
