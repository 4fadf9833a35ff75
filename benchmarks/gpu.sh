#!/usr/bin/env bash
# Every GPU figure the report is missing, in one device call: the compiled Triton kernels' tests, the kernel benchmark
# (issue sizes) and the selection benchmark (k-center, IFD and LESS batching at the issue sizes). The device image
# has torch, triton, lightning, transformers and peft but not ltune's other imports; they travel as wheels.
#
#   bash benchmarks/gpu.sh wheels        # here (needs the package registry): Python 3.12 wheels into .whl/ (git-ignored)
#   device run, carry [".whl"]:  bash benchmarks/gpu.sh run      # logs and JSON land in $OUT
#
# Written in a session without a GPU: the wheel download was run, the device side was not. datasets pins pyarrow >= 24;
# if the image's pyarrow is older and `import datasets` fails there, add a pyarrow wheel to the list.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  wheels)
    mkdir -p .git/info && { grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
      jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 datasets==5.2.0 dill==0.4.1 \
      multiprocess==0.70.19
    ls .whl ;;
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
  *) echo "usage: bash benchmarks/gpu.sh wheels|run" >&2; exit 2 ;;
esac
