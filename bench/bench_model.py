"""ReportGenerator throughput: training step and beam-search generation, against plain HF generate, in one run.

    python bench/bench_model.py [--device cpu|cuda|auto] [--threads N] [--batch 16] [--gen-batch 4]

CPU (always): the demo-size model (cxrgen.config.get_preset('demo').model: ResNet-10t at 128 px, linear
mapping, 2-layer GPT-2 of width 256 built from its decoder_config) with a byte-level BPE tokenizer of
~1000 tokens trained on template reports. CUDA (when available and --device allows): ViT-B/16 at
224 px + a GPT-2-small-sized decoder (12 layers, width 768), random init from configs (no download), bf16 autocast.

Timings are the best of a few repetitions, ours and plain interleaved. For each it prints
  (a) forward+backward samples/s (teacher-forced, reports of `max_length` tokens),
  (b) generation reports/s with beam 3 and exactly 100 new tokens (min_new_tokens = max_new_tokens = 100)
      through ReportGenerator.generate,
  (c) the same generation as a plain `decoder.generate(inputs_embeds=[prefix | <s>], attention_mask=...)`
      call on the same decoder (image encoding included in both), and the ratio b/c;
it also checks that greedy and beam outputs of (b) and (c) are identical.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from cxrgen.config import ModelConfig, get_preset
from cxrgen.data.tokenizer import train_tokenizer
from cxrgen.models.report_generator import ReportGenerator

SIDES = ["left", "right", "bilateral", "bibasilar"]
ZONES = ["upper lobe", "lower lobe", "middle lobe", "lingula", "apex", "base", "hilum", "costophrenic angle", "perihilar region"]
SEVERITY = ["minimal", "mild", "moderate", "severe", "small", "large", "trace", "subtle", "patchy", "focal"]
FINDING = ["opacity", "consolidation", "atelectasis", "pleural effusion", "pneumothorax", "nodule", "scarring",
           "interstitial edema", "airspace disease", "calcified granuloma", "fracture", "emphysema"]
CHANGE = ["unchanged from the prior study", "new since the prior radiograph", "slightly improved", "worsened",
          "stable compared with {d}", "increased since {d}", "decreased in size"]
DEVICES = ["an endotracheal tube terminates {n} cm above the carina", "a nasogastric tube courses below the diaphragm",
           "a right internal jugular catheter ends in the mid svc", "sternotomy wires are intact",
           "a left-sided pacemaker has leads in the right atrium and ventricle"]
NORMAL = ["the lungs are clear", "there is no focal consolidation", "no pleural effusion or pneumothorax is seen",
          "the cardiomediastinal silhouette is within normal limits", "the heart size is top normal",
          "hilar contours are unremarkable", "no acute osseous abnormality", "the aorta is tortuous"]
EXTRA = ["degenerative changes of the thoracic spine", "healed posterior rib fractures", "elevation of the hemidiaphragm",
         "mediastinal widening is likely due to patient rotation", "calcification of the aortic knob",
         "vascular engorgement suggests fluid overload", "biapical pleural thickening", "subcutaneous emphysema",
         "dextroscoliosis", "kyphosis", "cholecystectomy clips in the right upper quadrant", "hyperinflated lungs",
         "lobulated contour of the pulmonary arteries", "blunting of the posterior sulcus on the lateral view",
         "compared with the radiograph from yesterday", "recommend ct for further characterization",
         "findings were communicated to the referring physician by telephone", "portable semi-upright technique"]


def sentence(rng) -> str:
    r = rng.random()
    if r < 0.35: return rng.choice(NORMAL)
    if r < 0.45: return rng.choice(DEVICES).format(n=rng.randint(2, 7))
    if r < 0.6: return rng.choice(EXTRA)
    s = f"{rng.choice(SEVERITY)} {rng.choice(SIDES)} {rng.choice(ZONES)} {rng.choice(FINDING)}"
    if rng.random() < 0.3: s += f" measuring {rng.randint(1, 9)}.{rng.randint(0, 9)} cm"
    if rng.random() < 0.6: s += " " + rng.choice(CHANGE).format(d=f"{rng.randint(1, 12)}/{rng.randint(1, 28)}")
    return s


def corpus(n: int = 3000, seed: int = 0) -> list[str]:
    "Template reports in MIMIC-CXR's findings style, varied enough for a ~1000-token BPE."
    rng = random.Random(seed)
    return [". ".join(sentence(rng) for _ in range(rng.randint(3, 7))) + "." for _ in range(n)]


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize()


def timeit(fns, device, repeat: int, warmup: int = 1) -> list[float]:
    "Best-of-`repeat` seconds per call for each function, calls interleaved (fair on a shared, noisy machine)."
    for f in fns:
        for _ in range(warmup): f()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, f in enumerate(fns):
            sync(device); t = time.perf_counter(); f(); sync(device)
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def batch(tok, texts, max_length, device):
    enc = tok([tok.bos_token + t + tok.eos_token for t in texts], add_special_tokens=False, padding="max_length",
              truncation=True, max_length=max_length, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    labels[:, 0] = -100
    return {k: v.to(device) for k, v in dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).items()}


def bench(name, model_cfg, tok, image_size, max_length, device, bs, gen_bs, bf16, repeat, gen_repeat):
    torch.manual_seed(0)
    model = ReportGenerator.from_config(model_cfg, tok, max_length=max_length, image_size=image_size).to(device)
    s = model.summary(text_length=max_length)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    texts = corpus(bs, seed=1)
    b = batch(tok, texts, max_length, device)
    x = torch.randn(bs, 3, image_size, image_size, device=device)

    model.train()
    def step():
        with amp: loss = model(x, **b).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
    (t_train,) = timeit([step], device, repeat)

    model.eval()
    xg = torch.randn(gen_bs, 3, image_size, image_size, device=device)
    gen = dict(num_beams=3, max_new_tokens=100, min_new_tokens=100, no_repeat_ngram_size=0, length_penalty=1.0)

    def ours(**kw):
        with amp: return model.generate(xg, **{**gen, **kw})

    @torch.no_grad()
    def plain(**kw):
        kw = {**gen, **kw}
        with amp:
            prefix, pmask = model.encode(xg)
            bos = torch.full((gen_bs, 1), tok.bos_token_id, device=device)
            emb = torch.cat([prefix, model.decoder.get_input_embeddings()(bos)], 1)
            mask = torch.cat([pmask, torch.ones_like(bos)], 1)
            return model.decoder.generate(inputs_embeds=emb, attention_mask=mask, do_sample=False,
                                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                          bos_token_id=tok.bos_token_id, **kw)

    same_greedy = torch.equal(ours(num_beams=1), plain(num_beams=1))
    same_beam = torch.equal(ours(), plain())
    t_ours, t_plain = timeit([ours, plain], device, gen_repeat)
    res = {
        "model": name, "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else f" ({torch.get_num_threads()} threads)"),
        "precision": "bf16 autocast" if bf16 else "fp32", "image_size": image_size, "prefix_tokens": s["prefix_tokens"],
        "params_M": round((s["total"]["trainable"] + s["total"]["frozen"]) / 1e6, 2), "gflops_per_sample_fwd": round(s["gflops_per_sample"], 2),
        "train_batch": bs, "text_length": max_length, "fwd_bwd_samples_per_s": round(bs / t_train, 2),
        "gen_batch": gen_bs, "gen_reports_per_s_beam3_100tok": round(gen_bs / t_ours, 3),
        "plain_hf_generate_reports_per_s": round(gen_bs / t_plain, 3), "ratio_ours_over_plain": round(t_plain / t_ours, 3),
        "identical_greedy": same_greedy, "identical_beam3": same_beam,
    }
    for k, v in res.items(): print(f"  {k:34s} {v}")
    print(json.dumps(res))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CPU demo model, plus the GPU model when CUDA is available")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--batch", type=int, default=16, help="training batch (CPU demo)")
    ap.add_argument("--gen-batch", type=int, default=4, help="images per generate call (CPU demo)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions")
    ap.add_argument("--gpu-batch", type=int, default=32)
    ap.add_argument("--gpu-gen-batch", type=int, default=32)
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    tok = train_tokenizer(corpus(), vocab_size=1000)
    print(f"tokenizer: byte-level BPE, {len(tok)} tokens; torch {torch.__version__}")
    out = []
    if a.device in ("auto", "cpu"):
        demo = get_preset("demo")
        print(f"== demo model on CPU ({demo.model.encoder}, {demo.data.image_size} px, {demo.model.mapping}, decoder_config {demo.model.decoder_config})")
        out.append(bench("demo", demo.model, tok, demo.data.image_size, demo.data.max_length, torch.device("cpu"),
                         a.batch, a.gen_batch, False, a.repeat, a.repeat))
    if a.device in ("auto", "cuda") and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        cfg = ModelConfig(encoder="vit_base_patch16_224", pretrained=False, mapping="linear",
                          decoder_config={"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024})
        print("== ViT-B/16 + GPT-2 (12 x 768) at 224 px on CUDA, bf16 autocast")
        out.append(bench("vit_b16+gpt2", cfg, tok, 224, 128, torch.device("cuda"), a.gpu_batch, a.gpu_gen_batch, True, 5, 3))
    elif a.device == "cuda": raise SystemExit("--device cuda: CUDA is not available")
    return out


if __name__ == "__main__":
    main()
