"""Training-step time of the demo model with the findings classifier and prompt, against the same model without them.

Both models (the `demo` preset, and the preset with `model.conditioning=none`, `model.aux_label_weight=0`,
`model.classifier=linear`: the demo before the classifier existed) take alternating optimizer steps on the
same batch in one process, so machine load hits both alike; the script prints the median step times and
their ratio.

    python bench/bench_conditioning.py [--steps 8] [--threads 2]
"""
import argparse
import time

import torch

from cxrgen.config import apply_overrides, get_preset
from cxrgen.data.tokenizer import train_tokenizer
from cxrgen.models.report_generator import ReportGenerator

VARIANTS = {"without": {"model.conditioning": "none", "model.aux_label_weight": 0.0, "model.classifier": "linear"},
            "with classifier + prompt": {}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per model (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = train_tokenizer(["the heart is normal in size. no pleural effusion. small left pleural effusion."] * 50, vocab_size=1000)
    demo = get_preset("demo")
    B, T = demo.train.batch_size, 60
    x, ids = torch.randn(B, 3, demo.data.image_size, demo.data.image_size), torch.randint(0, len(tok), (B, T))
    labels = torch.zeros(B, 14)
    models = {}
    for name, over in VARIANTS.items():
        torch.manual_seed(0)
        m = ReportGenerator.from_config(apply_overrides(demo, over).model, tok, max_length=demo.data.max_length,
                                        image_size=demo.data.image_size).train()
        models[name] = (m, torch.optim.AdamW(m.parameters(), 1e-4))
    times = {k: [] for k in models}
    for step in range(a.steps + 1):
        for name, (m, opt) in models.items():
            t = time.perf_counter()
            loss = m(x, ids, labels=ids, chexpert_labels=labels).loss
            opt.zero_grad(); loss.backward(); opt.step()
            if step: times[name].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for k, v in med.items(): print(f"{k:26s} {v:.3f} s/step (median of {a.steps}, batch {B}, {a.threads} threads)")
    print(f"ratio with/without: {med['with classifier + prompt'] / med['without']:.3f}")


if __name__ == "__main__":
    main()
