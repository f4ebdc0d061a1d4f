"""One stage request, one config, whichever door it comes through (cxrgen.runs.resolve_run).

A stage 1 trained through `nbs/90_train.ipynb` on a filtered CSV *outside* the data folder (`-p csv_file`),
then the same stage-2 request through `cxrgen train`, the training notebook and the demo: the three
resolve it to the identical config, and it trains on stage 1's CSV (before the one resolver, the
notebook stopped with "<mimic_dir>/mimic-cxr-list-filtered.csv not found").

Run: `pytest -q tests/test_runs.py` (CPU, ~1 min on 2 cores: two papermill runs of a few steps).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest

from cxrgen.testing import TINY_MODEL, override_args

ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")  # the papermill kernel imports this checkout
for k in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE"): os.environ.setdefault(k, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# a tiny model and a few steps (the stage-2 run inherits train.max_steps from stage 1)
SMALL = override_args(TINY_MODEL) + ["train.eval_every=2", "train.log_every=1", "train.max_eval_batches=1", "generation.max_new_tokens=8"]


def _papermill(params: dict, rd: Path) -> None:
    import papermill as pm
    rd.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(ROOT / "nbs" / "90_train.ipynb"), str(rd / "90_train.ipynb"), parameters=params,
                        kernel_name="python3", cwd=str(ROOT / "nbs"), progress_bar=False)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> dict:
    "A stage-1 run (papermill) whose filtered CSV lies outside the data folder, named only by `csv_file`."
    from cxrgen.data.mimic import preprocess
    from cxrgen.data.synthetic import generate_dataset
    root = tmp_path_factory.mktemp("runs")
    data, csv = root / "mimic", root / "elsewhere" / "my-filtered.csv"
    generate_dataset(data, n_studies=40, seed=0, image_size=96, num_workers=1, progress=False)
    csv.parent.mkdir()
    preprocess(data, out_csv=csv)
    assert not (data / "mimic-cxr-list-filtered.csv").exists()
    out = root / "demo"
    _papermill({"stage": 1, "preset": "demo", "mimic_dir": str(data), "csv_file": str(csv), "output_dir": str(out),
                "run_name": "stage1", "max_steps": 2, "batch_size": 4, "overrides": SMALL, "n_samples": 2}, out / "stage1")
    return {"data": data, "csv": csv, "out": out}


def _cli_config(argv: list[str]) -> dict:
    "The config `cxrgen train <argv>` would train with (train_stage replaced by a recorder)."
    from cxrgen.cli import main
    got = {}
    with mock.patch("cxrgen.training.stage.train_stage", lambda run, **k: got.update(run=run, **k) or {}):
        assert main(["train", *argv]) == 0
    return got["run"].cfg.to_dict()


def test_stage2_same_config_through_every_door(stage1):
    "CLI, training notebook and demo resolve the demo's stage-2 request to the same config, with stage 1's CSV."
    from cxrgen.demo import DEMO_EPOCHS, demo_request
    from cxrgen.runs import resolve_run
    out = stage1["out"]
    demo = resolve_run(**demo_request(stage1["data"], out, 2)).cfg.to_dict()
    cli = _cli_config(["--stage", "2", "--checkpoint", str(out / "stage1"), "--run_name", "stage2", "--output_dir", str(out),
                       "--set", f"train.max_epochs={DEMO_EPOCHS[2]}"])
    # the notebook trains it (2 steps: max_steps comes from stage 1) and saves the config it trained with
    _papermill({"stage": 2, "init_from": str(out / "stage1"), "output_dir": str(out), "run_name": "stage2",
                "max_epochs": DEMO_EPOCHS[2], "n_samples": 2}, out / "stage2")
    nb = json.loads((out / "stage2" / "config.json").read_text())
    assert nb == cli == demo, {k: (nb[k], cli[k], demo[k]) for k in nb if not nb[k] == cli[k] == demo[k]}
    assert nb["data"]["csv_file"] == str(stage1["csv"]) and nb["train"]["stage"] == 2
    assert nb["data"]["tokenizer"] == str(out / "stage1" / "checkpoints" / "best")
    s = json.loads((out / "stage2" / "summary.json").read_text())
    assert s["stage"] == 2 and s["init_from"] == str(out / "stage1" / "checkpoints" / "best")


def test_stage2_notebook_uses_stage1_csv(stage1, tmp_path):
    "The reported bug: stage 2 through papermill with init_from and no csv_file trains on stage 1's CSV."
    out = stage1["out"]
    _papermill({"stage": 2, "init_from": str(out / "stage1"), "mimic_dir": str(stage1["data"]), "output_dir": str(tmp_path),
                "run_name": "s2", "max_steps": 1, "n_samples": 1}, tmp_path / "s2")
    c = json.loads((tmp_path / "s2" / "config.json").read_text())
    assert c["data"]["csv_file"] == str(stage1["csv"]) and c["data"]["mimic_dir"] == str(stage1["data"])
    assert json.loads((tmp_path / "s2" / "summary.json").read_text())["steps"] == 1
