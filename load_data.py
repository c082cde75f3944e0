"""CIFAR-10 and Fashion-MNIST readers: drop-in replacements for `keras.datasets`.

`load_data()` returns exactly what `keras.datasets.cifar10.load_data()` does
(uint8 images `(N, 32, 32, 3)` RGB channels-last, uint8 labels `(N, 1)`), read
from the official "CIFAR-10 python version" batches. `load_fashion_mnist()`
does the same for the four official Fashion-MNIST idx files.

Where the data is looked for: the `data_dir` argument (the scripts'
`--data-dir`) alone when it is given (an error naming it if the data is not
there); otherwise the environment variable `CIFAR_DATA_DIR`, then
`~/.keras/datasets`, Keras's own cache.
A folder may hold the extracted `cifar-10-batches-py/`, the
`cifar-10-python.tar.gz` archive (extracted once, safely, into the Keras
cache), or a
`fashion-mnist/` folder with the idx `.gz` files. If none holds the data, the
official files are downloaded over HTTPS into `~/.keras/datasets` and checked
against the official MD5 before use. A local copy is never checked against
the official checksum (repacked copies are common and legitimate).

The batches are pickles; they are read with a restricted unpickler that only
builds dicts, lists, strings, numbers and NumPy arrays, so a crafted file
cannot run code. Every file is validated; any problem is one `DataError`
naming the file.

Command line:
  python load_data.py [--dataset cifar10|fashion_mnist] [--data-dir DIR]
                      [--show N] [--out FILE]
"""

import argparse
import gzip
import hashlib
import os
import pickle
import shutil
import ssl
import struct
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request

import numpy as np

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_LABELS = {"fine": ("fine_labels", "fine_label_names", 100),  # label_mode: (key, names key, classes)
                   "coarse": ("coarse_labels", "coarse_label_names", 20)}
# Per archive folder: the name its extraction folder starts with, and the file that marks it complete.
CIFAR_SETS = {CIFAR10_FOLDER: ("cifar-10", "test_batch"), CIFAR100_FOLDER: ("cifar-100", "test")}

# Keras's HTTPS mirror of the official Zalando files (same bytes, same MD5s).
FASHION_MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
FASHION_MNIST_FOLDER = "fashion-mnist"
FASHION_MNIST_FILES = {  # name: (official MD5, idx magic, shape of one split)
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", 2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", 2049, (60000,)),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", 2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", 2049, (10000,)),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

BATCH_SIZE = 10000
IMAGE_BYTES = 32 * 32 * 3


class DataError(Exception):
    """A data file is missing, unsafe or malformed (the message names it)."""


# --------------------------------------------------------------------------
# Where to look
# --------------------------------------------------------------------------

def keras_cache_dir():
    return os.path.join(os.path.expanduser("~"), ".keras", "datasets")


def search_dirs(data_dir=None):
    """The folders searched, in order: argument, $CIFAR_DATA_DIR, Keras cache.
    A folder the user names (`data_dir`) is the only one searched: it must
    exist, and what it lacks is not looked for elsewhere (see `_not_in`)."""
    if data_dir:
        folder = os.path.abspath(os.path.expanduser(data_dir))
        if not os.path.isdir(folder):
            raise DataError(f"{data_dir}: no such data folder (leave out --data-dir to use $CIFAR_DATA_DIR "
                            f"or ~/.keras/datasets)")
        return [folder]
    dirs = [os.environ.get("CIFAR_DATA_DIR"), keras_cache_dir()]
    return [os.path.abspath(os.path.expanduser(d)) for d in dirs if d]


def _not_in(data_dir, wanted):
    return DataError(f"{data_dir}: holds no {wanted}; put it there, or leave out --data-dir to use "
                     f"$CIFAR_DATA_DIR or ~/.keras/datasets (downloading it if need be)")


def _batches_folder_in(directory, name=CIFAR10_FOLDER):
    """An extracted folder `name` (cifar-10-batches-py, cifar-100-python)
    inside `directory`, or None."""
    marker = CIFAR_SETS[name][1]
    candidates = [
        os.path.join(directory, name),
        directory,  # the user pointed straight at the folder
        # Keras 3's own cache layout after `keras.datasets.cifar10.load_data()`.
        os.path.join(directory, name + "_extracted", name),
    ]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, marker)):
            return folder
    return None


def _find_cifar(data_dir, name, archive_name, url, md5, what):
    """Path of an extracted CIFAR folder, extracting or downloading the
    archive if that is what it takes."""
    for directory in search_dirs(data_dir):
        folder = _batches_folder_in(directory, name)
        if folder:
            return folder
        archive = os.path.join(directory, archive_name)
        if os.path.isfile(archive):
            return extract_archive(archive, name)
    if data_dir:
        raise _not_in(data_dir, f"{what} ({name}/ or {archive_name})")
    archive = download(url, os.path.join(keras_cache_dir(), archive_name), md5)
    return extract_archive(archive, name)


