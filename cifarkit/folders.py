"""A folder of images as a data set: one subfolder per class, or train/
and test/ each so.

Image files are taken by extension and the rest (Thumbs.db, .DS_Store, a
README) left alone and counted; every image is decoded before training, so
a broken one is named at once, not hours in. A folder whose images do not
fit in memory is read batch by batch from disk (`ImageFiles`).
"""

import hashlib
import os

import numpy as np

from cifarkit.archives import DataError


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


def stream_needed(count, image_size, channels, root, file=None):
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
        stream = stream_needed(len(split.train[0]) + len(split.test[0]), image_size,
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


