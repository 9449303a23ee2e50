"""Bad training data, seeds and queries: each is refused with one InputError naming the problem,
and data that only looked ambiguous loads as it is."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

import elsmachine as em
from elsmachine.seeds import labels_for_seeds


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


# ----------------------------------------------------------------------------- layout
def test_uint8_images_in_the_projects_layout_keep_it(tmp_path):
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (10, 1, 32, 32), dtype=np.uint8)
    want = torch.from_numpy(u8).float() / 127.5 - 1
    for source in (u8, torch.from_numpy(u8), _npz(tmp_path / "nchw.npz", images=u8)):
        ds = em.load_dataset(source)
        assert ds.images.shape == (10, 1, 32, 32)
        torch.testing.assert_close(ds.images, want, rtol=0, atol=1e-6)


def test_one_layout_rule_for_every_dtype(tmp_path):
    rng = np.random.default_rng(1)
    f = rng.uniform(-1, 1, (4, 8, 6, 3)).astype(np.float32)  # [N, H, W, C], as PIL and numpy keep images
    for source in (f, _npz(tmp_path / "nhwc.npz", images=f)):
        ds = em.load_dataset(source)
        assert ds.images.shape == (4, 3, 8, 6)
        assert torch.equal(ds.images, torch.from_numpy(f).permute(0, 3, 1, 2))
    u8 = rng.integers(0, 256, (4, 3, 8, 6), dtype=np.uint8)
    assert em.load_dataset(u8).images.shape == (4, 3, 8, 6)
    assert em.load_dataset(rng.uniform(-1, 1, (4, 8, 6)).astype(np.float32)).images.shape == (4, 1, 8, 6)
    # one image of a sequence follows the same rule: a uint8 [C, H, W] array is not [H, W, C]
    items = [rng.integers(0, 256, (3, 8, 6), dtype=np.uint8) for _ in range(2)]
    assert em.load_dataset(items).images.shape == (2, 3, 8, 6)


def test_an_ambiguous_layout_is_refused_unless_named(tmp_path):
    u8 = np.zeros((5, 3, 4, 3), np.uint8)
    # both 3 x 4 and 4 x 3 images of 3 channels; where only one reading were square, it would win
    assert em.load_dataset(np.zeros((5, 1, 3, 3), np.uint8)).images.shape == (5, 1, 3, 3)
    assert em.load_dataset(np.zeros((5, 3, 3, 1), np.uint8)).images.shape == (5, 1, 3, 3)
    with pytest.raises(em.InputError, match=r"shape \(5, 3, 4, 3\) could be \[N, C, H, W\] or \[N, H, W, C\]: "
                                            r"pass layout='nchw' or layout='nhwc'"):
        em.load_dataset(u8)
    with pytest.raises(em.InputError, match=r"shape \(5, 3, 4, 3\).*layout="):
        em.load_dataset(_npz(tmp_path / "amb.npz", images=u8))
    assert em.load_dataset(u8, layout="nchw").images.shape == (5, 3, 4, 3)
    assert em.load_dataset(u8, layout="nhwc").images.shape == (5, 3, 3, 4)
    assert em.load_dataset(tmp_path / "amb.npz", layout="nhwc").images.shape == (5, 3, 3, 4)
    with pytest.raises(em.InputError, match=r"shape \(5, 4, 4, 4\) have no channel dimension of 1 or 3 .*layout="):
        em.load_dataset(np.zeros((5, 4, 4, 4), np.uint8))  # no channel dimension of 1 or 3 to find
    assert em.load_dataset(np.zeros((5, 4, 4, 4), np.uint8), layout="nhwc").images.shape == (5, 4, 4, 4)
    with pytest.raises(em.InputError, match=r"item 0 of the list: images of shape \(3, 5, 3\) could be \[C, H, W\] or "
                                            r"\[H, W, C\]: pass layout="):
        em.load_dataset([np.zeros((3, 5, 3), np.uint8)] * 2)
    assert em.load_dataset([np.zeros((3, 5, 3), np.uint8)] * 2, layout="nhwc").images.shape == (2, 3, 3, 5)
    with pytest.raises(em.InputError, match="layout must be 'nchw', 'nhwc' or None, got 'chw'"):
        em.load_dataset(u8, layout="chw")
    with pytest.raises(em.InputError, match="layout= is for"):
        em.load_dataset("mnist5k", layout="nchw")


# ----------------------------------------------------------------------------- value range
def test_a_value_range_must_increase(tmp_path):
    f = np.full((2, 1, 4, 4), 0.5, np.float32)
    for bad in ((1, 0), (0.5, 0.5)):
        with pytest.raises(em.InputError, match=r"value_range must be \(low, high\) with low < high"):
            em.load_dataset(f, value_range=bad)
    with pytest.raises(em.InputError, match="value_range must be"):
        em.load_dataset(f, value_range=(0, float("nan")))
    with pytest.raises(em.InputError, match="value_range must be"):
        em.load_dataset(f, value_range=1)
    with pytest.warns(UserWarning, match=r"value_range=\(0, 1\)"):  # kept: images that all lie in [0, 1]
        em.load_dataset(f)
    path = _npz(tmp_path / "unit.npz", images=f)
    with pytest.warns(UserWarning, match=r"value_range=\(0, 1\)"):  # an .npz of them is read the same way
        em.load_dataset(path)
    assert torch.equal(em.load_dataset(path, value_range=(0, 1)).images, torch.zeros(2, 1, 4, 4))
    with pytest.raises(em.InputError, match=r"value_range must be \(low, high\)"):
        em.load_dataset(path, value_range=(1, 0))


# ----------------------------------------------------------------------------- empty sets
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_a_set_of_zero_images_is_refused(tmp_path, dtype):
    empty = np.zeros((0, 1, 4, 4), dtype)
    with pytest.raises(em.InputError, match=r"empty.npz holds no images \(shape \(0, 1, 4, 4\)\)"):
        em.load_dataset(_npz(tmp_path / "empty.npz", images=empty))
    for source in (empty, torch.from_numpy(empty)):
        with pytest.raises(em.InputError, match=r"holds no images \(shape \(0, 1, 4, 4\)\)"):
            em.load_dataset(source)


# ----------------------------------------------------------------------------- labels
@pytest.mark.parametrize("labels", [["a", "b"], [0.5, 1.0], [True, False], np.array([0.0, 1.0])])
def test_labels_that_are_not_integers_are_refused(tmp_path, labels):
    images = [np.zeros((4, 4), np.uint8)] * 2
    shown = re.escape(str(np.asarray(labels).tolist()))
    with pytest.raises(em.InputError, match=r"the list: labels must be integers \(class indices\), got " + shown):
        em.load_dataset(images, labels=labels)
    with pytest.raises(em.InputError, match="labels must be integers"):
        em.load_dataset([(img, lab) for img, lab in zip(images, labels)])
    with pytest.raises(em.InputError, match="labels must be integers"):
        em.load_dataset(np.zeros((2, 4, 4), np.uint8), labels=labels)
    if not isinstance(labels[0], str):
        path = _npz(tmp_path / "lab.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.asarray(labels))
        with pytest.raises(em.InputError, match="lab.npz: labels must be integers"):
            em.load_dataset(path)


def test_integer_labels_of_every_kind_still_load():
    images = [np.zeros((4, 4), np.uint8)] * 3
    for labels in ([0, 1, 2], np.arange(3), torch.arange(3), [np.int64(0), 1, torch.tensor(2)]):
        assert em.load_dataset(images, labels=labels).labels.tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------- image folders
def _folder(root, modes):
    rng = np.random.default_rng(3)
    for cls, mode in modes.items():
        (root / cls).mkdir(parents=True)
        for i in range(2):
            shape = (12, 10) if mode == "L" else (12, 10, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_a_folder_of_grayscale_pngs_has_one_channel(tmp_path):
    gray = em.load_dataset(_folder(tmp_path / "gray", {"a": "L", "b": "L"}), image_size=8)
    assert gray.images.shape == (4, 1, 8, 8)
    mixed = em.load_dataset(_folder(tmp_path / "mixed", {"a": "L", "b": "RGB"}), image_size=8)
    assert mixed.images.shape == (4, 3, 8, 8)
    # a gray image in an RGB set is the same gray in every channel
    assert torch.equal(mixed.images[0, 0], mixed.images[0, 1]) and torch.equal(mixed.images[0, 0], mixed.images[0, 2])


# ----------------------------------------------------------------------------- seeds
def test_seeds_at_or_above_2_63_are_refused():
    assert em.seed_noise([2**63 - 1], (1, 4, 4)).shape == (1, 1, 4, 4)
    for s in (2**63, 2**64):
        with pytest.raises(em.InputError, match=rf"seed {s} is too large: seeds must be below 2\*\*63"):
            em.seed_noise([s], (1, 4, 4))


# ----------------------------------------------------------------------------- queries
@pytest.mark.parametrize("name", ["ideal", "els", "nearest", "wiener", "locality"])
def test_machines_refuse_queries_that_are_not_finite_or_too_large(name):
    torch.manual_seed(0)
    Y = torch.rand(6, 1, 5, 5) * 2 - 1
    m = em.make_machine(name, Y, **({"patch_size": 3} if name == "els" else {}))
    assert torch.isfinite(m.denoise(torch.full((2, 1, 5, 5), 1e3), 0.5)).all()
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.zeros(2, 1, 5, 5)
        x[1, 0, 2, 2] = bad
        with pytest.raises(em.InputError, match=r"x contains NaN or inf \(image 1\)"):
            m.denoise(x, 0.5)
    with pytest.raises(em.InputError, match=r"x is too large for torch.float32: image 0 has norm 5e\+30"):
        m.denoise(torch.full((2, 1, 5, 5), 1e30), 0.5)
    with pytest.raises(em.InputError, match=r"x is too large for torch.float64: image 0 has norm 5e\+160"):
        m.denoise(torch.full((1, 1, 5, 5), 1e160, dtype=torch.float64), 0.5)
    assert torch.isfinite(m.denoise(torch.full((1, 1, 5, 5), 1e18), 0.5)).all()  # norm 5e18: below the bound
    if name == "els":  # several sizes in one pass check their query the same way
        with pytest.raises(em.InputError, match="x is too large"):
            m.denoise_sizes(torch.full((1, 1, 5, 5), 1e30), 0.5, [3, 5])


# ----------------------------------------------------------------------------- classes by name
def test_a_class_is_named_by_its_folder(tmp_path):
    ds = em.load_dataset(_folder(tmp_path / "pets", {"cats": "RGB", "dogs": "RGB"}), image_size=8)
    assert ds.class_names == ["cats", "dogs"] and ds.classes == [0, 1]
    assert ds.subset(per_class=1).class_names == ["cats", "dogs"]
    assert em.load_dataset(tmp_path / "pets", keep_labels=False).class_names is None
    assert labels_for_seeds([0, 1], "dogs", ds.classes, names=ds.class_names) == [1, 1]
    assert labels_for_seeds([0, 1], "0", ds.classes, names=ds.class_names) == [0, 0]  # an index still works
    with pytest.raises(em.InputError, match="--class 'birds' is not a class: the classes are 0 'cats', 1 'dogs'"):
        labels_for_seeds([0], "birds", ds.classes, names=ds.class_names)
    with pytest.raises(em.InputError, match="--class must be 'cycle', 'none' or a class label"):
        labels_for_seeds([0], "dogs", ds.classes)  # a set without class names
    with pytest.raises(em.InputError, match="--class must be"):
        labels_for_seeds([0], 1.5, ds.classes)


def test_a_numbered_folder_that_is_not_its_index_is_ambiguous(tmp_path):
    ds = em.load_dataset(_folder(tmp_path / "digits", {"1": "L", "10": "L", "2": "L"}), image_size=8)
    assert ds.class_names == ["1", "10", "2"]
    assert labels_for_seeds([0], "10", ds.classes, names=ds.class_names) == [1]
    assert labels_for_seeds([0], 2, ds.classes, names=ds.class_names) == [2]  # an int is an index
    with pytest.raises(em.InputError, match="--class '1' is ambiguous: class 1 is folder '10', and folder '1' is "
                                            "class 0; give 0 for folder '1' or '10' for class 1"):
        labels_for_seeds([0], "1", ds.classes, names=ds.class_names)