def find_cifar10(data_dir=None):
    """Path of an extracted `cifar-10-batches-py` folder."""
    return _find_cifar(data_dir, CIFAR10_FOLDER, CIFAR10_ARCHIVE, CIFAR10_URL, CIFAR10_MD5, "CIFAR-10")


def find_cifar100(data_dir=None):
    """Path of an extracted `cifar-100-python` folder."""
    return _find_cifar(data_dir, CIFAR100_FOLDER, CIFAR100_ARCHIVE, CIFAR100_URL, CIFAR100_MD5, "CIFAR-100")


# --------------------------------------------------------------------------
# Safe extraction
# --------------------------------------------------------------------------

def _extraction_target(archive, name=CIFAR10_FOLDER):
    """Where an archive is extracted: beside it when it lives in the Keras cache
    (a download), otherwise into the cache under a name tied to this archive,
    so that shared or read-only data folders are never written to."""
    archive = os.path.abspath(archive)
    cache = keras_cache_dir()
    if os.path.dirname(archive) == cache:
        return os.path.join(cache, name)
    return os.path.join(cache, f"{CIFAR_SETS[name][0]}-from-" + _archive_stamp(archive)[:16], name)


def _archive_stamp(archive):
    st = os.stat(archive)
    key = f"{os.path.abspath(archive)}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()


def check_members(archive, members, target):
    """Refuse anything that could land outside `target`: absolute paths, `..`,
    links, devices, FIFOs. Raises DataError naming the member."""
    root = os.path.realpath(target)
    for m in members:
        name = m.name
        if not (m.isfile() or m.isdir()):
            raise DataError(f"{archive}: refusing member {name!r}: links, devices "
                            "and other special files are not allowed")
        if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
            raise DataError(f"{archive}: refusing member {name!r}: it would land "
                            "outside the extraction folder")
        dest = os.path.realpath(os.path.join(root, name))
        if dest != root and not dest.startswith(root + os.sep):
            raise DataError(f"{archive}: refusing member {name!r}: it would land "
                            "outside the extraction folder")


def extract_archive(archive, name=CIFAR10_FOLDER):
    """Extract a CIFAR archive once; return its folder `name`."""
    target = _extraction_target(archive, name)
    if os.path.isfile(os.path.join(target, CIFAR_SETS[name][1])):
        return target
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    print(f"Extracting {archive} to {parent} (once) ...", file=sys.stderr)
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=parent)
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                check_members(archive, members, tmp)
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError, zlib_error()) as e:
            raise DataError(f"{archive}: not a readable tar.gz archive ({e}); "
                            "delete it and download it again") from None
        extracted = os.path.join(tmp, name)
        if not os.path.isdir(extracted):
            raise DataError(f"{archive}: holds no {name}/ folder; is it "
                            f"the {CIFAR_SETS[name][0].upper()} python version?")
        if os.path.isdir(target):  # a partial copy from an earlier failure
            shutil.rmtree(target)
        os.replace(extracted, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def zlib_error():
    import zlib
    return zlib.error


# --------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------

def md5sum(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url, dest, md5):
    """Download `url` to `dest` with a progress bar and check its MD5.
    A failed or mismatching download is deleted and reported."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    part = dest + ".part"
    print(f"Downloading {url} -> {dest}", file=sys.stderr)
    try:
        context = ssl.create_default_context()  # certificate checks stay on
        with urllib.request.urlopen(url, timeout=60, context=context) as response, \
                open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while True:
                block = response.read(1 << 20)
                if not block:
                    break
                out.write(block)
                done += len(block)
                _progress(done, total)
        print(file=sys.stderr)
    except (urllib.error.URLError, OSError) as e:
        _remove(part)
        raise DataError(
            f"could not download {url} ({getattr(e, 'reason', e)}). Download it by "
            f"hand and put {os.path.basename(dest)} in {os.path.dirname(dest)}, or "
            "point --data-dir / CIFAR_DATA_DIR at a folder that holds it") from None
    got = md5sum(part)
    if got != md5:
        _remove(part)
        raise DataError(f"downloaded {url} has MD5 {got}, expected {md5}; the file "
                        "was deleted. Try again, or download it by hand")
    os.replace(part, dest)
    return dest


def _progress(done, total, width=30):
    if total:
        filled = int(width * done / total)
        sys.stderr.write(f"\r[{'=' * filled}{'.' * (width - filled)}] "
                         f"{done / 2**20:6.1f}/{total / 2**20:.1f} MiB")
    else:
        sys.stderr.write(f"\r{done / 2**20:6.1f} MiB")
    sys.stderr.flush()


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------

def _reconstruct_array(*args):
    from numpy._core.multiarray import _reconstruct
    return _reconstruct(*args)


def _encode(text, encoding="latin1"):
    # Python 3 pickles of bytes at protocol 2 go through codecs.encode.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("codecs.encode with unexpected arguments")
    return text.encode("latin1")


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Builds only what the CIFAR batches hold: dict, list, str/bytes, int and
    NumPy arrays and dtypes. Any other global is refused before it is built."""

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not something a CIFAR "
                "batch holds") from None


