#!/usr/bin/env bash
# Every GPU figure the report is missing, in one device call: the compiled Triton kernels' tests, the kernel benchmark
# (issue sizes), the selection benchmark (k-center, IFD and LESS batching at the issue sizes) and the real-length
# training rows vs TRL (SFT packed, DPO and KTO with the reference precomputed, ORPO; bf16, Triton kernels on). The
# device image has torch, triton, lightning, transformers and peft but not ltune's other imports nor trl and
# accelerate; they travel as wheels. It cannot reach the Hub and the weights (514 MB) exceed what a call carries, so
# the training rows run SmolLM2-135M-Instruct's architecture and tokenizer (carried in .whl/smollm2/) with random
# weights: speed and memory do not depend on the weights' values.
#
#   bash benchmarks/gpu.sh wheels        # here (needs the package registry): Python 3.12 wheels into .whl/ (git-ignored)
#   device run, carry [".whl"]:  bash benchmarks/gpu.sh run      # logs and JSON land in $OUT (kernels, selection)
#   device run, carry [".whl"]:  bash benchmarks/gpu.sh train    # a second call: the training rows (<= 8 min)
#   bash benchmarks/gpu.sh dry           # here, on CPU: the training rows' commands on small rows (a few minutes)
#
# Written in a session without a GPU: the wheel download and the dry run were run, the device side was not. datasets
# pins pyarrow >= 24; if the image's pyarrow is older and `import datasets` fails there, add a pyarrow wheel to the list.
set -euo pipefail
cd "$(dirname "$0")/.."
# The real-length training rows (benchmarks/studies/train_lengths.yaml) on DEVICE in DTYPE: a random-weight model of
# the carried architecture, the seeded workloads (WORKLOAD: extra workload.py flags), each row under a timeout (s) with
# EXTRA train_throughput.py flags.
lengths() {
  local device=$1 dtype=$2 out=$3 workload=$4 limit=$5 extra=${6:-} model=/tmp/smollm2_random
  mkdir -p "$out"
  python3 - "$model" <<'PY'
import sys, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(".whl/smollm2")).save_pretrained(sys.argv[1])
AutoTokenizer.from_pretrained(".whl/smollm2").save_pretrained(sys.argv[1])
PY
  python3 benchmarks/workload.py sft --rows 32 --model "$model" --out "$out/sft32.jsonl" $workload | tail -1
  python3 benchmarks/workload.py pairs --rows 8 --model "$model" --out "$out/pairs8.jsonl" $workload | tail -1
  local common=(--model "$model" --device "$device" --dtype "$dtype" --max-length 4096 --warmup 1 --repeats 2)
  local rows=(
    "sft_budget --method sft --workload $out/sft32.jsonl --trl-packing --batch-tokens 4096"
    "sft_lora_budget --method sft --workload $out/sft32.jsonl --trl-packing --batch-tokens 4096 --lora 16"
    "dpo_full --method dpo --precompute --workload $out/pairs8.jsonl --batch 1"
    "dpo_lora --method dpo --precompute --workload $out/pairs8.jsonl --batch 1 --lora 16"
    "orpo_full --method orpo --workload $out/pairs8.jsonl --batch 1"
    "kto_full --method kto --precompute --workload $out/pairs8.jsonl --batch 2"
  )
  for row in "${rows[@]}"; do
    set -- $row
    local name=$1; shift
    timeout "$limit" python3 benchmarks/train_throughput.py "${common[@]}" "$@" $extra --json "$out/$name.json" 2>&1 \
      | tee "$out/$name.log" | tail -4 || true
  done
}

case "${1:-}" in
  wheels)
    mkdir -p .git/info && { grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
      jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 datasets==5.2.0 dill==0.4.1 \
      multiprocess==0.70.19 trl==1.16.0 accelerate==1.16.0 psutil==7.2.2
    python3 -c "from ltune.backbone import Backbone; Backbone('smollm2-135m-instruct').tokenizer" >/dev/null  # fetched
    mkdir -p .whl/smollm2 && cp "${LTUNE_CACHE:-$HOME/.cache/ltune}"/models/smollm2-135m-instruct/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja} .whl/smollm2/
    ls .whl .whl/smollm2 ;;
  run)
    OUT=${OUT:-gpu_out} && mkdir -p "$OUT"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -3
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/kernels/test_triton_gpu.py 2>&1 | tee "$OUT/kernel_tests.log" || true
    timeout 240 python3 benchmarks/kernel_speed.py --json "$OUT/kernels.json" 2>&1 | tee "$OUT/kernels.log" || true
    timeout 150 python3 benchmarks/selection.py 2>&1 | tee "$OUT/selection.log" || true ;;
  train)
    OUT=${OUT:-gpu_out} && mkdir -p "$OUT"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -3
    lengths cuda bfloat16 "$OUT/lengths" "" 75 ;;
  dry)
    export HF_HUB_OFFLINE=1 WANDB_MODE=disabled
    lengths cpu float32 /tmp/gpu_dry "--rows 4 --median 40 --max-tokens 160" 900 "--warmup 0 --repeats 1" ;;
  *) echo "usage: bash benchmarks/gpu.sh wheels|run|train|dry" >&2; exit 2 ;;
esac
