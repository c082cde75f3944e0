import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import struct
import tarfile
import threading

import numpy as np
import pytest

import load_data as L
from cifarkit import archives, datasets
from conftest import write_batch, write_meta


def make_archive(src_root, dest):
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        tar.add(os.path.join(src_root, "cifar-10-batches-py"), arcname="cifar-10-batches-py")
    return dest


@pytest.fixture(scope="module")
def fake_archive(fake_cifar, tmp_path_factory):
    root, train, test = fake_cifar
    d = tmp_path_factory.mktemp("archive")
    return make_archive(root, str(d / "cifar-10-python.tar.gz")), train, test


def assert_same(loaded, train, test):
    (x_train, y_train), (x_test, y_test) = loaded
    assert x_train.dtype == np.uint8 and x_train.shape == (50000, 32, 32, 3)
    assert x_test.dtype == np.uint8 and x_test.shape == (10000, 32, 32, 3)
    assert y_train.dtype == np.uint8 and y_train.shape == (50000, 1)
    assert y_test.dtype == np.uint8 and y_test.shape == (10000, 1)
    # np.array_equal: assert_array_equal takes seconds on 150 MB arrays.
    assert np.array_equal(x_train, train[0]) and np.array_equal(y_train, train[1])
    assert np.array_equal(x_test, test[0]) and np.array_equal(y_test, test[1])


# -- round trips ------------------------------------------------------------

def test_folder_round_trip(fake_cifar):
    root, train, test = fake_cifar
    assert_same(L.load_data(str(root)), train, test)