def read_pickle(path):
    """Unpickle a CIFAR batch safely; keys come back as str."""
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing") from None
    except Exception as e:  # truncated, corrupt, or asks for a forbidden object
        raise DataError(f"{path}: not a valid CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a valid CIFAR batch (holds a "
                        f"{type(obj).__name__}, expected a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path):
    """One validated batch: uint8 data (10000, 3072) and labels 0-9."""
    return _validated(path, read_pickle(path), BATCH_SIZE, "labels", 10)


def _validated(path, contents, rows, key, classes):
    """`contents["data"]` as uint8 (rows, 3072) and `contents[key]` as
    `rows` labels 0..classes-1, or a DataError naming the file."""
    data, labels = contents.get("data"), contents.get(key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (rows, IMAGE_BYTES):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be uint8 ({rows}, {IMAGE_BYTES}), got {got}")
    try:
        labels = np.asarray(labels)
        ok = labels.shape == (rows,) and np.issubdtype(labels.dtype, np.integer)
    except Exception:
        ok = False
    if not ok:
        raise DataError(f"{path}: '{key}' must be {rows} integers")
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(f"{path}: {key} must be 0-{classes - 1}, found {labels.min()}..{labels.max()}")
    return data, labels.astype(np.uint8)


def read_class_names(folder):
    path = os.path.join(folder, "batches.meta")
    meta = read_pickle(path)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != 10 or \
            not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"{path}: 'label_names' must be a list of 10 names")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)


def _to_images(data, out=None):
    """Rows of 1024 red, 1024 green, 1024 blue values to (N, 32, 32, 3).
    Copying one channel at a time is about 5x faster than a 4-D transpose."""
    if out is None:
        out = np.empty((len(data), 32, 32, 3), np.uint8)
    pixels = out.reshape(len(data), 1024, 3)
    for channel in range(3):
        pixels[:, :, channel] = data[:, channel * 1024:(channel + 1) * 1024]
    return out


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------

def load_data(data_dir=None):
    """CIFAR-10 as `keras.datasets.cifar10.load_data()` returns it:
    `(x_train, y_train), (x_test, y_test)`, uint8 (50000|10000, 32, 32, 3) RGB
    and uint8 labels (N, 1)."""
    folder = find_cifar10(data_dir)
    read_class_names(folder)  # validates batches.meta as well
    x_train = np.empty((len(CIFAR10_TRAIN_BATCHES) * BATCH_SIZE, 32, 32, 3), np.uint8)
    y_train = np.empty((len(CIFAR10_TRAIN_BATCHES) * BATCH_SIZE, 1), np.uint8)
    for i, name in enumerate(CIFAR10_TRAIN_BATCHES):
        data, labels = read_batch(os.path.join(folder, name))
        rows = slice(i * BATCH_SIZE, (i + 1) * BATCH_SIZE)
        _to_images(data, out=x_train[rows])
        y_train[rows, 0] = labels
    x_test, y_test = read_batch(os.path.join(folder, "test_batch"))
    x_test = _to_images(x_test)
    return (x_train, y_train), (x_test, y_test.reshape(-1, 1))


def load_class_names(data_dir=None):
    """The ten class names from `batches.meta`."""
    return read_class_names(find_cifar10(data_dir))


def read_cifar100_split(path, rows, label_mode):
    """One validated CIFAR-100 file (`train` or `test`): uint8 data
    (rows, 3072) and the fine (0-99) or coarse (0-19) labels."""
    key, _, classes = CIFAR100_LABELS[label_mode]
    return _validated(path, read_pickle(path), rows, key, classes)


def _label_mode(label_mode):
    if label_mode not in CIFAR100_LABELS:
        raise DataError(f"label_mode must be 'fine' (100 classes) or 'coarse' (20), got {label_mode!r}")
    return label_mode


