"""The installed `cxrgen` command, run as a user runs it: a subprocess per call."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

CXRGEN = shutil.which("cxrgen") or str(Path(sys.executable).with_name("cxrgen"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "OMP_NUM_THREADS": "1"}


def run(*args, cwd=None):
    return subprocess.run([CXRGEN, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=600)


@pytest.mark.parametrize("sub", [[], ["synth"], ["preprocess"], ["train"], ["eval"], ["infer"], ["infer", "single"],
                                 ["infer", "batch"], ["demo"]])
def test_help(sub):
    r = run(*sub, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: cxrgen"), r.stdout


def test_seed_flag_names_kept():
    assert "--config_file" in run("train", "--help").stdout and "--csv_file" in run("train", "--help").stdout
    assert "--checkpoint" in run("eval", "--help").stdout
    h = run("infer", "batch", "--help").stdout
    assert all(f in h for f in ("--image_dir", "--output_dir", "--checkpoint"))


def test_bad_config_value_names_the_field():
    r = run("train", "--config_file", "demo", "--set", "train.stage=3", "--set", "train.lr=-1")
    assert r.returncode == 2
    assert "train.stage=3" in r.stderr and "train.lr=-1" in r.stderr, r.stderr
    r = run("train", "--config_file", "demo", "--set", "model.encoderr=vit")
    assert r.returncode == 2 and "model.encoderr" in r.stderr


def test_missing_config_file_and_checkpoint(tmp_path):
    r = run("train", "--config_file", tmp_path / "nope.json")
    assert r.returncode == 2 and "nope.json" in r.stderr
    r = run("eval", "--checkpoint", tmp_path / "no_such_run")
    assert r.returncode == 2 and "no_such_run" in r.stderr, r.stderr


def test_synth_then_preprocess(tmp_path):
    data = tmp_path / "mimic"
    r = run("synth", "--out", data, "--n_studies", 40, "--seed", 3, "--image_size", 256, "--num_workers", 1)
    assert r.returncode == 0, r.stderr
    for f in ("cxr-record-list.csv.gz", "cxr-study-list.csv.gz", "mimic-cxr-2.0.0-metadata.csv.gz",
              "mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-chexpert.csv.gz"):
        assert (data / f).is_file(), f
    r = run("preprocess", "--mimic_dir", data, "--cache_dir", tmp_path / "cache", "--cache_size", 64,
            "--minimal", 2, "--num_workers", 1)
    assert r.returncode == 0, r.stderr
    # the synthetic label file holds what the CheXpert conventions read in the impression: full agreement
    assert "cxrgen labeler vs mimic-cxr-2.0.0-chexpert.csv.gz on" in r.stdout and "mentions an observation 1.000" in r.stdout, r.stdout
    df = pd.read_csv(data / "mimic-cxr-list-filtered.csv")
    assert len(df) > 0 and set(df["view_position"]) <= {"PA", "AP"}
    assert (data / "mimic-cxr-list-minimal.csv").is_file()
    cached = list((tmp_path / "cache").rglob("*.jpg"))
    assert len(cached) == len(df), (len(cached), len(df))
    # a second run resumes: nothing left to build
    r = run("preprocess", "--mimic_dir", data, "--cache_dir", tmp_path / "cache", "--cache_size", 64, "--num_workers", 1)
    assert r.returncode == 0 and "0 to build" in (r.stdout + r.stderr), r.stdout + r.stderr
    # every view, lateral included; the minimal CSV follows the new filtered CSV
    r = run("preprocess", "--mimic_dir", data, "--views", "all", "--cache_size", 0)
    assert r.returncode == 0, r.stderr
    all_views = pd.read_csv(data / "mimic-cxr-list-filtered.csv", keep_default_na=False)
    assert "LATERAL" in set(all_views["view_position"]) and len(all_views) > len(df)
    mini = pd.read_csv(data / "mimic-cxr-list-minimal.csv")
    assert set(mini["dicom_id"]) <= set(all_views["dicom_id"]) and "LATERAL" in set(mini["view_position"])
    r = run("preprocess", "--mimic_dir", data, "--minimal", -1, "--cache_size", 0)
    assert r.returncode == 2 and "argument --minimal: -1 is out of range: must be >= 1" in r.stderr, r.stderr


def test_preprocess_explains_an_unrenamed_download(tmp_path):
    (tmp_path / "files" / "p10" / "p10000032").mkdir(parents=True)
    r = run("preprocess", "--mimic_dir", tmp_path)
    assert r.returncode == 2
    assert "files/" in r.stderr and "images" in r.stderr, r.stderr


def test_eval_on_a_tiny_checkpoint(tmp_path):
    from cxrgen.testing import smoke_checkpoint
    ckpt, _ = smoke_checkpoint(tmp_path / "run")
    r = run("eval", "--checkpoint", ckpt, "--split", "test", "--output_dir", tmp_path / "eval", "--no_bootstrap")
    assert r.returncode == 0, r.stderr
    assert "most frequent training report" in r.stdout and "CheXpert F1 micro14" in r.stdout, r.stdout
    assert (tmp_path / "eval" / "metrics_test.json").is_file() and (tmp_path / "eval" / "reports_test.csv").is_file()