def test_pixel_layout_is_rgb_channels_last(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.zeros((10000, 3072), np.uint8)
    data[0, :1024] = 200          # red plane of image 0
    data[0, 1024 + 5] = 100       # green, row 0, column 5
    data[0, 2048 + 32 * 2 + 1] = 50  # blue, row 2, column 1
    for name in archives.CIFAR10_TRAIN_BATCHES + ["test_batch"]:
        write_batch(folder / name, data, [3] * 10000)
    write_meta(folder / "batches.meta")
    (x, y), _ = L.load_data(str(tmp_path))
    assert (x[0, :, :, 0] == 200).all()
    assert x[0, 0, 5, 1] == 100 and x[0, 0, 4, 1] == 0
    assert x[0, 2, 1, 2] == 50 and x[0, 1, 2, 2] == 0
    assert (y == 3).all()


def test_archive_is_extracted_once_into_the_cache(fake_archive, isolated_home, capsys):
    archive, train, test = fake_archive
    directory = os.path.dirname(archive)
    assert_same(L.load_data(directory), train, test)
    assert "Extracting" in capsys.readouterr().err
    # Extracted into the Keras cache, never beside a (possibly shared) archive.
    assert not os.path.exists(os.path.join(directory, "cifar-10-batches-py"))
    cached = list((isolated_home / ".keras" / "datasets").glob("cifar-10-from-*/cifar-10-batches-py"))
    assert len(cached) == 1
    L.load_data(directory)
    assert "Extracting" not in capsys.readouterr().err


def test_class_names_come_from_batches_meta(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"class{i}" for i in range(10)]
    write_meta(folder / "batches.meta", names)
    (folder / "test_batch").write_bytes(b"")
    assert L.load_class_names(str(tmp_path)) == tuple(names)


# -- search order -------------------------------------------------------------

def make_marked_dir(path):
    (path / "cifar-10-batches-py").mkdir(parents=True)
    (path / "cifar-10-batches-py" / "test_batch").write_bytes(b"")
    return str(path / "cifar-10-batches-py")


def test_search_order(tmp_path, isolated_home, monkeypatch):
    arg = make_marked_dir(tmp_path / "arg")
    env = make_marked_dir(tmp_path / "env")
    cache = make_marked_dir(isolated_home / ".keras" / "datasets")
    monkeypatch.setenv("CIFAR_DATA_DIR", str(tmp_path / "env"))
    assert L.find_cifar10(str(tmp_path / "arg")) == arg
    assert L.find_cifar10() == env
    # A folder the user names is the only one searched: no data there is an
    # error naming it, not a silent fall-through (or a download).
    (tmp_path / "empty").mkdir()
    with pytest.raises(L.DataError, match=r"empty: holds no CIFAR-10"):
        L.find_cifar10(str(tmp_path / "empty"))
    with pytest.raises(L.DataError, match=r"empty: holds no Fashion-MNIST"):
        L.find_fashion_mnist(str(tmp_path / "empty"))
    with pytest.raises(L.DataError, match=r"nowhere: no such data folder"):
        L.find_cifar10(str(tmp_path / "nowhere"))
    monkeypatch.delenv("CIFAR_DATA_DIR")
    assert L.find_cifar10() == cache


def test_keras_own_cache_layout_is_reused(isolated_home):
    keras_layout = isolated_home / ".keras" / "datasets" / "cifar-10-batches-py_extracted"
    found = make_marked_dir(keras_layout)
    assert L.find_cifar10() == found


# -- download -----------------------------------------------------------------

@contextlib.contextmanager
def http_server(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_download_good_archive(fake_archive, isolated_home, monkeypatch):
    archive, train, test = fake_archive
    with http_server(os.path.dirname(archive)) as url:
        monkeypatch.setattr(archives, "CIFAR10_URL", url + "cifar-10-python.tar.gz")
        monkeypatch.setattr(archives, "CIFAR10_MD5", archives.md5sum(archive))
        assert_same(L.load_data(), train, test)
    cache = isolated_home / ".keras" / "datasets"
    assert (cache / "cifar-10-python.tar.gz").is_file()
    assert (cache / "cifar-10-batches-py" / "test_batch").is_file()


def test_download_with_wrong_checksum_is_deleted(fake_archive, isolated_home, monkeypatch):
    archive, _, _ = fake_archive
    with http_server(os.path.dirname(archive)) as url:
        monkeypatch.setattr(archives, "CIFAR10_URL", url + "cifar-10-python.tar.gz")
        monkeypatch.setattr(archives, "CIFAR10_MD5", "0" * 32)
        with pytest.raises(L.DataError, match="MD5"):
            L.load_data()
    cache = isolated_home / ".keras" / "datasets"
    assert list(cache.iterdir()) == []


def test_offline_error_names_url_and_folder(isolated_home, monkeypatch):
    with http_server(str(isolated_home)) as url:
        pass  # closed again: nothing listens there now
    monkeypatch.setattr(archives, "CIFAR10_URL", url + "cifar-10-python.tar.gz")
    with pytest.raises(L.DataError) as err:
        L.load_data()
    message = str(err.value)
    assert url + "cifar-10-python.tar.gz" in message
    assert str(isolated_home / ".keras" / "datasets") in message
    assert "\n" not in message


def test_fashion_download_checks_md5(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    files = write_fashion(served)
    with http_server(str(served)) as url:
        monkeypatch.setattr(archives, "FASHION_MNIST_URL", url)
        monkeypatch.setattr(archives, "FASHION_MNIST_FILES", {
            name: (hashlib.md5((served / name).read_bytes()).hexdigest(), magic, shape)
            for name, (_, magic, shape) in archives.FASHION_MNIST_FILES.items()})
        (x, y), (xt, yt) = L.load_fashion_mnist()
    np.testing.assert_array_equal(x, files["train"][0])
    np.testing.assert_array_equal(yt, files["test"][1])


# -- safety -------------------------------------------------------------------

class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Exploit(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(L.DataError, match=r"data_batch_1.*refusing to load"):
        datasets.read_batch(str(folder / "data_batch_1"))
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins(tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({"x": eval}, protocol=2))
    with pytest.raises(L.DataError, match=r"refusing to load (__builtin__|builtins)\.eval"):
        datasets.read_pickle(str(path))


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink", "hardlink", "device"])
def test_archive_members_cannot_escape(tmp_path, kind, isolated_home):
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        payload = b"harmless"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
        if kind == "parent":
            bad = tarfile.TarInfo("cifar-10-batches-py/../../../escaped")
            bad.size = 4
            tar.addfile(bad, io.BytesIO(b"evil"))
        elif kind == "absolute":
            bad = tarfile.TarInfo(str(tmp_path / "escaped"))
            bad.size = 4
            tar.addfile(bad, io.BytesIO(b"evil"))
        elif kind == "symlink":
            bad = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(bad)
        elif kind == "hardlink":
            bad = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
            bad.type, bad.linkname = tarfile.LNKTYPE, "cifar-10-batches-py/test_batch"
            tar.addfile(bad)
        else:
            bad = tarfile.TarInfo("cifar-10-batches-py/dev")
            bad.type = tarfile.CHRTYPE
            tar.addfile(bad)
    with pytest.raises(L.DataError, match="refusing member"):
        L.load_data(str(archive.parent))
    assert not (tmp_path / "escaped").exists()
    # Nothing half-extracted is left behind to be picked up later.
    cache = isolated_home / ".keras" / "datasets"
    assert not list(cache.rglob("test_batch"))


# -- validation ---------------------------------------------------------------

def copy_fake(fake_cifar, tmp_path):
    root, _, _ = fake_cifar
    dest = tmp_path / "copy"
    shutil.copytree(root, dest)
    return dest / "cifar-10-batches-py"


def test_truncated_batch_names_the_file(fake_cifar, tmp_path):
    folder = copy_fake(fake_cifar, tmp_path)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[: 5_000_000])
    with pytest.raises(L.DataError) as err:
        L.load_data(str(folder.parent))
    assert "data_batch_3" in str(err.value) and "\n" not in str(err.value)


def test_corrupt_batch(fake_cifar, tmp_path):
    folder = copy_fake(fake_cifar, tmp_path)
    (folder / "test_batch").write_bytes(os.urandom(1000))
    with pytest.raises(L.DataError, match="test_batch"):
        L.load_data(str(folder.parent))


def test_missing_batch(fake_cifar, tmp_path):
    folder = copy_fake(fake_cifar, tmp_path)
    (folder / "data_batch_5").unlink()
    with pytest.raises(L.DataError, match="data_batch_5.*missing"):
        L.load_data(str(folder.parent))


@pytest.mark.parametrize("data,labels,match", [
    (np.zeros((9999, 3072), np.uint8), [0] * 9999, "'data' must be uint8"),
    (np.zeros((10000, 3072), np.float32), [0] * 10000, "'data' must be uint8"),
    (np.zeros((10000, 3072), np.uint8), [0] * 9999, "'labels' must be 10000"),
    (np.zeros((10000, 3072), np.uint8), [10] * 10000, "labels must be 0-9"),
])
def test_malformed_batch(tmp_path, data, labels, match):
    path = tmp_path / "data_batch_1"
    write_batch(path, data, labels)
    with pytest.raises(L.DataError, match=match):
        datasets.read_batch(str(path))


def test_corrupt_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b" + os.urandom(500))
    with pytest.raises(L.DataError, match="cifar-10-python.tar.gz"):
        L.load_data(str(tmp_path))


# -- Fashion-MNIST --------------------------------------------------------------

def idx_bytes(array, magic):
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(directory, **overrides):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 60000, dtype=np.uint8)
    xt, yt = x[:10000].copy(), y[:10000].copy()
    contents = {
        "train-images-idx3-ubyte.gz": idx_bytes(x, 2051),
        "train-labels-idx1-ubyte.gz": idx_bytes(y, 2049),
        "t10k-images-idx3-ubyte.gz": idx_bytes(xt, 2051),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(yt, 2049),
    }
    contents.update(overrides)
    for name, raw in contents.items():
        with gzip.open(os.path.join(directory, name), "wb", compresslevel=1) as f:
            f.write(raw)
    return {"train": (x, y), "test": (xt, yt)}


def test_fashion_mnist_round_trip(tmp_path):
    (tmp_path / "fashion-mnist").mkdir()
    expected = write_fashion(tmp_path / "fashion-mnist")
    (x, y), (xt, yt) = L.load_fashion_mnist(str(tmp_path))
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.uint8
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    np.testing.assert_array_equal(x, expected["train"][0])
    np.testing.assert_array_equal(yt, expected["test"][1])


def test_fashion_mnist_bad_magic(tmp_path):
    (tmp_path / "fashion-mnist").mkdir()
    labels = np.zeros(60000, np.uint8)
    write_fashion(tmp_path / "fashion-mnist", **{"train-labels-idx1-ubyte.gz": idx_bytes(labels, 2051)})
    with pytest.raises(L.DataError, match=r"train-labels-idx1-ubyte.gz: bad idx magic number"):
        L.load_fashion_mnist(str(tmp_path))


def test_fashion_mnist_truncated(tmp_path):
    (tmp_path / "fashion-mnist").mkdir()
    x = np.zeros((10000, 28, 28), np.uint8)
    write_fashion(tmp_path / "fashion-mnist", **{"t10k-images-idx3-ubyte.gz": idx_bytes(x, 2051)[:-100]})
    with pytest.raises(L.DataError, match=r"t10k-images-idx3-ubyte.gz: .*truncated"):
        L.load_fashion_mnist(str(tmp_path))


# -- command line ---------------------------------------------------------------

def test_show_writes_a_grid(fake_cifar, tmp_path, capsys):
    import cv2
    root, _, _ = fake_cifar
    out = tmp_path / "grid.png"
    assert L.main(["--data-dir", str(root), "--show", "10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "airplane" in printed and "per-channel mean" in printed
    grid = cv2.imread(str(out))
    # 10 images, 8 to a row: 2 rows of 96x96 images each with an 18 px caption.
    assert grid.shape == (2 * (96 + 18), 8 * 96, 3)


def test_cli_error_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"junk")
    write_meta(tmp_path / "cifar-10-batches-py" / "batches.meta")
    assert L.main(["--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


# -- the real data sets ----------------------------------------------------------

def test_real_cifar10(real_data):
    (x, y), (xt, yt) = L.load_data(real_data)
    assert x.shape == (50000, 32, 32, 3) and xt.shape == (10000, 32, 32, 3)
    assert (np.bincount(y.ravel()) == 5000).all()
    assert (np.bincount(yt.ravel()) == 1000).all()
    mean = x.reshape(-1, 3).mean(axis=0) / 255
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=0.0005)
    assert L.load_class_names(real_data) == L.CIFAR10_CLASSES


def test_real_fashion_mnist(real_data):
    (x, y), (xt, yt) = L.load_fashion_mnist(real_data)
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert (np.bincount(y) == 6000).all() and (np.bincount(yt) == 1000).all()
    assert abs(x.mean() / 255 - 0.2860) < 0.0005