def load_cifar100(data_dir=None, label_mode="fine"):
    """CIFAR-100 as `keras.datasets.cifar100.load_data(label_mode)` returns it:
    uint8 images (50000|10000, 32, 32, 3) RGB and uint8 labels (N, 1), fine
    (100 classes) or coarse (20 superclasses)."""
    _label_mode(label_mode)
    folder = find_cifar100(data_dir)
    load_cifar100_class_names(data_dir, label_mode)  # validates meta as well
    (x, y), (xt, yt) = (read_cifar100_split(os.path.join(folder, name), rows, label_mode)
                        for name, rows in (("train", 50000), ("test", 10000)))
    return (_to_images(x), y.reshape(-1, 1)), (_to_images(xt), yt.reshape(-1, 1))


def load_cifar100_class_names(data_dir=None, label_mode="fine"):
    """The 100 fine or 20 coarse class names, from `meta`."""
    _, key, classes = CIFAR100_LABELS[_label_mode(label_mode)]
    path = os.path.join(find_cifar100(data_dir), "meta")
    names = read_pickle(path).get(key)
    if not isinstance(names, list) or len(names) != classes or \
            not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"{path}: '{key}' must be a list of {classes} names")
    return tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)


def _fashion_folder_in(directory):
    folder = os.path.join(directory, FASHION_MNIST_FOLDER)
    if all(os.path.isfile(os.path.join(folder, f)) for f in FASHION_MNIST_FILES):
        return folder
    return None


def find_fashion_mnist(data_dir=None):
    for directory in search_dirs(data_dir):
        folder = _fashion_folder_in(directory)
        if folder:
            return folder
    if data_dir:
        raise _not_in(data_dir, f"Fashion-MNIST ({FASHION_MNIST_FOLDER}/ with its four idx .gz files)")
    folder = os.path.join(keras_cache_dir(), FASHION_MNIST_FOLDER)
    for name, (md5, _, _) in FASHION_MNIST_FILES.items():
        if not os.path.isfile(os.path.join(folder, name)):
            download(FASHION_MNIST_URL + name, os.path.join(folder, name), md5)
    return folder


def read_idx(path, magic, shape):
    """One idx `.gz` file, checked for its magic number and sizes."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing") from None
    except (OSError, EOFError, zlib_error()) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an idx file")
    (got_magic,) = struct.unpack(">I", raw[:4])
    if got_magic != magic:
        raise DataError(f"{path}: bad idx magic number {got_magic:#010x}, expected {magic:#010x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    if tuple(dims) != tuple(shape):
        raise DataError(f"{path}: idx dimensions {tuple(dims)}, expected {tuple(shape)}")
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes after decompression, expected {expected} (truncated?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def load_fashion_mnist(data_dir=None):
    """Fashion-MNIST as `keras.datasets.fashion_mnist.load_data()` returns it:
    uint8 (60000|10000, 28, 28) images and uint8 (N,) labels."""
    folder = find_fashion_mnist(data_dir)
    arrays = {}
    for name, (_, magic, shape) in FASHION_MNIST_FILES.items():
        arrays[name] = read_idx(os.path.join(folder, name), magic, shape)
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        if arrays[name].max() > 9:
            raise DataError(f"{os.path.join(folder, name)}: labels must be 0-9")
    return ((arrays["train-images-idx3-ubyte.gz"], arrays["train-labels-idx1-ubyte.gz"]),
            (arrays["t10k-images-idx3-ubyte.gz"], arrays["t10k-labels-idx1-ubyte.gz"]))


SHAPES = {  # data set: (image shape, number of classes)
    "cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100), "cifar100_coarse": ((32, 32, 3), 20),
    "fashion_mnist": ((28, 28, 1), 10),
}
DATASETS = tuple(SHAPES)


def load(name, data_dir=None, image_size=32, color="rgb", stream=None):
    """A data set by name, or a folder of images (see `load_folder`; `stream`
    as there), the same way for all: `(x_train, y_train), (x_test, y_test),
    class names`, images always (N, height, width, channels) uint8
    (Fashion-MNIST gets its channel axis; a streamed folder gives ImageFiles),
    labels (N, 1)."""
    return load_source(name, data_dir, image_size, color, stream)[:3]


def load_source(name, data_dir=None, image_size=32, color="rgb", stream=None):
    """`load`'s three items and a fourth, what the data is (a JSON-ready
    dict that training stores in every checkpoint): `dataset` (the data
    set's name, or the folder's absolute path), `image_shape`,
    `class_names`, `test_split` (how the test set was made) and the counts;
    for a folder also `image_size`, `color`, the held-out `test_fraction`
    and `split_seed`, a digest of the test files and the files left alone."""
    if name not in DATASETS and os.path.isdir(name):
        return load_folder_source(name, image_size, color, stream=stream)
    if name == "cifar10":
        (x, y), (xt, yt) = load_data(data_dir)
        names = CIFAR10_CLASSES
    elif name in ("cifar100", "cifar100_coarse"):
        mode = "coarse" if name.endswith("coarse") else "fine"
        (x, y), (xt, yt) = load_cifar100(data_dir, mode)
        names = load_cifar100_class_names(data_dir, mode)
    elif name == "fashion_mnist":
        (x, y), (xt, yt) = load_fashion_mnist(data_dir)
        (x, y), (xt, yt) = (x[..., None], y.reshape(-1, 1)), (xt[..., None], yt.reshape(-1, 1))
        names = FASHION_MNIST_CLASSES
    else:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}, or a folder of images")
    source = {"dataset": name, "image_shape": [int(d) for d in x.shape[1:]], "class_names": list(names),
              "test_split": "the data set's own test set", "train_images": int(len(x)), "test_images": int(len(xt))}
    return (x, y), (xt, yt), names, source


def shape_of(name, image_size=32, color="rgb"):
    """(image shape, number of classes) of a data set or a folder, without reading its images."""
    if name in SHAPES:
        return SHAPES[name]
    classes, _, _ = _class_folders(_folder_layout(name)[0])
    return (image_size, image_size, 3 if color == "rgb" else 1), len(classes)


def label(name):
    """What files of a run on `name` are named after: the data set, or the folder's name."""
    return name if name in SHAPES else os.path.basename(os.path.normpath(name))


