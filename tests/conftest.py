"""Shared fixtures: official-format CIFAR-10 batches written by the tests, and
the real data sets (../shared/datasets, or $CIFAR_REAL_DATA)."""

import os
import pickle
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

REAL_DATA = os.environ.get("CIFAR_REAL_DATA", os.path.join(ROOT, "..", "shared", "datasets"))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Each test gets its own HOME (so its own ~/.keras/datasets) and no
    CIFAR_DATA_DIR, so no test sees another's data or the user's."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CIFAR_DATA_DIR", raising=False)
    return home


@pytest.fixture(autouse=True)
def float32_by_default(monkeypatch):
    """Scripts default to bfloat16 on CPUs with bfloat16 instructions: the
    tests train in float32 on every CPU, so that their figures and
    tolerances hold anywhere (test_mixed_precision.py tests the default;
    scripts run in a subprocess get --no-mixed-precision)."""
    from cifarkit import devices
    monkeypatch.setattr(devices, "native_bfloat16", lambda: False)


@pytest.fixture(autouse=True)
def float32_policy():
    """A test that turns mixed precision on (a global setting) leaves float32
    behind for the next one."""
    yield
    import keras
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def real_home(tmp_path_factory):
    """One HOME for all real-data tests, so the archive is extracted once a run."""
    return tmp_path_factory.mktemp("real_home")


@pytest.fixture
def real_data(real_home, monkeypatch):
    """The real data sets; missing data is a failure in CI and a skip elsewhere."""
    monkeypatch.setenv("HOME", str(real_home))
    if not os.path.isfile(os.path.join(REAL_DATA, "cifar-10-python.tar.gz")):
        if os.environ.get("CI"):
            pytest.fail(f"real data sets not found at {REAL_DATA}")
        pytest.skip(f"real data sets not found at {REAL_DATA}")
    return REAL_DATA


SHORT_TEST_IMAGES = 2000


@pytest.fixture
def short_test_set(monkeypatch, real_data):
    """The real data sets with only the first SHORT_TEST_IMAGES test images
    (CIFAR-10 and Fashion-MNIST): a test figure in seconds, not minutes."""
    from cifarkit import datasets

    def shorten(loader):
        def load(data_dir=None):
            train, (x_test, y_test) = loader(data_dir)
            return train, (x_test[:SHORT_TEST_IMAGES], y_test[:SHORT_TEST_IMAGES])
        return load
    monkeypatch.setattr(datasets, "load_data", shorten(datasets.load_data))
    monkeypatch.setattr(datasets, "load_fashion_mnist", shorten(datasets.load_fashion_mnist))
    return real_data


def write_batch(path, data, labels, label="batch"):
    """A batch in the official format: a protocol-2 pickle with bytes keys."""
    batch = {b"batch_label": label.encode(), b"labels": [int(v) for v in labels],
             b"data": data, b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def write_meta(path, names=None):
    names = names or ["airplane", "automobile", "bird", "cat", "deer",
                      "dog", "frog", "horse", "ship", "truck"]
    with open(path, "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names],
                     b"num_cases_per_batch": 10000, b"num_vis": 3072}, f, protocol=2)


@pytest.fixture(scope="session")
def fake_cifar(tmp_path_factory):
    """A full-size CIFAR-10 in the official layout with random pixels, and the
    arrays it must load as. Returns (dir, (x_train, y_train), (x_test, y_test))."""
    root = tmp_path_factory.mktemp("fake_cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, size=(60000, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=60000).astype(np.uint8)
    for i in range(5):
        sl = slice(i * 10000, (i + 1) * 10000)
        write_batch(folder / f"data_batch_{i + 1}", rows[sl], labels[sl], f"training batch {i + 1} of 5")
    write_batch(folder / "test_batch", rows[50000:], labels[50000:], "testing batch 1 of 1")
    write_meta(folder / "batches.meta")
    # The official layout: channel-major rows, R then G then B planes.
    images = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return root, (images[:50000], labels[:50000, None]), (images[50000:], labels[50000:, None])


@pytest.fixture
def small_sets(monkeypatch):
    """Synthetic stand-ins for the readers: Fashion-MNIST (28x28, no channel
    axis, as its reader returns it) and CIFAR-100 with 100 or 20 classes."""
    from cifarkit import datasets
    from helpers import synthetic_cifar
    (x, y), (xt, yt) = synthetic_cifar(64, 32, size=28, channels=1)
    monkeypatch.setattr(datasets, "load_fashion_mnist",
                        lambda data_dir=None: ((x[..., 0], y.ravel()), (xt[..., 0], yt.ravel())))

    def cifar100(data_dir=None, label_mode="fine"):
        (a, b), (c, d) = synthetic_cifar(64, 32)
        classes = 100 if label_mode == "fine" else 20
        return (a, (b * 7) % classes), (c, (d * 7) % classes)
    monkeypatch.setattr(datasets, "load_cifar100", cifar100)
    monkeypatch.setattr(datasets, "load_cifar100_class_names",
                        lambda data_dir=None, label_mode="fine": tuple(
                            f"{label_mode}_{i}" for i in range(100 if label_mode == "fine" else 20)))
