"""Run under torchrun (gloo): every machine built with distributed=True over a small training set;
each rank saves what it returns, so the test can compare every rank with one process holding all.

    python -m torch.distributed.run --standalone --nproc_per_node 2 distributed_cases.py OUT
"""

import json
import sys

import torch
import torch.distributed as dist


def cases():
    """(name, kwargs of make_machine, traced): the same list the test runs in one process."""
    out = [("ideal", {}, True)]
    for name in ("ls", "els"):
        for padding in ("zeros", "circular"):
            for backend in ("native", "fused", "explicit"):
                out.append((name, {"padding": padding, "patch_size": 3, "backend": backend}, True))
    out += [("nearest", {}, True), ("wiener", {}, False), ("stationary", {}, False),
            ("locality", {"threshold": 0.05}, True), ("pspc", {"patch_size": 3}, False),
            ("pspc-flex", {"sensitivity": sensitivity()}, False), ("smoothed", {"num_noise": 3}, False)]
    # a machine whose engine changes with t: one per radius, each sharded
    out += [("els-radius", {"patch_size": 3, "radii": [1, 0], "backend": b}, True) for b in ("native", "fused")]
    return out


def sensitivity():
    """Two windows per step at t = 0.3 and 0.9: the left half and the right two thirds."""
    from elsmachine import CosineSchedule
    from elsmachine.networks.sensitivity import Sensitivity

    w = torch.zeros(2, 2, 5, 6, dtype=torch.bool)
    w[:, 0, :, :3] = True
    w[:, 1, :, 2:] = True
    return Sensitivity.from_windows(w.flatten(2), (0.3, 0.9), (5, 6), CosineSchedule().to_dict())


def data():
    g = torch.Generator().manual_seed(7)
    Y = torch.rand(7, 2, 5, 6, generator=g, dtype=torch.float64) * 2 - 1
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 0])  # class 2 has one image: one rank holds none of it
    x = torch.randn(3, 2, 5, 6, generator=g, dtype=torch.float64)
    return Y, labels, x


def results(distributed: bool) -> dict:
    import elsmachine as em
    from elsmachine.machines import options_of

    Y, labels, x = data()
    out = {}
    for name, kw, traced in cases():
        for cond in (False, True):
            kw = {k: v for k, v in kw.items() if k in options_of(name)}
            m = em.make_machine(name, Y, labels=labels if cond else None, distributed=distributed, **kw)
            key = f"{name}-{'-'.join(str(v) for o, v in kw.items() if o != 'sensitivity')}-{'cond' if cond else 'uncond'}"
            lab = torch.tensor([0, 2, 1]) if cond else None
            # What results record of the machine: the full set, whatever share this rank holds.
            out[f"{key}-describe"] = json.dumps(m.describe(), sort_keys=True, default=str)
            out[f"{key}-repr"] = repr(m)
            out[f"{key}-fingerprint"] = m.training_fingerprint
            for t in (0.3, 0.9):
                out[f"{key}-{t}-x0"] = m.denoise(x, t, labels=lab)
                if name in ("ls", "els") and kw["backend"] == "native":  # every size from one pass
                    for k, o in zip((1, 3, 5, 7), m.denoise_sizes(x, t, [1, 3, 5, 7], labels=lab)):
                        out[f"{key}-{t}-sizes{k}"] = o
                if traced:
                    _, tr = m.denoise_traced(x, t, labels=lab)
                    out[f"{key}-{t}-source"] = tr.source_image * 10_000 + tr.source_pixel
                    out[f"{key}-{t}-weight"] = tr.weight
                    out[f"{key}-{t}-effective"] = tr.effective
    return out


if __name__ == "__main__":
    dist.init_process_group("gloo")
    res = results(distributed=True)
    res["world"] = torch.tensor(dist.get_world_size())
    torch.save(res, f"{sys.argv[1]}/rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