# --------------------------------------------------------------------------
# A folder of images: one subfolder per class (or train/ and test/, each so)
# --------------------------------------------------------------------------

# The files a folder's images are, by extension (any case): the formats OpenCV
# reads (EXR is off in OpenCV's builds, HEIC it cannot read). Anything else
# (Thumbs.db, desktop.ini, a README, .txt notes) is left alone and counted;
# hidden files and folders (.DS_Store, .thumbnails/) are not even counted.
IMAGE_EXTENSIONS = (".bmp", ".dib", ".gif", ".jpg", ".jpeg", ".jpe", ".jp2", ".png", ".webp", ".avif",
                    ".pbm", ".pgm", ".ppm", ".pnm", ".tif", ".tiff", ".sr", ".ras")
CHECK_THREADS = 8  # threads decoding a folder's images (OpenCV releases Python's lock while it decodes)


def is_image_name(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _visible(folder):
    """The sorted names in `folder` that are not hidden (no leading dot)."""
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def _folder_layout(root):
    """(folder of the training classes, folder of the test classes or None)."""
    if os.path.isdir(os.path.join(root, "train")):
        test = os.path.join(root, "test")
        return os.path.join(root, "train"), (test if os.path.isdir(test) else None)
    return root, None


def _class_folders(root):
    """Sorted class names, {class: sorted image files} and the other
    (non-hidden) entries, left alone, of a folder with one subfolder per
    class; a class without images, or fewer than two classes, is an error."""
    entries = _visible(root)
    classes = [d for d in entries if os.path.isdir(os.path.join(root, d))]
    others = [os.path.join(root, e) for e in entries if e not in classes]
    if len(classes) < 2:
        raise DataError(f"{root}: {len(classes)} class folder(s); a data set folder needs one subfolder per "
                        f"class, at least two (or train/ and test/, each so)")
    files = {}
    for name in classes:
        folder = os.path.join(root, name)
        images, rest = [], []
        for entry in _visible(folder):
            path = os.path.join(folder, entry)
            (images if is_image_name(entry) and os.path.isfile(path) else rest).append(path)
        if not images:
            held = f" (no image files; only {', '.join(os.path.basename(p) for p in rest[:3])}" \
                   f"{', ...' if len(rest) > 3 else ''})" if rest else ""
            raise DataError(f"{folder}: empty class folder{held}; put its images there or remove it")
        files[name], others = images, others + rest
    return classes, files, others


def read_image_file(path, size, channels):
    """One image file of any format OpenCV reads, as uint8 (size, size,
    channels), RGB when colour, resized with area interpolation."""
    import cv2
    image = cv2.imread(path, cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataError(f"{path}: not an image OpenCV can read; remove it from the folder")
    if channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image.reshape(size, size, channels)


class ImageFiles:
    """Image files read from disk only when asked for: what a folder too large
    for memory gives in place of its (N, size, size, channels) uint8 array.
    Slicing (`files[:1000]`, `files[-200:]`) gives ImageFiles again, reading
    nothing; `read(indices)` reads those images into an array."""

    def __init__(self, paths, size, channels):
        self.paths, self.size, self.channels = list(paths), size, channels

    @property
    def shape(self):
        return (len(self.paths), self.size, self.size, self.channels)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key):
        if not isinstance(key, slice):
            raise TypeError("ImageFiles are sliced (files[a:b]) or read (files.read(indices))")
        return ImageFiles(self.paths[key], self.size, self.channels)

    def read(self, indices):
        x = np.empty((len(indices), self.size, self.size, self.channels), np.uint8)
        for i, j in enumerate(indices):
            x[i] = read_image_file(self.paths[j], self.size, self.channels)
        return x

    def __repr__(self):
        return f"ImageFiles({len(self)} images of {self.size}x{self.size}x{self.channels}, read from disk)"


CHUNK = 1024  # images held at once by a pass over a data set (its mean)


def chunks(images, size=None):
    """The images (an array or ImageFiles) as successive uint8 arrays of at
    most `size` (CHUNK), so a pass over them never holds more than that."""
    size = size or CHUNK
    for start in range(0, len(images), size):
        stop = min(start + size, len(images))
        yield images.read(range(start, stop)) if isinstance(images, ImageFiles) else images[start:stop]


def pixel_mean(images):
    """The per-pixel mean image (float64), in one pass of chunks."""
    total = np.zeros(images.shape[1:], np.float64)
    for chunk in chunks(images):
        total += chunk.sum(axis=0, dtype=np.float64)
    return total / len(images)


def memory_available():
    """Bytes of memory free now (Linux; elsewhere None)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def decode_all(paths, size, channels, keep=True):
    """Decode every image file, in CHECK_THREADS threads: (uint8 array of
    them all, or None when not `keep`; the paths OpenCV could not decode).
    Not keeping is the check a streamed folder gets before training: every
    file decoded once (not resized), nothing held."""
    import cv2
    from concurrent.futures import ThreadPoolExecutor
    flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    x = np.empty((len(paths), size, size, channels), np.uint8) if keep else None

    def part(start):
        bad = []
        for i in range(start, min(start + 256, len(paths))):
            if keep:
                try:
                    x[i] = read_image_file(paths[i], size, channels)
                except DataError:
                    bad.append(paths[i])
            elif cv2.imread(paths[i], flag) is None:
                bad.append(paths[i])
        return bad
    with ThreadPoolExecutor(max(1, min(CHECK_THREADS, os.cpu_count() or 1))) as pool:
        bad = [p for found in pool.map(part, range(0, len(paths), 256)) for p in found]
    return x, bad


class UndecodableImages(DataError):
    """Image files (by extension) OpenCV cannot decode: `paths`, all of them;
    the message names the first and counts the others."""

    def __init__(self, paths, root):
        self.paths = sorted(paths)
        first, rest = self.paths[0], self.paths[1:]
        more = f" (and {len(rest)} more: {', '.join(os.path.relpath(p, root) for p in rest[:3])}" \
               f"{', ...' if len(rest) > 3 else ''})" if rest else ""
        super().__init__(f"{first}: not an image OpenCV can read{more}; remove {'them' if rest else 'it'} "
                         f"from the folder")


def _stream_needed(count, image_size, channels, root, file=None):
    """Whether `count` images would take more than half the memory free now
    (and say so, on `file`: standard output by default)."""
    need, free = count * image_size * image_size * channels, memory_available()
    if free is None or need <= free / 2:
        return False
    print(f"{root}: {count} images of {image_size}x{image_size}x{channels} would take "
          f"{need / 2**30:.1f} GiB of the {free / 2**30:.1f} GiB free: streaming them from disk", file=file)
    return True


class FolderSplit:
    """A folder of images as files, nothing read: `root/<class>/*` (then
    `test_fraction` of each class, chosen with `seed`, is held out as the
    test set) or `root/train/<class>/*` and `root/test/<class>/*`. The split
    depends on nothing but the folder's file names, the fraction and the
    seed, so it is made again exactly from a checkpoint's run metadata.

    `classes`; `train` and `test`: (paths, labels), the training ones in a
    seeded order that mixes the classes (for --subset and --val-split);
    `test_split`: "test/" or "held out"; `left_alone`: the other non-hidden
    files and folders (Thumbs.db, desktop.ini, a README, ...)."""

    def __init__(self, root, test_fraction=0.2, seed=0):
        self.root, self.test_fraction, self.seed = os.path.abspath(root), test_fraction, seed
        train_root, test_root = _folder_layout(self.root)
        others = [] if train_root == self.root else [
            os.path.join(self.root, e) for e in _visible(self.root) if e not in ("train", "test")]
        classes, train_files, found = _class_folders(train_root)
        others += found
        if test_root:
            test_classes, test_files, found = _class_folders(test_root)
            others += found
            if test_classes != classes:
                missing = sorted(set(classes) ^ set(test_classes))
                raise DataError(f"{test_root}: its classes differ from {train_root}'s ({', '.join(missing)} in "
                                f"one only); give both the same class folders")
        else:
            rng = np.random.default_rng(seed)
            test_files = {}
            for name in classes:
                files = list(train_files[name])
                n_test = int(round(len(files) * test_fraction))
                if n_test < 1 or n_test >= len(files):
                    raise DataError(f"{os.path.join(train_root, name)}: {len(files)} image(s) cannot give both a "
                                    f"training and a held-out test share; add images or a test/ folder")
                order = rng.permutation(len(files))
                test_files[name] = [files[i] for i in sorted(order[:n_test])]
                train_files[name] = [files[i] for i in sorted(order[n_test:])]
        self.classes, self.left_alone = tuple(classes), others
        self.test_split = "test/" if test_root else "held out"

        def flat(files):
            return ([p for name in classes for p in files[name]],
                    [i for i, name in enumerate(classes) for _ in files[name]])
        paths, labels = flat(train_files)
        order = np.random.default_rng(seed).permutation(len(paths))  # classes mixed, for --subset and --val-split
        self.train = ([paths[i] for i in order], [labels[i] for i in order])
        self.test = flat(test_files)

    def test_digest(self):
        """SHA-256 of the test files' paths (relative to the folder) and labels:
        the same after the folder moves, another when its test split changes."""
        text = "\n".join(f"{os.path.relpath(p, self.root).replace(os.sep, '/')}\t{y}"
                         for p, y in zip(*self.test))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def how(self):
        """How the test set is made, in words."""
        return "its test/ folder" if self.test_split == "test/" else \
            f"{self.test_fraction:.0%} of each class held out (seed {self.seed})"

    def describe(self, image_size, color):
        """What `load_source` says of this folder (stored in checkpoints)."""
        channels = 3 if color == "rgb" else 1
        return {"dataset": self.root, "image_size": int(image_size), "color": color,
                "image_shape": [int(image_size), int(image_size), channels], "class_names": list(self.classes),
                "test_split": self.test_split,
                **({"test_fraction": self.test_fraction, "split_seed": self.seed}
                   if self.test_split == "held out" else {}),
                "train_images": len(self.train[0]), "test_images": len(self.test[0]),
                "test_files_sha256": self.test_digest(),
                "files_left_alone": len(self.left_alone),
                "left_alone": [self._relative(p) for p in self.left_alone[:20]]}

    def _relative(self, path):
        return os.path.relpath(path, self.root).replace(os.sep, "/") + ("/" if os.path.isdir(path) else "")

    def line(self, shown=None):
        """The one line printed when the folder is loaded."""
        n_train, n_test = len(self.train[0]), len(self.test[0])
        text = (f"{shown or self.root}: {n_train + n_test:,} images in {len(self.classes)} classes "
                f"({n_train:,} training, {n_test:,} test: {self.how()})")
        if self.left_alone:
            counts = {}  # each name once, in the order found, with how often it appears
            for p in self.left_alone:
                name = os.path.basename(os.path.normpath(p)) + ("/" if os.path.isdir(p) else "")
                counts[name] = counts.get(name, 0) + 1
            names = ", ".join(f"{name} x{k:,}" if k > 1 else name for name, k in list(counts.items())[:4])
            n = len(self.left_alone)
            text += f"; {n:,} other file{'s' if n > 1 else ''} left alone ({names}{', ...' if len(counts) > 4 else ''})"
        return text

    def read(self, part, image_size=32, color="rgb", stream=False, check=True):
        """`part` ("train" or "test") as (images, labels (N, 1)): an array, or
        ImageFiles when `stream`, whose files are then decoded once here
        (unless not `check`), so an undecodable one stops before training, not
        hours in. An undecodable file is a DataError naming it (and how many
        more)."""
        if color not in ("rgb", "grayscale"):
            raise DataError(f"color must be rgb or grayscale, got {color!r}")
        channels = 3 if color == "rgb" else 1
        paths, labels = getattr(self, part)
        y = np.asarray(labels, np.uint8 if len(self.classes) <= 256 else np.int32).reshape(-1, 1)
        if stream and not check:
            return ImageFiles(paths, image_size, channels), y
        x, bad = decode_all(paths, image_size, channels, keep=not stream)
        if bad:
            raise UndecodableImages(bad, self.root)
        return (ImageFiles(paths, image_size, channels) if stream else x), y


def load_folder(root, image_size=32, color="rgb", test_fraction=0.2, seed=0, stream=None):
    """A folder of images as `(x_train, y_train), (x_test, y_test), class
    names`: `root/<class>/*` (then `test_fraction` of each class, chosen with
    `seed`, is held out as the test set) or `root/train/<class>/*` and
    `root/test/<class>/*`; image files by extension (IMAGE_EXTENSIONS), other
    files left alone and counted in the line printed. Images are resized to
    `image_size` squares, RGB or grayscale (`color`), and read into memory,
    unless `stream` is True, or None (the default) and they would take more
    than half the memory free now: then the images are ImageFiles, read batch
    by batch as training asks for them, each decoded once here first. An
    image OpenCV cannot decode stops the load, naming it."""
    return load_folder_source(root, image_size, color, test_fraction, seed, stream)[:3]


def load_folder_source(root, image_size=32, color="rgb", test_fraction=0.2, seed=0, stream=None):
    """`load_folder`'s three items and what the folder is (see `load_source`)."""
    if color not in ("rgb", "grayscale"):
        raise DataError(f"color must be rgb or grayscale, got {color!r}")
    split = FolderSplit(root, test_fraction, seed)
    print(split.line(root))
    if stream is None:
        stream = _stream_needed(len(split.train[0]) + len(split.test[0]), image_size,
                                3 if color == "rgb" else 1, root)
    parts, bad = [], []
    for part in ("train", "test"):  # every image decoded (or read) now, all the bad ones named at once
        try:
            parts.append(split.read(part, image_size, color, stream))
        except UndecodableImages as e:
            bad += e.paths
    if bad:
        raise UndecodableImages(bad, split.root)
    return parts[0], parts[1], split.classes, split.describe(image_size, color)


# --------------------------------------------------------------------------
# Command line: summary and a grid of samples
# --------------------------------------------------------------------------

def summary(x_train, y_train, x_test, y_test, class_names):
    lines = [f"train: {x_train.shape} {x_train.dtype}, labels {y_train.shape}",
             f"test:  {x_test.shape} {x_test.dtype}, labels {y_test.shape}",
             f"{'class':<12} {'train':>6} {'test':>6}"]
    train_counts = np.bincount(y_train.ravel(), minlength=len(class_names))
    test_counts = np.bincount(y_test.ravel(), minlength=len(class_names))
    for i, name in enumerate(class_names):
        lines.append(f"{name:<12} {train_counts[i]:>6} {test_counts[i]:>6}")
    mean, std = channel_stats(x_train)
    lines.append("per-channel mean (pixels/255): " + ", ".join(f"{m:.4f}" for m in mean))
    lines.append("per-channel std  (pixels/255): " + ", ".join(f"{s:.4f}" for s in std))
    return "\n".join(lines)


def channel_stats(images):
    """Exact per-channel mean and std of pixels/255, from each channel's
    histogram of 256 values (fast, and no float copy of the images)."""
    channels = images.reshape(-1, images.shape[-1] if images.ndim == 4 else 1)
    values = np.arange(256) / 255
    mean, std = [], []
    for c in range(channels.shape[1]):
        counts = np.bincount(channels[:, c], minlength=256)
        m = (counts * values).sum() / counts.sum()
        mean.append(m)
        std.append(np.sqrt((counts * (values - m) ** 2).sum() / counts.sum()))
    return np.array(mean), np.array(std)


def sample_grid(images, labels, class_names, n, scale=3, columns=8):
    """A BGR uint8 image: the first `n` images, enlarged, each with its class
    name underneath."""
    import cv2
    n = min(n, len(images))
    h, w = images.shape[1] * scale, images.shape[2] * scale
    cell_w, cell_h = max(w, 96), h + 18
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    grid = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    for i in range(n):
        img = images[i]
        img = cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR) if img.ndim == 2 or img.shape[-1] == 1 \
            else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
        r, c = divmod(i, columns)
        x0, y0 = c * cell_w + (cell_w - w) // 2, r * cell_h
        grid[y0:y0 + h, x0:x0 + w] = img
        cv2.putText(grid, class_names[int(np.ravel(labels[i])[0])], (c * cell_w + 2, y0 + h + 13),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return grid


def main(argv=None):
    parser = argparse.ArgumentParser(description="Load and summarise CIFAR-10, CIFAR-100 (fine labels) or Fashion-MNIST.")
    parser.add_argument("--dataset", choices=DATASETS, default="cifar10")
    parser.add_argument("--data-dir", help="folder holding the data (default: $CIFAR_DATA_DIR, then ~/.keras/datasets)")
    parser.add_argument("--show", type=int, metavar="N", default=0,
                        help="write a grid of the first N training images with their class names")
    parser.add_argument("--out", default="samples.png", help="PNG file for --show (default: samples.png)")
    args = parser.parse_args(argv)
    try:
        (x_train, y_train), (x_test, y_test), class_names = load(args.dataset, args.data_dir)
        if args.dataset == "cifar10":
            class_names = load_class_names(args.data_dir)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(x_train, y_train, x_test, y_test, class_names))
    if args.show > 0:
        import cv2
        if not cv2.imwrite(args.out, sample_grid(x_train, y_train, class_names, args.show)):
            print(f"error: could not write {args.out}", file=sys.stderr)
            return 1
        print(f"wrote {args.out} ({min(args.show, len(x_train))} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
