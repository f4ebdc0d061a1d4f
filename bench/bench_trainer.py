"""Trainer step time against a bare PyTorch loop (same model, batch, optimizer), in one run.

    python bench/bench_trainer.py                 # CPU: tiny model, 64 px (what `make bench` runs)
    python bench/bench_trainer.py --size demo     # the demo preset model (ResNet-10t 128 px + 2-layer GPT-2)
    python bench/bench_trainer.py --size vit-gpt2 # GPU: ViT-B/16 + GPT-2 (12 x 768) at 224 px, bf16: samples/s and MFU

Both loops do the same work per optimizer step: move the batch to the device, forward under the
same autocast, backward, clip the gradient norm to 1.0, AdamW step, scheduler step, zero_grad.
The trainer adds what a real run needs: the token-count all-reduce, the NaN check (one host sync
a step), per-step reseeding, logging and the progress bar. Blocks of steps alternate between the
two loops and the medians are compared, so a machine that slows down part-way hurts both.
Target: trainer / bare <= 1.10.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from cxrgen.config import apply_overrides, get_preset
from cxrgen.data.dataloader import ReportCollator, ResumableSampler, encode_reports
from cxrgen.data.tokenizer import train_tokenizer
from cxrgen.models.report_generator import ReportGenerator
from cxrgen.models.report_generator import param_groups
from cxrgen.training.trainer import Trainer, build_scheduler, configure_trainable, make_accelerator

TEXTS = ["the heart size is normal. the lungs are clear. no pleural effusion or pneumothorax.",
         "moderate cardiomegaly with a small left pleural effusion. no pneumothorax is seen.",
         "right lower lobe consolidation concerning for pneumonia. no effusion. mediastinal contours are normal.",
         "mild pulmonary edema and bibasilar atelectasis. a right internal jugular line ends in the svc.",
         "small right apical pneumothorax. the cardiomediastinal silhouette is within normal limits."]

SIZES = {
    "tiny": {"model.encoder": "resnet10t", "model.decoder_config": {"model_type": "gpt2", "n_layer": 2, "n_head": 2,
             "n_embd": 64, "n_positions": 160}, "data.image_size": 64, "train.batch_size": 8, "data.max_length": 64},
    "demo": {"train.batch_size": 16},  # the demo preset: ResNet-10t at 128 px + a 2-layer, 256-wide GPT-2
    "vit-gpt2": {"model.encoder": "vit_base_patch16_224", "model.decoder_config": {"model_type": "gpt2", "n_layer": 12,
                 "n_head": 12, "n_embd": 768, "n_positions": 512}, "data.image_size": 224, "data.cache_size": 256, "train.batch_size": 32,
                 "data.max_length": 128, "data.vocab_size": 8000},
}
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def build(size: str, stage: int, precision: str, batch_size: int | None = None):
    over = {**SIZES[size], **({"train.batch_size": batch_size} if batch_size else {})}
    cfg = apply_overrides(get_preset("demo"), {**over, "model.pretrained": False, "train.stage": stage,
                                               "train.precision": precision, "train.log_every": 10**9,
                                               "train.warmup_ratio": 0.0, "train.max_grad_norm": 1.0})
    tok = train_tokenizer(TEXTS * 20, vocab_size=min(cfg.data.vocab_size, 600), min_frequency=1)
    torch.manual_seed(0)
    model = ReportGenerator.from_config(cfg.model, tok, max_length=cfg.data.max_length, image_size=cfg.data.image_size)
    B, T = cfg.train.batch_size, cfg.data.max_length
    ids = encode_reports([(TEXTS[i % len(TEXTS)] + " ") * 4 for i in range(B)], tok, T)  # full-length reports
    g = torch.Generator().manual_seed(0)
    samples = [{"pixel_values": torch.randn(3, cfg.data.image_size, cfg.data.image_size, generator=g),
                "input_ids": torch.tensor(x), "study_id": i, "dicom_id": str(i), "view_position": "PA", "reference": ""}
               for i, x in enumerate(ids)]
    batch = ReportCollator(tok)(samples)
    return cfg, model, batch


def bare_loop(model, batch, cfg, device, steps: int, amp_dtype):
    "The reference: what a hand-written loop does per step."
    t = cfg.train
    configure_trainable(model, t.stage, t.freeze_decoder)
    model.to(device).train()
    opt = torch.optim.AdamW(param_groups(model, t.lr, t.encoder_lr, t.weight_decay), lr=t.lr)
    sched = build_scheduler(opt, 10**6, 0.0)
    keys = ("pixel_values", "input_ids", "attention_mask", "labels")
    def step():
        b = {k: batch[k].to(device, non_blocking=True) for k in keys}
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
    return step


class _Batches(torch.utils.data.Dataset):
    "The same collated batch, `n` times (batch_size=None loader: no re-collation)."
    def __init__(self, batch, n): self.batch, self.n = batch, n
    def __len__(self): return self.n
    def __getitem__(self, i): return self.batch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default=None, choices=list(SIZES), help="model size (default: tiny on CPU, vit-gpt2 on GPU)")
    ap.add_argument("--stage", type=int, default=2, choices=[1, 2], help="1: encoder frozen, 2: everything trains")
    ap.add_argument("--steps", type=int, default=None, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=3, help="alternating timed blocks per loop")
    ap.add_argument("--precision", default="auto", help="train.precision (auto: bf16 on GPU, fp32 on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="train.batch_size (default: the size's own)")
    ap.add_argument("--peak_tflops", type=float, default=None, help="accelerator peak dense TFLOP/s for MFU (default: by GPU name)")
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda: torch.set_num_threads(1)  # shared CPUs: one thread gives steadier timings
    size = a.size or ("vit-gpt2" if cuda else "tiny")
    steps = a.steps or (20 if cuda else 4)
    cfg, model, batch = build(size, a.stage, a.precision, a.batch)
    acc = make_accelerator(cfg.train.precision)
    device = acc.device
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(acc.mixed_precision)
    if amp is torch.float16: raise SystemExit("this benchmark compares bf16/fp32 loops; run with --precision bf16 or no")
    model_bare = copy.deepcopy(model)

    with tempfile.TemporaryDirectory() as d:
        total = 2 + a.blocks * steps + steps
        dl = torch.utils.data.DataLoader(_Batches(batch, total), batch_size=None, sampler=ResumableSampler(total, shuffle=False))
        cfg.train.max_steps = total
        trainer = Trainer(model, cfg, dl, None, output_dir=d, accelerator=acc, metrics_fn=None)
        bare = bare_loop(model_bare, batch, cfg, device, steps, amp)
        sync = torch.cuda.synchronize if cuda else (lambda: None)

        # the trainer's own loop (fit) runs in blocks: we time its per-step `train_seconds` bookkeeping against
        # the wall clock of whole blocks, driving fit's inner loop through train_step on the prepared loader.
        it = iter(trainer.train_dl)
        def trainer_step():
            b = next(it)
            trainer.train_step([b]); trainer.state["global_step"] += 1

        for _ in range(2): bare(); trainer_step()  # warm-up (allocator, cuDNN autotune, lazy init)
        tb, tt = [], []
        for _ in range(a.blocks):
            sync(); t0 = time.perf_counter()
            for _ in range(steps): bare()
            sync(); tb.append((time.perf_counter() - t0) / steps)
            sync(); t0 = time.perf_counter()
            for _ in range(steps): trainer_step()
            sync(); tt.append((time.perf_counter() - t0) / steps)
        bare_s, tr_s = statistics.median(tb), statistics.median(tt)
        # the whole fit() loop (data loader, logging, progress bar) for one more block; its clock excludes the final save
        sync(); t_before = trainer.state["train_seconds"]; n_before = trainer.state["global_step"]
        trainer.fit()
        fit_s = (trainer.state["train_seconds"] - t_before) / (trainer.state["global_step"] - n_before)

    B = cfg.train.batch_size
    print(f"device: {torch.cuda.get_device_name(0) if cuda else 'CPU (' + str(torch.get_num_threads()) + ' threads)'}; "
          f"model: {size} (stage {a.stage}, {acc.mixed_precision}), batch {B} x {cfg.data.max_length} tokens at "
          f"{cfg.data.image_size} px; {a.blocks} blocks x {steps} steps each")
    print(f"bare PyTorch loop : {bare_s * 1e3:8.1f} ms/step  {B / bare_s:8.1f} samples/s")
    print(f"cxrgen Trainer    : {tr_s * 1e3:8.1f} ms/step  {B / tr_s:8.1f} samples/s")
    print(f"Trainer.fit loop  : {fit_s * 1e3:8.1f} ms/step  {B / fit_s:8.1f} samples/s  (one block, with loader, logs, tqdm)")
    ratio = tr_s / bare_s
    print(f"overhead ratio    : {ratio:.3f}x train_step, {fit_s / bare_s:.3f}x fit loop  "
          f"(target <= 1.10x: {'OK' if max(ratio, fit_s / bare_s) <= 1.10 else 'ABOVE TARGET'})")
    try:
        fl = model_bare.summary(text_length=cfg.data.max_length, image_size=cfg.data.image_size)["flops_per_sample"]
        train_flops = 3 * fl if a.stage == 2 else fl + 2 * (fl - _encoder_flops(model_bare, cfg))
        print(f"model FLOPs       : {fl / 1e9:.1f} GFLOP/sample forward, {train_flops / 1e9:.1f} GFLOP/sample per training step")
        if cuda:
            name = torch.cuda.get_device_name(0)
            peak = a.peak_tflops * 1e12 if a.peak_tflops else next((v for k, v in PEAK_BF16.items() if k in name), None)
            for label, s in (("bare", bare_s), ("trainer", tr_s)):
                achieved = train_flops * B / s
                mfu = f"{achieved / peak:.1%} of {peak / 1e12:.0f} TFLOP/s" if peak else "n/a (pass --peak_tflops)"
                print(f"MFU ({label:7s})   : {achieved / 1e12:.1f} TFLOP/s achieved, {mfu}")
    except Exception as e:  # FLOP counting is informative only
        print(f"FLOPs unavailable: {type(e).__name__}: {e}")


def _encoder_flops(model, cfg) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.zeros(1, 3, cfg.data.image_size, cfg.data.image_size, device=next(model.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as fc: model.encoder(x)
    return fc.get_total_flops()


if __name__ == "__main__":
    main()
