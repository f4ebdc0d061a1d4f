"""End-to-end tests of `cxrgen infer single|batch` (cxrgen.inference) on a tiny untrained checkpoint.

Real components only: a demo-preset model saved with save_pretrained, images written as JPEG/PNG and
DICOM (pydicom, MONOCHROME1 and MONOCHROME2), the `cxrgen` console command run in a subprocess.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrgen.core import CHEXPERT_LABELS, CxrgenError

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONIOENCODING": "utf-8"}
SIZE = {"data.image_size": 64, "data.cache_size": 72}


def cxrgen_cmd() -> list[str]:
    "The installed console command next to this interpreter (else `python -m cxrgen.cli`)."
    exe = Path(sys.executable).with_name("cxrgen")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cxrgen.cli"]


def run_cli(*args, check=True, timeout=300) -> subprocess.CompletedProcess:
    p = subprocess.run([*cxrgen_cmd(), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"cxrgen {' '.join(map(str, args))} -> rc {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def write_dicom(path: Path, arr: np.ndarray, photometric: str, view: str = "PA") -> Path:
    "A minimal uncompressed DX DICOM with 12-bit pixels in 16-bit words (as X-ray modalities store them)."
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.PatientID, ds.ViewPosition = "10000032", view
    a = np.ascontiguousarray(arr, dtype=np.uint16)
    ds.Rows, ds.Columns = a.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = a.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def chest_like(h: int, w: int, seed: int) -> np.ndarray:
    "A smooth 12-bit image with structure (two dark lungs in a bright body), plus noise."
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    lungs = np.exp(-(((x - 0.32) / 0.13) ** 2 + ((y - 0.5) / 0.28) ** 2)) + np.exp(-(((x - 0.68) / 0.13) ** 2 + ((y - 0.5) / 0.28) ** 2))
    img = 3000 - 2200 * lungs + rng.normal(0, 60, (h, w))
    return np.clip(img, 0, 4095).astype(np.uint16)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    "A tiny checkpoint and an image folder: JPEG, PNG (8 and 16 bit), DICOM MONOCHROME1/2, a corrupt and a non-image file."
    from cxrgen.testing import make_demo_checkpoint
    root = tmp_path_factory.mktemp("infer")
    ck = make_demo_checkpoint(root / "ck", SIZE)
    imgs = root / "imgs"
    s1, s2 = imgs / "p10/p10000032/s50414267", imgs / "p10/p10000032/s53189527"
    s1.mkdir(parents=True); s2.mkdir(parents=True)
    a8 = (chest_like(96, 80, 0) >> 4).astype(np.uint8)
    Image.fromarray(a8, mode="L").save(s1 / "view1.jpg", quality=92)
    Image.fromarray(a8[::-1], mode="L").save(s1 / "VIEW2.JPEG", quality=92)
    Image.fromarray(np.stack([a8] * 3, -1)).save(s2 / "rgb.png")
    Image.fromarray((chest_like(90, 90, 1) * 16).astype(np.uint16)).save(s2 / "sixteen.PNG")  # 16-bit grayscale
    arr = chest_like(100, 90, 2)
    write_dicom(s2 / "mono2.dcm", arr, "MONOCHROME2")
    write_dicom(s2 / "mono1.DCM", 4095 - arr, "MONOCHROME1")
    (s1 / "corrupt.jpg").write_bytes((s1 / "view1.jpg").read_bytes()[:200])  # truncated JPEG
    (imgs / "readme.dcm").write_text("this is not a DICOM file")                 # non-image with an image extension
    (imgs / "notes.txt").write_text("ignored: not an image extension")
    return {"root": root, "ck": ck, "imgs": imgs,
            "good": sorted(["p10/p10000032/s50414267/view1.jpg", "p10/p10000032/s50414267/VIEW2.JPEG",
                            "p10/p10000032/s53189527/rgb.png", "p10/p10000032/s53189527/sixteen.PNG",
                            "p10/p10000032/s53189527/mono2.dcm", "p10/p10000032/s53189527/mono1.DCM"]),
            "bad": sorted(["p10/p10000032/s50414267/corrupt.jpg", "readme.dcm"])}


@pytest.fixture(scope="module")
def gen(work):
    from cxrgen.inference import load_generator
    import torch
    torch.set_num_threads(1)
    return load_generator(work["ck"], device="cpu")


# ---------------------------------------------------------------- single

def test_single_cli_prints_the_report(work, gen):
    img = work["imgs"] / "p10/p10000032/s53189527/mono2.dcm"
    p = run_cli("infer", "single", "--image", img, "--checkpoint", work["ck"], "--max_new_tokens", 12)
    assert p.stdout.endswith("\n")
    assert p.stdout[:-1] == gen.generate_report(img, max_new_tokens=12)  # same checkpoint, same greedy decoding


def test_single_cli_json(work):
    img = work["imgs"] / "p10/p10000032/s50414267/view1.jpg"
    p = run_cli("infer", "single", "--image", img, "--checkpoint", work["ck"], "--json", "--num_beams", 2, "--max_new_tokens", 8)
    js = json.loads(p.stdout)
    assert isinstance(js["report"], str)
    assert list(js["labels"]) == CHEXPERT_LABELS
    assert all(v in (None, 1.0, 0.0, -1.0) for v in js["labels"].values())
    assert js["decoding"]["num_beams"] == 2 and js["decoding"]["max_new_tokens"] == 8
    assert js["timing"]["generate_s"] > 0 and js["timing"]["total_s"] >= js["timing"]["generate_s"]


def test_single_cli_bad_checkpoint_names_folder_and_fix(work, tmp_path):
    empty = tmp_path / "not_a_checkpoint"; empty.mkdir()
    p = run_cli("infer", "single", "--image", work["imgs"] / "readme.dcm", "--checkpoint", empty, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert str(empty) in p.stderr and "checkpoints/best" in p.stderr


def test_checkpoint_with_mismatched_weights_is_refused(work, tmp_path):
    from cxrgen.inference import load_generator
    from cxrgen.testing import make_demo_checkpoint
    other = make_demo_checkpoint(tmp_path / "other", {**SIZE, "model.mapping": "mlp"})
    broken = tmp_path / "broken"; shutil.copytree(work["ck"], broken)
    shutil.copy(other / "model.safetensors", broken / "model.safetensors")
    with pytest.raises(CxrgenError, match="broken"):
        load_generator(broken, device="cpu")


def test_dicom_monochrome1_is_inverted(work, gen):
    "The same anatomy stored MONOCHROME2 and inverted MONOCHROME1 reaches the model as the same tensor."
    s2 = work["imgs"] / "p10/p10000032/s53189527"
    a, b = gen.preprocess(s2 / "mono2.dcm"), gen.preprocess(s2 / "mono1.DCM")
    assert a.shape == (3, 64, 64)
    assert float((a - b).abs().max()) < 1e-5
    assert float((a - gen.preprocess(Image.fromarray(255 - (chest_like(100, 90, 2) >> 4).astype(np.uint8)))).abs().mean()) > 0.5


# ---------------------------------------------------------------- batch

def test_batch_cli_writes_reports_and_errors(work):
    out = work["root"] / "out_cli"
    p = run_cli("infer", "batch", "--image_dir", work["imgs"], "--output_dir", out, "--checkpoint", work["ck"],
                "--batch_size", 4, "--max_new_tokens", 10)
    rep = pd.read_csv(out / "reports.csv", keep_default_na=False)
    assert sorted(rep["image_path"]) == work["good"]
    assert list(rep.columns) == ["image_path", "report_path", "report", *CHEXPERT_LABELS]
    for r in rep.itertuples():
        txt = out / r.report_path
        assert txt.is_file() and txt.suffix == ".txt" and txt.read_text().rstrip("\n") == r.report
        assert Path(r.report_path).parent.as_posix() == Path(r.image_path).parent.as_posix()  # mirrors the input tree
    err = pd.read_csv(out / "errors.csv")
    assert sorted(err["image_path"]) == work["bad"]
    assert err["reason"].str.len().min() > 5
    assert "truncated" in err.set_index("image_path").loc["p10/p10000032/s50414267/corrupt.jpg", "reason"]
    man = json.loads((out / "cxrgen_infer.json").read_text())
    assert man["status"] == "complete" and man["job"]["decoding"]["max_new_tokens"] == 10
    assert "6 report(s)" in p.stdout


def test_batch_refuses_to_overwrite_another_job(work):
    out = work["root"] / "out_overwrite"
    base = ["infer", "batch", "--image_dir", work["imgs"], "--output_dir", out, "--checkpoint", work["ck"], "--max_new_tokens"]
    run_cli(*base, 6)
    before = (out / "reports.csv").read_bytes()
    p = run_cli(*base, 7, check=False)  # different decoding = a different job
    assert p.returncode == 2 and "--overwrite" in p.stderr and "max_new_tokens" in p.stderr
    assert (out / "reports.csv").read_bytes() == before
    run_cli(*base, 7, "--overwrite")
    assert json.loads((out / "cxrgen_infer.json").read_text())["job"]["decoding"]["max_new_tokens"] == 7



def test_batch_refuses_a_folder_it_did_not_write(work, gen):
    from cxrgen.inference import infer_batch
    foreign = work["root"] / "foreign"; foreign.mkdir(); (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(CxrgenError, match="not written by"):
        infer_batch(work["imgs"], foreign, gen, progress=False, max_new_tokens=4)
    s = infer_batch(work["imgs"], foreign, gen, overwrite=True, progress=False, max_new_tokens=4)
    assert s["n_reports"] == 6 and (foreign / "thesis.tex").read_text() == "keep me"
    s = infer_batch(work["imgs"], foreign, gen, overwrite=True, progress=False, max_new_tokens=5)  # replaces its own output
    assert s["n_skipped"] == 0 and (foreign / "thesis.tex").read_text() == "keep me"


def test_batch_resume_after_max_batches(work, gen):
    from cxrgen.inference import infer_batch, read_progress
    out = work["root"] / "out_partial"
    s = infer_batch(work["imgs"], out, gen, batch_size=2, max_batches=2, progress=False, max_new_tokens=6)
    assert s["status"] == "partial" and s["n_generated"] + s["n_errors"] == 4 and s["n_remaining"] == 4
    first = {k: (out / e["report_path"]).stat().st_mtime_ns for k, e in read_progress(out).items() if e["status"] == "ok"}
    n1 = s["n_generated"]
    assert len(first) == n1 >= 2 and len(pd.read_csv(out / "reports.csv")) == n1
    s = infer_batch(work["imgs"], out, gen, batch_size=2, progress=False, max_new_tokens=6)
    assert s["status"] == "complete" and s["n_skipped"] == n1 and s["n_generated"] == 6 - n1 and s["n_reports"] == 6
    assert {k: (out / read_progress(out)[k]["report_path"]).stat().st_mtime_ns for k in first} == first  # not redone


def test_batch_resume_after_kill(work, tmp_path):
    "SIGKILL a real `cxrgen infer batch` after its first batch, then re-run: finished images are kept, the rest done."
    imgs = tmp_path / "many"; imgs.mkdir()
    src = work["imgs"] / "p10/p10000032/s50414267/view1.jpg"
    for i in range(10): shutil.copy(src, imgs / f"img{i:02d}.jpg")
    out = tmp_path / "out"
    args = ["infer", "batch", "--image_dir", imgs, "--output_dir", out, "--checkpoint", work["ck"],
            "--batch_size", 1, "--max_new_tokens", 60]
    proc = subprocess.Popen([*cxrgen_cmd(), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    log, t0 = out / "progress.jsonl", time.time()
    while not (log.exists() and log.read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.time() - t0 < 240, "no batch finished within 240 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL); proc.communicate()
    done_before = log.read_text().count("\n")
    assert 1 <= done_before < 10, f"the run finished {done_before} images before the kill: make it slower"
    from cxrgen.inference import read_progress
    logged = read_progress(out)
    assert len(logged) == done_before and all(e["status"] == "ok" for e in logged.values())
    kept = {k: (out / e["report_path"]).stat().st_mtime_ns for k, e in logged.items()}
    p = run_cli(*args)
    rep = pd.read_csv(out / "reports.csv")
    assert sorted(rep["image_path"]) == [f"img{i:02d}.jpg" for i in range(10)]
    assert f"{done_before} resumed" in p.stdout
    assert {k: (out / e["report_path"]).stat().st_mtime_ns for k, e in read_progress(out).items() if k in kept} == kept
    assert not list(out.rglob("*.tmp"))  # no half-written files left behind
    assert json.loads((out / "cxrgen_infer.json").read_text())["status"] == "complete"


def test_crafted_names_cannot_escape_output(work, tmp_path, gen):
    from cxrgen.inference import infer_batch
    src = work["imgs"] / "p10/p10000032/s53189527/rgb.png"
    imgs = tmp_path / "in"; (imgs / "sub").mkdir(parents=True); (imgs / "linked").mkdir()
    crafted = ["..\\..\\..\\escape.png", "-rf --overwrite.png", "new\nline.png", "ünï cödé.PNG", "....png", " .png"]
    for n in crafted: shutil.copy(src, imgs / "sub" / n)
    shutil.copy(src, imgs / "linked" / "x.png")
    outside = tmp_path / "outside"; outside.mkdir()
    out = tmp_path / "out"; out.mkdir(); (out / "linked").symlink_to(outside)  # a folder in OUT that points elsewhere
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    s = infer_batch(imgs, out, gen, overwrite=True, progress=False, max_new_tokens=4)
    after = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    assert after == before and not any(outside.iterdir())  # nothing written outside OUT
    rep = pd.read_csv(out / "reports.csv", keep_default_na=False)
    assert sorted(rep["image_path"]) == sorted(f"sub/{n}" for n in crafted)
    assert len(set(rep["report_path"])) == len(crafted)
    for rp in rep["report_path"]:
        p = (out / rp)
        assert p.is_file() and p.resolve().is_relative_to(out.resolve())
        assert all(part not in ("..", ".") and "\\" not in part and "\n" not in part for part in Path(rp).parts)
    err = pd.read_csv(out / "errors.csv")
    assert err["image_path"].tolist() == ["linked/x.png"] and "symlink" in err.loc[0, "reason"]
    assert s["n_reports"] == len(crafted) and s["n_errors"] == 1


def test_study_mode_batch(work, tmp_path):
    from cxrgen.inference import infer_batch, load_generator
    from cxrgen.testing import make_demo_checkpoint
    ck = make_demo_checkpoint(tmp_path / "sck", {**SIZE, "data.study_level": True, "data.max_views": 2})
    sgen = load_generator(ck, device="cpu")
    s = infer_batch(work["imgs"], tmp_path / "out", sgen, progress=False, max_new_tokens=6)
    rep = pd.read_csv(tmp_path / "out/reports.csv", keep_default_na=False)
    assert rep["study_path"].tolist() == ["p10/p10000032/s50414267", "p10/p10000032/s53189527"]
    assert rep["report_path"].tolist() == ["p10/p10000032/s50414267.txt", "p10/p10000032/s53189527.txt"]  # MIMIC reports/ layout
    views = rep["image_paths"].str.split(";")
    assert all(len(v) == 2 for v in views)
    assert views[1][0].endswith(".dcm") or views[1][0].endswith(".DCM")  # DICOM ViewPosition PA sorts first, as in training
    one = sgen.generate_study_report([work["imgs"] / v for v in views[1]], max_new_tokens=6)
    assert rep.loc[1, "report"] == one
    assert s["mode"] == "study" and s["n_reports"] == 2
    import io
    from cxrgen.inference import infer_single
    folder = work["imgs"] / "p10/p10000032/s53189527"  # `cxrgen infer single --image <study folder>`
    assert infer_single(folder, sgen, file=io.StringIO(), max_new_tokens=6) == rep.loc[1, "report"]
