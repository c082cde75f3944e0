"""CIFAR-100 through the same safe reader as CIFAR-10, from an archive in the
official "python version" layout that the tests build."""

import os
import pickle
import tarfile

import numpy as np
import pytest

import load_data as L

FINE = [f"fine_{i}" for i in range(100)]
COARSE = [f"coarse_{i}" for i in range(20)]


def write_split(path, rows, rng, override):
    split = {b"filenames": [f"img_{i}.png".encode() for i in range(rows)], b"batch_label": b"training",
             b"fine_labels": rng.integers(0, 100, rows).tolist(), b"coarse_labels": rng.integers(0, 20, rows).tolist(),
             b"data": np.tile(rng.integers(0, 256, (1, 3072), dtype=np.uint8), (rows, 1))}
    split[b"data"][:, 0] = np.arange(rows) % 251  # rows that differ, so their order is checked
    split.update(override or {})
    with open(path, "wb") as f:
        pickle.dump(split, f, protocol=2)
    return split


def build(root, archive_name="cifar-100-python.tar.gz", train=None, test=None, meta=True):
    """A cifar-100-python/ folder and its tar.gz archive under `root`; returns (archive, train, test)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written_train = write_split(folder / "train", 50000, rng, train)
    written_test = write_split(folder / "test", 10000, rng, test)
    if meta:
        with open(folder / "meta", "wb") as f:
            pickle.dump({b"fine_label_names": [n.encode() for n in FINE],
                         b"coarse_label_names": [n.encode() for n in COARSE]}, f, protocol=2)
    archive = root / archive_name
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname="cifar-100-python")
    return archive, written_train, written_test


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory):
    root = tmp_path_factory.mktemp("c100")
    archive, train, test = build(root / "src")
    data = root / "data"
    data.mkdir()
    os.replace(archive, data / "cifar-100-python.tar.gz")  # the archive alone, as a download leaves it
    return data, train, test


@pytest.mark.parametrize("label_mode,key,classes", [("fine", b"fine_labels", 100), ("coarse", b"coarse_labels", 20)])
def test_archive_loads_with_the_right_shapes_and_labels(cifar100, label_mode, key, classes):
    data, train, test = cifar100
    (x, y), (xt, yt) = L.load_cifar100(str(data), label_mode=label_mode)
    assert x.shape == (50000, 32, 32, 3) and xt.shape == (10000, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (50000, 1) and yt.shape == (10000, 1) and y.dtype == np.uint8
    assert 0 <= y.min() and y.max() == classes - 1 and yt.max() <= classes - 1
    np.testing.assert_array_equal(y.ravel(), train[key])
    np.testing.assert_array_equal(yt.ravel(), test[key])
    # The official row layout: 1024 red, then green, then blue values.
    np.testing.assert_array_equal(x[:, 0, 0, 0], train[b"data"][:, 0])
    np.testing.assert_array_equal(xt[7, 0, 0], test[b"data"][7, [0, 1024, 2048]])
    names = L.load_cifar100_class_names(str(data), label_mode)
    assert list(names) == (FINE if label_mode == "fine" else COARSE)


def test_archive_is_extracted_into_the_cache_not_beside_it(cifar100, isolated_home):
    data, _, _ = cifar100
    L.load_cifar100(str(data))
    assert not (data / "cifar-100-python").exists()
    assert list((isolated_home / ".keras" / "datasets").glob("cifar-100-from-*/cifar-100-python/test"))


def test_unknown_label_mode_is_refused(cifar100):
    with pytest.raises(L.DataError, match="label_mode must be 'fine'"):
        L.load_cifar100(str(cifar100[0]), label_mode="medium")


@pytest.mark.parametrize("part,override,match", [
    ("train", {b"fine_labels": [100] * 50000}, r"train: fine_labels must be 0-99"),
    ("test", {b"data": np.zeros((9999, 3072), np.uint8)}, r"test: 'data' must be uint8 \(10000, 3072\)"),
    ("train", {b"coarse_labels": None}, None),  # only a coarse load must notice
])
def test_bad_variants_are_refused_naming_the_file(tmp_path, part, override, match):
    build(tmp_path, **{part: override})
    folder = str(tmp_path)
    if match:
        with pytest.raises(L.DataError, match=match):
            L.load_cifar100(folder)
    else:
        L.load_cifar100(folder)
        with pytest.raises(L.DataError, match=r"train: 'coarse_labels' must be 50000 integers"):
            L.load_cifar100(folder, label_mode="coarse")


def test_missing_meta_and_code_in_a_pickle_are_refused(tmp_path):
    build(tmp_path / "a", meta=False)
    with pytest.raises(L.DataError, match=r"meta: file is missing"):
        L.load_cifar100(str(tmp_path / "a"))

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    build(tmp_path / "b")
    with open(tmp_path / "b" / "cifar-100-python" / "test", "wb") as f:
        pickle.dump({b"data": Exploit()}, f, protocol=2)
    with pytest.raises(L.DataError, match=r"refusing to load"):
        L.load_cifar100(str(tmp_path / "b"))
    assert not (tmp_path / "pwned").exists()


def test_an_archive_with_a_link_is_refused(tmp_path, isolated_home):
    (tmp_path / "src").mkdir()
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-100-python/test")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(L.DataError, match=r"refusing member 'cifar-100-python/test'"):
        L.load_cifar100(str(tmp_path))


def test_a_named_folder_without_cifar100_is_an_error_naming_it(tmp_path):
    with pytest.raises(L.DataError, match=r"holds no CIFAR-100 \(cifar-100-python/ or cifar-100-python.tar.gz\)"):
        L.load_cifar100(str(tmp_path))
