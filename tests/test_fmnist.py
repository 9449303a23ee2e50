"""The bundled Fashion-MNIST subset and where fashion-mnist is looked for."""

import gzip

import numpy as np
import pytest
import torch

import elsmachine as em
from elsmachine.datasets import formats


def test_fmnist5k_is_class_balanced_padded_and_names_its_classes():
    ds = em.load_dataset("fmnist5k")
    assert ds.images.shape == (5000, 1, 32, 32) and ds.images.dtype == torch.float32
    assert torch.bincount(ds.labels).tolist() == [500] * 10
    assert float(ds.images.min()) == -1.0 and float(ds.images.max()) == 1.0
    assert bool((ds.images[:, :, :2] == -1).all())  # the padding rows are background
    assert ds.class_names[7] == "sneaker" and ds.describe()["name"] == "fmnist5k"
    assert em.load_dataset("mnist5k").fingerprint() != ds.fingerprint()


def _idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def test_fashion_mnist_is_found_where_debian_installs_it_and_says_how_to_get_it(tmp_path, monkeypatch):
    system = tmp_path / "usr-share"
    monkeypatch.setitem(formats.SYSTEM_ROOTS, "fashion-mnist", system)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ELSMACHINE_DATA", raising=False)
    with pytest.raises(em.InputError) as e:
        em.load_dataset("fashion-mnist")
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--root" in msg and "--download" in msg
    assert "\n" not in msg
    system.mkdir()
    rng = np.random.default_rng(0)
    _idx(system / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    _idx(system / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
    ds = em.load_dataset("fashion-mnist", per_class=1)
    assert len(ds) == 10 and ds.class_names[0] == "t-shirt" and ds.images.shape[-1] == 32
    from elsmachine.seeds import labels_for_seeds

    assert labels_for_seeds([0, 1], "sneaker", ds.classes, names=ds.class_names) == [7, 7]
