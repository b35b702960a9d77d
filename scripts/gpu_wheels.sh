#!/usr/bin/env bash
# Fill .whl/ (git-ignored, carried to the GPU machine) with what `scripts/gpu_check.py --cli` needs there.
# That machine has Python 3.12, torch 2.11+cu130 and transformers 5.17, but no trl, datasets or vllm, and no
# network. gpu_check.py installs these wheels itself (pip --no-index --target) when trl or datasets is missing.
#   .whl/*.whl        trl 1.12.0, datasets 5.2.0 (+ dill, multiprocess), transformers 5.19.0 (the pinned version)
#   .whl/tokenizer/   the embedded model's tokenizer and chat template (3.4 MB; there is no ~/.cache there)
#   .whl/data/        the HH-RLHF harmless test file for the agreement check (../shared does not travel)
# vLLM's CUDA wheel (hundreds of MB) cannot travel within the 64 MiB limit; the vLLM lifecycle is tested on CPU.
# Usage: bash scripts/gpu_wheels.sh   (from any directory; needs PyPI and a provisioned embedded model)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl/tokenizer .whl/data
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl trl==1.12.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 transformers==5.19.0
model="${RLAIF_CACHE:-$HOME/.cache/rlaif}/SmolLM2-135M-Instruct-fp32"
if [ -f "$model/tokenizer.json" ]; then
    cp "$model"/tokenizer.json "$model"/tokenizer_config.json .whl/tokenizer/
    [ -f "$model/chat_template.jinja" ] && cp "$model/chat_template.jinja" .whl/tokenizer/
else
    echo "gpu_wheels: no embedded model at $model; gpu_check.py will train a small tokenizer instead" >&2
fi
hh=hh-rlhf-harmless-base-test.jsonl.gz
for d in ../shared/data ../../shared/data /work/shared/data; do
    if [ -f "$d/$hh" ]; then cp "$d/$hh" .whl/data/; break; fi
done
[ -f ".whl/data/$hh" ] || echo "gpu_wheels: $hh not found; the agreement check will be skipped" >&2
du -sh .whl
ls .whl
