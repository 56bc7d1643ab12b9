#!/usr/bin/env bash
# Big-model inference on a GPU machine, ours beside HF Accelerate (issue 19).
#
# Run from the repository root, with nothing installed from this repository:
#     OUT=/some/folder bash benchmarks/big_model_inference/gpu_check.sh [--cpu-only]
# Needs python3 with torch (CUDA), transformers, accelerate, safetensors, psutil, pluggy, pyyaml
# and xxhash; no network. Takes about 2-3 minutes on one H200. Writes into "$OUT":
#   gpu_env.json                  torch/CUDA versions, the GPU, the budgets both libraries see
#   gpu_correctness.json          every correctness check (outputs vs the full model, maps vs HF)
#   big_model_inference_gpu.json  load time, peak CPU/GPU memory, time per token, ours vs HF
#   big_model_inference_gpu.md    the same figures as a table
#   log.txt                       everything printed
# --cpu-only runs the same steps with the CPU in the accelerator's place and a small model, to
# try the script on a machine without a GPU. Exit status: 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/core/src${PYTHONPATH:+:$PYTHONPATH}"
export TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/big_model_gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
CPU_ONLY=()
[ "${1:-}" = "--cpu-only" ] && CPU_ONLY=(--cpu-only)
status=0
exec > >(tee "$OUT/log.txt") 2>&1

echo "== environment"
timeout 120 "$PYTHON" - "$OUT/gpu_env.json" <<'PY' || status=1
import json, sys
import torch, transformers, accelerate
import accelerate.utils as hf
from accelerate_core.utils import get_max_memory
from accelerate_core.utils.device_map import device_memory_info
env = {
    "python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
    "transformers": transformers.__version__, "accelerate": accelerate.__version__,
    "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    "ours_max_memory": {str(k): v for k, v in get_max_memory().items()},
    "hf_max_memory": {str(k): v for k, v in hf.get_max_memory().items()},
}
if torch.cuda.is_available():
    env["memory_info_hook_cuda0"] = device_memory_info(torch.device("cuda", 0))
    env["torch_mem_get_info_cuda0"] = torch.cuda.mem_get_info(0)
print(json.dumps(env, indent=1))
open(sys.argv[1], "w").write(json.dumps(env, indent=1))
PY

echo "== correctness"
timeout 300 "$PYTHON" benchmarks/big_model_inference/gpu_correctness.py "$OUT" "${CPU_ONLY[@]}" || status=1

echo "== benchmark"
if [ ${#CPU_ONLY[@]} -gt 0 ]; then
  bench=(--models decoder --scenarios cpu cpu+disk --dtype float32 --tokens 4)
else
  # OPT-1.3b in fp16 (2.6 GB): all on the GPU; half offloaded to CPU memory; a third on the GPU,
  # a third in CPU memory, the rest on disk.
  bench=(--models opt-1.3b --scenarios gpu gpu+cpu gpu+cpu+disk --dtype float16 --tokens 16)
fi
timeout 600 "$PYTHON" benchmarks/big_model_inference/big_model_inference.py "${bench[@]}" \
  --workdir "$WORK" --timeout 240 --output "$OUT/big_model_inference_gpu.json" || status=1
"$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['table'])" \
  "$OUT/big_model_inference_gpu.json" > "$OUT/big_model_inference_gpu.md" 2>/dev/null || status=1
echo "== done: status $status"
exit $status
