"""Faults at the edges, run as a user meets them: the `cxrgen` command in a subprocess (or `cli.main` in-process
where a fault has to be injected), one line and exit status 2 for every expected failure, never a traceback.

Full disk / read-only: a real tmpfs when this machine lets us mount one (root in a container usually can), else
`cxrgen.inference.atomic_write_text` patched to raise the `OSError` the kernel raises (ENOSPC / EROFS / EACCES).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CXRGEN = shutil.which("cxrgen") or str(Path(sys.executable).with_name("cxrgen"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
       "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run(*args, cwd=None, timeout=600):
    return subprocess.run([CXRGEN, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout)


def one_line_error(r, *says):
    "Exit status 2, no traceback, and the last stderr line says each of `says`."
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    line = r.stderr.strip().splitlines()[-1]
    for s in says: assert s in line, (s, line)
    return line


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    "A tiny dataset and an untrained checkpoint (outputs/smoke/checkpoints/best) with its run config."
    from cxrgen.testing import smoke_checkpoint
    d = tmp_path_factory.mktemp("smoke")
    ckpt, cfg = smoke_checkpoint(d)
    return d, ckpt, cfg


@pytest.fixture(scope="module")
def trained(smoke, tmp_path_factory):
    "A run folder trained 2 steps by `cxrgen train` (checkpoints/best and checkpoints/last)."
    d, ckpt, _ = smoke
    out = tmp_path_factory.mktemp("runs")
    r = run("train", "--config_file", ckpt.parent.parent / "config.json", "--run_name", "t1", "--output_dir", out,
            "--set", "train.max_steps=2", "--set", "train.eval_every=1", "--set", "train.max_eval_batches=1",
            "--set", "train.select_metric=val_loss")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "t1" / "checkpoints" / "last" / "optimizer.safetensors").is_file()
    return out / "t1"


def _damage(path: Path, how: str):
    if how == "truncate": path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    elif how == "garbage": path.write_text("{not json")


# ---- item 2: a damaged checkpoint gets one line naming the file in eval, train --stage 2 and --resume -------------------
@pytest.mark.parametrize("door,ckpt,file,how,says", [
    ("eval", "best", "model.safetensors", "truncate", "model.safetensors is truncated"),
    ("eval", "best", "config.json", "garbage", "config.json is not valid JSON"),
    ("stage2", "best", "model.safetensors", "truncate", "model.safetensors is truncated"),
    ("stage2", "best", "run_config.json", "garbage", "run_config.json is not valid JSON"),
    ("resume", "last", "trainer_state.json", "garbage", "trainer_state.json is not valid JSON"),
    ("resume", "last", "model.safetensors", "truncate", "model.safetensors is truncated"),
    ("resume", "last", "optimizer.safetensors", "truncate", "optimizer.safetensors is truncated"),
])
def test_damaged_checkpoint(trained, tmp_path, door, ckpt, file, how, says):
    run_dir = tmp_path / "t1"
    shutil.copytree(trained, run_dir)
    _damage(run_dir / "checkpoints" / ckpt / file, how)
    if door == "eval": r = run("eval", "--checkpoint", run_dir, "--no_bootstrap", "--no_bertscore", "--output_dir", tmp_path / "ev")
    elif door == "stage2": r = run("train", "--stage", "2", "--checkpoint", run_dir, "--output_dir", tmp_path, "--run_name", "s2")
    else: r = run("train", "--resume", "--run_name", "t1", "--output_dir", tmp_path)
    line = one_line_error(r, says, f"checkpoints/{ckpt}/{file}")
    assert "instead" in line or "re-run" in line, line  # and what to do


# ---- item 3: a corrupt run_config.json is named, not silently replaced by default decoding -----------------------------
def test_corrupt_run_config_is_named(smoke, tmp_path):
    d, ckpt, _ = smoke
    ck = tmp_path / "ck"
    shutil.copytree(ckpt, ck)
    (ck / "run_config.json").write_text('{"data": {"image_size": 6')
    img = next((d / "data" / "images").rglob("*.jpg"))
    one_line_error(run("infer", "single", "--image", img, "--checkpoint", ck), "run_config.json is not valid JSON")


# ---- item 4: numbers are checked at once ------------------------------------------------------------------------------
@pytest.mark.parametrize("args,says", [
    (["eval", "--max_samples", "0"], "argument --max_samples: 0 is out of range: must be >= 1"),
    (["eval", "--max_samples", "-3"], "argument --max_samples: -3 is out of range: must be >= 1"),
    (["preprocess", "--mimic_dir", "x", "--cache_size", "-5"], "argument --cache_size: -5 is out of range: must be >= 0"),
    (["infer", "batch", "--image_dir", "a", "--output_dir", "b", "--checkpoint", "c", "--batch_size", "0"], "argument --batch_size"),
    (["synth", "--n_studies", "0"], "argument --n_studies"),
])
def test_cli_numbers(args, says):
    if args[0] == "eval": args = [*args, "--checkpoint", "nowhere"]
    r = run(*args)
    assert r.returncode == 2 and says in r.stderr, r.stderr


@pytest.mark.parametrize("setting,says", [("data.max_train_samples=-1", "data.max_train_samples=-1: must be >= 1"),
                                          ("train.max_eval_batches=-1", "train.max_eval_batches=-1: must be >= 1")])
def test_config_numbers(setting, says, tmp_path):
    r = run("train", "--config_file", "demo", "--set", setting, "--output_dir", tmp_path)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not any(tmp_path.iterdir())  # refused before any work


# ---- item 5: a read-only output folder / a full disk in infer batch -----------------------------------------------------
def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try: return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0
    except (FileNotFoundError, PermissionError): return False


def test_infer_batch_full_disk_and_read_only_real_fs(smoke, tmp_path):
    d, ckpt, _ = smoke
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "64k"): pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN): see the patched test")
    try:
        try:  # fill the disk
            with open(mnt / "filler", "wb") as f:
                while True: f.write(b"\0" * 4096); f.flush()
        except OSError as e: assert e.errno == errno.ENOSPC
        line = one_line_error(run("infer", "batch", "--image_dir", d / "data" / "images", "--output_dir", mnt / "out",
                                  "--checkpoint", ckpt), "the disk is full")
        (mnt / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        one_line_error(run("infer", "batch", "--image_dir", d / "data" / "images", "--output_dir", mnt / "out2",
                           "--checkpoint", ckpt), "read-only", "out2")
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@pytest.mark.parametrize("err,says,not_says", [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full", None),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied", "free space"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only", "free space"),
])
def test_infer_batch_write_errors_patched(smoke, tmp_path, monkeypatch, capsys, err, says, not_says):
    "The writer of reports and CSVs raises what the kernel raises; the CLI prints one line, exit 2."
    import cxrgen.inference as inf
    from cxrgen.cli import main
    d, ckpt, _ = smoke
    def failing(path, text):
        err.filename = str(path); raise err
    monkeypatch.setattr(inf, "atomic_write_text", failing)
    rc = main(["infer", "batch", "--image_dir", str(d / "data" / "images"), "--output_dir", str(tmp_path / "o"),
               "--checkpoint", str(ckpt)])
    e = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in e, e
    line = e.strip().splitlines()[-1]
    assert line.startswith("cxrgen infer batch: error: ") and says in line and str(tmp_path / "o") in line, line
    if not_says: assert not_says not in line, line


# ---- item 8: --run_name cannot leave --output_dir ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../..", "..", "a/../../b", "/etc"])
def test_run_name_stays_inside_output_dir(tmp_path, name):
    out = tmp_path / "a" / "b"
    out.mkdir(parents=True)
    r = run("train", "--config_file", "demo", "--run_name", name, "--output_dir", out)
    one_line_error(r, "run_name=", "must be one folder name")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b"]


# ---- item 10: the data guard -------------------------------------------------------------------------------------------
def _repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / ".ci").mkdir(parents=True); (r / "nbs" / "images").mkdir(parents=True); (r / ".githooks").mkdir()
    shutil.copy(ROOT / ".ci" / "guard_data.py", r / ".ci"); shutil.copy(ROOT / ".githooks" / "pre-commit", r / ".githooks")
    for c in (["init", "-q"], ["config", "user.email", "t@t"], ["config", "user.name", "t"]): subprocess.run(["git", *c], cwd=r, check=True)
    return r


def _nb(outputs: list) -> str:
    return json.dumps({"cells": [{"cell_type": "code", "id": "a", "metadata": {"tags": ["parameters"]}, "execution_count": None,
                                  "source": ["print('x')"], "outputs": outputs}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def test_guard_refuses_outputs_and_data(tmp_path):
    r = _repo(tmp_path)
    guard = [sys.executable, ".ci/guard_data.py"]
    (r / "nbs" / "80_explore_data.ipynb").write_text(_nb([{"output_type": "stream", "name": "stdout", "text": ["FINDINGS: ..."]}]))
    (r / "mimic" / "p10" / "p10000032").mkdir(parents=True)
    (r / "mimic" / "p10" / "p10000032" / "s50414267.txt").write_text("FINAL REPORT")
    (r / "notes.csv").write_text("a,b\n")
    (r / "nbs" / "images" / "demo.png").write_bytes(b"\x89PNG")  # allowed
    subprocess.run(["git", "add", "-A", "-f"], cwd=r, check=True)
    p = subprocess.run(guard, cwd=r, capture_output=True, text=True)
    assert p.returncode == 1, p.stderr
    for s in ("nbs/80_explore_data.ipynb: 1 cell(s) with outputs", "mimic/p10/p10000032/s50414267.txt", "notes.csv: a data file"):
        assert s in p.stderr, (s, p.stderr)
    assert "demo.png" not in p.stderr
    # the hook refuses the commit; --fix clears outputs and keeps the papermill tag
    subprocess.run(["git", "config", "core.hooksPath", ".githooks"], cwd=r, check=True)
    c = subprocess.run(["git", "commit", "-qm", "x"], cwd=r, capture_output=True, text=True)
    assert c.returncode != 0 and "guard_data" in c.stderr, c.stderr
    subprocess.run([*guard, "--fix"], cwd=r, check=True, capture_output=True)
    nb = json.loads((r / "nbs" / "80_explore_data.ipynb").read_text())
    assert nb["cells"][0]["outputs"] == [] and nb["cells"][0]["metadata"] == {"tags": ["parameters"]}
    subprocess.run(["git", "rm", "-q", "-r", "--cached", "mimic", "notes.csv"], cwd=r, check=True)
    subprocess.run(["git", "add", "nbs"], cwd=r, check=True)
    c = subprocess.run(["git", "commit", "-qm", "x"], cwd=r, capture_output=True, text=True)
    assert c.returncode == 0, c.stderr


def test_this_repo_is_clean_and_ignores_the_data_root():
    p = subprocess.run([sys.executable, ".ci/guard_data.py"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for path in ("mimic/images/p10/p10000032/s50414267/x.jpg", "mimic/cxr-record-list.csv.gz", "physionet.org/files/x.csv.gz"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, f"{path} is not ignored"
    ini = (ROOT / "settings.ini").read_text()
    assert "allowed_cell_metadata_keys = tags" in ini  # clear_all = True would drop papermill's `parameters` tag


# ---- further: a closed pipe (`| head`) is not an error --------------------------------------------------------------------
def test_broken_pipe_is_quiet(smoke):
    d, ckpt, _ = smoke
    img = next((d / "data" / "images").rglob("*.jpg"))
    p = subprocess.Popen([CXRGEN, "infer", "single", "--image", str(img), "--checkpoint", str(ckpt), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    p.stdout.close()  # the reader goes away before the report is printed
    err = p.stderr.read().decode(); p.wait(timeout=300)
    assert p.returncode == 141 and "Traceback" not in err and "error" not in err.lower(), (p.returncode, err[-2000:])


# ---- item 9: the no-cache hint names a command that exists --------------------------------------------------------------
def test_no_cache_hint_names_a_real_command(smoke, tmp_path):
    import logging
    from cxrgen.data.dataloader import build_dataloaders
    from cxrgen.data.tokenizer import load_tokenizer
    from cxrgen.cli import build_parser
    _, _, cfg = smoke
    cfg = cfg.copy(); cfg.data.cache_dir = str(tmp_path / "no_cache")
    msgs = []
    h = logging.Handler(); h.emit = lambda r: msgs.append(r.getMessage())
    logging.getLogger("cxrgen").addHandler(h)
    try: build_dataloaders(cfg, load_tokenizer(cfg.data.tokenizer), splits=("test",))
    finally: logging.getLogger("cxrgen").removeHandler(h)
    hint = [m for m in msgs if "no image cache" in m]
    assert hint and "`cxrgen preprocess --mimic_dir" in hint[0], msgs
    assert "preprocess" in build_parser()._subparsers._group_actions[0].choices  # ... and that command exists


# ---- item 12: a papermill stage shows its progress in the terminal ------------------------------------------------------
def test_run_notebook_prints_stage_progress(smoke, tmp_path, capsys):
    from cxrgen.demo import run_notebook
    d, _, cfg = smoke
    run_notebook("90_train.ipynb", tmp_path / "s1", {
        "stage": 1, "preset": "demo", "mimic_dir": cfg.data.mimic_dir, "output_dir": str(tmp_path), "run_name": "s1",
        "max_steps": 3, "batch_size": 4, "n_samples": 1,
        "overrides": ["data.image_size=64", "data.cache_size=64", "data.max_length=48", "data.vocab_size=300", "data.num_workers=0",
                      "train.eval_every=3", "train.max_eval_batches=1", "train.log_every=1", "generation.max_new_tokens=4"]})
    err = capsys.readouterr().err
    final = [l for l in err.splitlines() if l.startswith("s1: step")]
    assert final and final[-1].startswith("s1: step 3/3 (100%), loss ") and "elapsed" in final[-1], err[-2000:]


def test_evaluate_notebook_run_name_stays_inside_outputs(tmp_path):
    "The evaluation notebook's run_name is checked like the CLI's (it used to write to outputs/../..)."
    import papermill as pm
    with pytest.raises(pm.PapermillExecutionError, match="must be one folder name"):
        pm.execute_notebook(str(ROOT / "nbs" / "91_evaluate.ipynb"), str(tmp_path / "91.ipynb"), parameters={"run_name": "../.."},
                            kernel_name="python3", cwd=str(ROOT / "nbs"), progress_bar=False)
