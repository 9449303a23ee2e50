#!/usr/bin/env bash
# The GPU benchmark, prepared to run once on a machine with a CUDA device: installs the package
# with Triton, then runs benchmarks/gpu.py (both Triton forms of LS and ELS and the GPU paths of
# IS, nearest, Wiener and locality; synthetic colour sets of 5,000 and 50,000 images of 3x32x32,
# 60,000 distorted digits and the bundled 5,000; batch 1 and 16; 20 steps; fidelity to float64 on
# a slice). Writes OUT/gpu-bench.json as it goes and prints the table.
#
#     bash benchmarks/gpu.sh OUT
set -euo pipefail
out="${1:?usage: bash benchmarks/gpu.sh OUT (a folder for gpu-bench.json)}"
cd "$(dirname "$0")/.."
python -m pip install --quiet -e '.[gpu]'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
python benchmarks/gpu.py "$out" --device cuda
