"""One process, a synthetic bank of N uint8 images of 3 x 32 x 32, an ELS sample of a few steps:
prints the peak resident memory (GiB) and the seconds taken.

    python big_bank.py N STEPS [RADIUS]    (RADIUS: els-radius's radius, for a quick check)
"""

import resource
import sys
import time

import torch

import elsmachine as em

n, steps = int(sys.argv[1]), int(sys.argv[2])
radius = int(sys.argv[3]) if len(sys.argv) > 3 else None
g = torch.Generator().manual_seed(0)
bank = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)  # 600 MB at 200,000
machine = (em.make_machine("els", bank, patch_size=3, memory_budget=256 << 20) if radius is None else
           em.make_machine("els-radius", bank, patch_size=3, memory_budget=256 << 20, radii=radius))
noise = em.seed_noise([0, 1], (3, 32, 32))
t0 = time.perf_counter()
x = em.ddim_sample(machine, noise, steps=steps)
seconds = time.perf_counter() - t0
assert torch.isfinite(x).all()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
print(f"peak_gib={peak:.3f} seconds={seconds:.1f} n={n} steps={steps} radius={radius}")
