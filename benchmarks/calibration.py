"""Calibration in one pass against size by size (docs/theory.md, "Patch schedules").

Calibrates boundary-broken ELS against the bundled network ``mnist5k-resnet`` (conditional, so
each seed meets the 500 digits of its class) over the same seeds and steps three ways, in one run:
one size (11); every odd size 3..21 from one pass of the kernel over the candidates per step (what
``els calibrate --sizes 3:21`` does); and the same sizes one at a time. Prints the time of each,
the ratios, and whether the two schedules agree.

Then the part no sharing between sizes can remove: every size's own softmax update of every
(query pixel, candidate) pair. On the network's trajectories of the same seeds, the kernel's one
pass over all sizes is timed as built and as rebuilt (in a scratch cache) with the update cut
out of it (its results are then meaningless; only its time counts), and the difference is set
against one size-11 call.

    python benchmarks/calibration.py --seeds 2 --steps 10
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time

import torch

import elsmachine as em
from elsmachine.experiments.calibrate import calibrate


class OneAtATime:
    """The machine without ``denoise_sizes``: calibration then runs the sizes one at a time."""

    has_patch_size = True

    def __init__(self, m):
        self.m, self.schedule, self.image_shape = m, m.schedule, m.image_shape

    def denoise(self, x, t, labels=None, patch_size=None):
        return self.m.denoise(x, t, labels=labels, patch_size=patch_size)


def updates_cut(source: str) -> str:
    """The kernel's source with each size's softmax update (emit: the distance sums' last
    addition, the block's minimum, the weights and the sums) cut down to one store."""
    head = re.search(r"void FN\(emit\)\([^{]*\{\n", source)
    return source[: head.end()] + "    st->m[q] += S[0];\n    return;\n" + source[head.end() :]


def trajectories(net, m, seeds, labels, steps):
    """(t, x_t, label) of every step of the network's own DDIM trajectory from each seed."""
    out = []
    for s, lab in zip(seeds, labels.tolist()):
        em.ddim_sample(net, em.seed_noise([s], m.image_shape), steps=steps, labels=torch.tensor([lab]),
                       callback=lambda info, lab=lab: out.append((info["t"], info["x"], torch.tensor([lab]))))
    return out


def kernel_time(m, points, sizes) -> float:
    t0 = time.perf_counter()
    for t, x, lab in points:
        if len(sizes) == 1:
            m.denoise(x, t, labels=lab, patch_size=sizes[0])
        else:
            m.denoise_sizes(x, t, sizes, labels=lab)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    net = em.load_network("mnist5k-resnet")
    ds = em.load_dataset("mnist5k")
    m = em.make_machine("els", ds.images, labels=ds.labels, padding="zeros", schedule=net.schedule)
    seeds = list(range(args.seeds))
    labels = torch.tensor([ds.classes[s % len(ds.classes)] for s in seeds])
    m.denoise(torch.zeros(1, *m.image_shape), 0.5, labels=labels[:1], patch_size=3)  # compile the kernel first
    sizes = list(range(3, 22, 2))
    runs = {}
    for name, machine, ks in (("size 11", m, [11]), ("3:21 one pass", m, sizes),
                              ("3:21 size by size", OneAtATime(m), sizes)):
        t0 = time.perf_counter()
        sched, _, _ = calibrate(net, machine, ks, seeds, steps=args.steps, labels=labels)
        runs[name] = (time.perf_counter() - t0, sched)
        print(f"{name:>18}: {runs[name][0]:6.2f} s  sizes {list(sched.sizes)}")
    base = runs["size 11"][0]
    one, each = runs["3:21 one pass"][0], runs["3:21 size by size"][0]
    print(f"one pass / size 11 = {one / base:.2f}; size by size / size 11 = {each / base:.2f}; "
          f"size by size / one pass = {each / one:.2f}; same schedule: "
          f"{runs['3:21 one pass'][1].sizes == runs['3:21 size by size'][1].sizes}")

    from elsmachine.engines import native

    points = trajectories(net, m, seeds, labels, args.steps)
    k11 = kernel_time(m, points, [11])
    full = kernel_time(m, points, sizes)
    source = native._source()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ELSMACHINE_CACHE"] = cache
        native._source = lambda: updates_cut(source.decode()).encode()
        native._lib, native._status = None, "not loaded yet"
        m.denoise(torch.zeros(1, *m.image_shape), 0.5, labels=labels[:1], patch_size=3)  # compile it first
        cut = kernel_time(m, points, sizes)
    updates = full - cut
    print(f"kernel calls on the same trajectories: size 11 {k11:.2f} s; 3:21 one pass {full:.2f} s, of which "
          f"the sizes' own softmax updates {updates:.2f} s = {updates / k11:.2f} x size 11 (3 x size 11 = "
          f"{3 * k11:.2f} s)")


if __name__ == "__main__":
    main()
