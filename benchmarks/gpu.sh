#!/usr/bin/env bash
# The GPU benchmark, prepared to run once on a machine with a CUDA device: installs the package
# with Triton, then times LS and ELS on the attention form and on the Triton kernel, N = 5,000
# and 60,000 (the bundled digits repeated: the same cost as full MNIST), batch 1 and 16, 20 steps,
# each against float64 on the same engine. Writes gpu-bench.json and prints the table.
#
#     bash benchmarks/gpu.sh            (about 5 minutes on an H100)
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e '.[gpu]'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
els bench --device cuda --machines els-zeros,els-circular,ls,ideal --backend fused,triton \
  --n 5000,60000 --batch 1,16 --steps 20 --baseline none --out gpu-bench.json
