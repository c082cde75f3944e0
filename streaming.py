"""Folders larger than memory: batches read from disk as training asks for them.

`load_data.load_folder` gives `load_data.ImageFiles` in place of an image
array when a folder would not fit (or with `--stream`); `inputs` turns either
into what `model.fit`, `evaluate` and `predict` take, so `training.train`
handles both the same way. `FileBatches` is a `keras.utils.PyDataset`: it
works under every backend, reads each batch with OpenCV in worker threads
(OpenCV releases Python's lock while it decodes), and reshuffles after every
epoch with its own seeded generator.
"""

import math

import numpy as np

import keras

import load_data


class FileBatches(keras.utils.PyDataset):
    """(uint8 images, targets) batches of ImageFiles, read on demand."""

    def __init__(self, images, targets, batch_size, shuffle=False, seed=0, workers=2):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=4)
        self.images, self.targets, self.batch_size = images, np.asarray(targets), batch_size
        self.shuffle, self.rng = shuffle, np.random.default_rng(seed)
        self.order = self.rng.permutation(len(images)) if shuffle else np.arange(len(images))

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index):
        chosen = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.images.read(chosen), self.targets[chosen]

    def on_epoch_end(self):
        if self.shuffle:
            self.order = self.rng.permutation(len(self.images))


def streamed(images):
    return isinstance(images, load_data.ImageFiles)


def inputs(images, targets, batch_size, shuffle=False, seed=0):
    """Keyword arguments for model.fit / evaluate: the arrays as they are,
    or ImageFiles as FileBatches of `batch_size`."""
    if streamed(images):
        return dict(x=FileBatches(images, targets, batch_size, shuffle, seed))
    return dict(x=images, y=targets, batch_size=batch_size, **({"shuffle": shuffle} if shuffle else {}))
