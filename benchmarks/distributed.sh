#!/usr/bin/env bash
# One process against two (torchrun, gloo) on this machine: an unconditional boundary-broken ELS
# sample over 2,000 bundled digits (--parallel bank: each process holds 1,000), and a comparison
# of 8 seeds over 1,000 digits split by seeds (--parallel seeds). Prints the wall time of each.
#
#     bash benchmarks/distributed.sh
set -euo pipefail
cd "$(mktemp -d)"
sample=(sample --machine els --limit 2000 --class none -n 2 --steps 20)
compare=(compare --model mnist5k-resnet --per-class 100 --seeds 8 --steps 20 --machines ideal,els)
t() { local s=$(date +%s.%N); "$@" >log.txt 2>&1 || { cat log.txt >&2; exit 1; }; echo "$(echo "$(date +%s.%N) - $s" | bc)"; }
echo "els sample, 1 process:        $(t els "${sample[@]}" -o one.png) s"
echo "els sample, 2 processes bank: $(t torchrun --standalone --nproc-per-node 2 -m elsmachine.cli "${sample[@]}" -o two.png) s"
echo "els compare, 1 process:         $(t els "${compare[@]}" --out one) s"
echo "els compare, 2 processes seeds: $(t torchrun --standalone --nproc-per-node 2 -m elsmachine.cli "${compare[@]}" --parallel seeds --out two) s"
python - <<'PY'
import numpy as np
a, b = np.load("one.npz")["images"], np.load("two.npz")["images"]
print(f"sample: 2 processes against 1, max |difference| {np.abs(a - b).max():.2e}")
PY
