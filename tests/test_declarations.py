"""Every machine fact lives in its declaration: nothing outside ``machines/`` names a machine,
and the registry's facts (defaults, costs, fits, calibration) are read from declarations."""

import math
import re
from pathlib import Path

import pytest
import torch

import elsmachine as em
from elsmachine.machines import DEFAULT_MACHINE, EXACT_MACHINE, cost_of

SRC = Path(em.__file__).parent
# Machine names that are also plain words of the code ("nearest": a metric, a record field, an
# interpolation mode): named as a machine only where compared with or passed as a machine name.
WORDS = {"nearest"}


def _occurrences():
    names = sorted(em.MACHINES, key=len, reverse=True)
    quoted = re.compile(r"""(?<![\w-])["'](%s)["'](?![\w-])""" % "|".join(map(re.escape, names)))
    as_machine = re.compile(r"""(==|!=|\bin\b \(|machine\(|MACHINES\[|machine=)\s*["'](%s)["']""" % "|".join(WORDS))
    for path in sorted(SRC.rglob("*.py")):
        if "machines" in path.relative_to(SRC).parts:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            for m in quoted.finditer(line):
                if m.group(1) not in WORDS or as_machine.search(line):
                    yield f"{path.relative_to(SRC)}:{i}: {line.strip()}"


def test_no_machine_is_named_outside_machines():
    found = list(_occurrences())
    assert not found, "machine names outside machines/ (state the fact in the declaration):\n" + "\n".join(found)


def test_the_scan_finds_a_machine_name(tmp_path, monkeypatch):
    """The scan itself: a file naming a machine is found."""
    fake = tmp_path / "elsmachine"
    (fake / "cli").mkdir(parents=True)
    (fake / "cli" / "x.py").write_text('if name == "els-radius":\n    pass\nf(mode="nearest")\nif m == "nearest": pass\n')
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    found = list(_occurrences())
    assert len(found) == 2 and "x.py:1" in found[0] and "x.py:4" in found[1]


def test_registry_facts_come_from_declarations():
    assert em.MACHINES[DEFAULT_MACHINE].declaration.default and em.MACHINES[EXACT_MACHINE].declaration.exact
    for name, cls in em.MACHINES.items():
        d = cls.declaration
        cost = cost_of(name)
        assert cost.pairs(3, 10, 8, 8, 0.5) >= 0 and cost.flops(3, 10, 8, 8, 1, 0.5) >= 0
        if d.candidate:  # every candidate says how it is fitted and what it is at its defaults
            assert d.fit is not None and d.option(d.fit.option) is not None, name
            assert d.reduces_to in em.MACHINES, name
        assert d.calibrates == d.has_patch_size


def test_the_calibrate_command_takes_every_machine_with_a_patch_size():
    from elsmachine.cli.calibrate import PatchMachineName

    assert {m.value for m in PatchMachineName} == {n for n, c in em.MACHINES.items() if c.declaration.has_patch_size}
    assert {"els-border", "els-radius"} <= {m.value for m in PatchMachineName}


def test_a_weight_fitted_on_ddim_means_the_same_noise_level_under_heun():
    """A wiener-els weight given per step of 20 DDIM steps is looked up at the same noise level
    under 18 Heun steps: each Heun call takes the weight of the DDIM time nearest in log sigma."""
    from elsmachine.sampling import Sampler

    sch = em.CosineSchedule()
    ddim = Sampler("ddim").grid(sch, 20)
    weights = [round(0.05 * i, 2) for i in range(20)]  # a different weight at every step
    timed = em.timed_options("wiener-els", {"wiener_weight": ",".join(map(str, weights))}, ddim, sch)["wiener_weight"]
    assert isinstance(timed, em.StepSchedule) and timed.ts == tuple(ddim[:-1].tolist())
    Y = torch.rand(6, 1, 6, 6) * 2 - 1
    m = em.make_machine("wiener-els", Y, patch_size=3, wiener_weight=timed)
    level = lambda t: math.log(sch.sigma_ve(t))  # noqa: E731
    for t in Sampler("heun").grid(sch, 18)[:-1].tolist():
        want = weights[min(range(20), key=lambda j: abs(level(float(ddim[j])) - level(t)))]
        with pytest.warns(UserWarning, match="nearest noise level") if t not in timed.ts else _nothing():
            assert m._value("wiener_weight", t) == want
        m.__dict__.pop("_warned", None)
        timed.__dict__.pop("_warned", None)
    # at a DDIM time the stored value itself; the list on another run's grid is refused by length
    assert m._value("wiener_weight", float(ddim[3])) == weights[3]
    with pytest.raises(em.InputError, match="has 20 values but the run has 18 steps"):
        em.timed_options("wiener-els", {"wiener_weight": ",".join(map(str, weights))}, Sampler("heun").grid(sch, 18))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_per_step_options_on_the_command_line_belong_to_the_run_s_grid(tmp_path):
    """A border schedule of one size is taken as sizes are; a per-step list of the wrong length is
    refused before any work; under Heun a per-step list has Heun's times, as -k has."""
    import json as _json

    import numpy as np
    from helpers import cli, error_line

    ds = tmp_path / "d.npz"
    np.savez(ds, images=np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8),
             labels=np.array([0, 1] * 3))
    res = cli("sample", "--dataset", ds, "--machine", "els-border", "-k", 5, "--border-patch-schedule", 3, "-n", 1,
              "--steps", 2, "-o", tmp_path / "b.npz")
    assert res.exit_code == 0, res.output
    assert "has 3 values but the run has 4 steps" in error_line(
        cli("sample", "--dataset", ds, "--machine", "els-radius", "--radii", "1,2,3", "--steps", 4, "-k", 3, "-n", 1,
            "-o", tmp_path / "r.npz"))
    res = cli("sample", "--dataset", ds, "--machine", "els-radius", "--radii", "1,2,3,4", "--sampler", "heun",
              "--steps", 4, "-k", "3,5,5,7", "-n", 1, "-o", tmp_path / "h.npz")
    assert res.exit_code == 0, res.output
    d = _json.loads(str(np.load(tmp_path / "h.npz")["meta"]))["denoiser"]
    assert d["radii"]["ts"] == d["patch_size"]["ts"] and d["radii"]["values"] == [1, 2, 3, 4]
    assert d["patch_size"]["ts"][1] < 0.95  # Heun's times, not the 4-step DDIM grid's 0.75
