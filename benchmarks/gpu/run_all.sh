#!/usr/bin/env bash
# Every GPU check of the project in one go, for a session that is lent a GPU machine (no network,
# its own python3 with torch/CUDA, transformers and HF Accelerate; our packages run from source).
#
#   1. here:   mkdir -p .whl && python3 -m pip download --no-deps --only-binary=:all: \
#                --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl torchao==0.18.0
#              (and torchao==0.16.0 as a fallback for an older torch), with .whl/ git-ignored
#   2. device: bash benchmarks/gpu/run_all.sh [a|b|all]     (carry .whl; results in $OUT)
#
# Part a (~5 min): CUDA paths (bit-identical training, fp16 skips without syncs, exact resume,
# MemoryTracker, overhead) and fp8 vs bf16 on a 1.3B decoder. Part b (~4 min): context
# parallelism and big-model inference (ours beside HF). Everything lands in one archive.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
: "${OUT:?set OUT to the folder the results go to}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PART=${1:-all}
R=$(mktemp -d)/results; mkdir -p "$R"
exec > >(tee "$R/run.log") 2>&1
start=$(date +%s); t() { echo "[$(( $(date +%s) - start )) s] $*"; }
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
for wheel in .whl/torchao-*.whl; do  # newest first: the first that imports with this torch
  rm -rf /tmp/ao; python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ao "$wheel"
  if PYTHONPATH=/tmp/ao python3 -c "import torchao.float8, torchao; print('torchao', torchao.__version__)"; then break; fi
done
python3 benchmarks/gpu/register_plugins.py /tmp/site accelerate_ddp accelerate_fsdp accelerate_fp8
export PYTHONPATH=/tmp/site:/tmp/ao:$ROOT/core/src:$ROOT/accelerate_ddp/src:$ROOT/accelerate_fsdp/src:$ROOT/accelerate_fp8/src
if [ "$PART" = a ] || [ "$PART" = all ]; then
  t "cuda paths"; OUT=$R timeout 150 python3 benchmarks/gpu/cuda_paths.py
  t "fp8 decoder"; OUT=$R timeout 240 python3 benchmarks/gpu/fp8_decoder.py
fi
if [ "$PART" = b ] || [ "$PART" = all ]; then
  if [ -f benchmarks/gpu_context_parallel.py ]; then
    t "context parallelism"; OUT=$R timeout 110 python3 benchmarks/gpu_context_parallel.py
  fi
  t "big-model inference"; mkdir -p "$R/bigmodel"
  OUT=$R/bigmodel timeout 200 bash benchmarks/big_model_inference/gpu_check.sh
fi
t "done"
tar -czf "$OUT/gpu-results-$PART.tar.gz" -C "$(dirname "$R")" results
cp "$R/run.log" "$OUT/gpu-run-$PART.log"
