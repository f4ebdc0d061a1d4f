#!/usr/bin/env bash
# The GPU figures of the model and training benchmarks, in one run, for a session that has a GPU
# machine (CI never does). Run from the repository root on that machine:
#
#     bash bench/gpu_check.sh            # writes bench_model.txt / bench_trainer.txt to $OUT (or ./outputs/gpu_check)
#
# It uses the machine's own PyTorch, transformers (4.50+ or 5.x), timm and accelerate. cxrgen
# also needs fastcore, which a bare CUDA image may lack: where `pip` works, fetch it as a wheel
# beside the checkout first and the script installs it from there, offline:
#
#     python3 -m pip download --no-deps --only-binary=:all: -d .whl "fastcore>=1.7,<2"
#
# Timings are only comparable within one run on one card; the card is printed first.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-outputs/gpu_check}"; mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/cxrgen_site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/cxrgen_site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
python3 -c "import torch, transformers, timm, accelerate, fastcore, cxrgen
print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, '
      f'timm {timm.__version__}, accelerate {accelerate.__version__}, cxrgen from {cxrgen.__file__}')" \
  | tee -a "$out/device.txt" || exit 1
rc=0
# issue 3: ViT-B/16 + GPT-2 (12 x 768) at 224 px, bf16: fwd+bwd samples/s, beam-3 generation vs plain HF generate
python3 bench/bench_model.py --device cuda 2>&1 | tee "$out/bench_model.txt" || rc=1
# issue 4: the trainer's step against a bare PyTorch loop, samples/s and model FLOPs utilisation
python3 bench/bench_trainer.py --size vit-gpt2 2>&1 | tee "$out/bench_trainer.txt" || rc=1
exit $rc
