"""Where the data sets are, and getting them there safely.

The folders searched (the scripts' `--data-dir` alone when given, else
$CIFAR_DATA_DIR, then ~/.keras/datasets, Keras's own cache); the official
archives extracted with every member checked first; downloads over HTTPS
checked against the official MD5. Each problem is one `DataError` naming
the file.
"""

import hashlib
import os
import shutil
import ssl
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request

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
