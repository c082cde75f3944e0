"""Folders larger than memory: batches read from disk as training asks for them.

`folders.load_folder` gives `folders.ImageFiles` in place of an image
array when a folder would not fit (or with `--stream`); `inputs` turns either
into what `model.fit`, `evaluate` and `predict` take, so `training.Run`
hands fit() either the same way. `FileBatches` is a `keras.utils.PyDataset`: it
works under every backend, reads each batch with OpenCV in worker threads
(OpenCV releases Python's lock while it decodes), and reshuffles after every
epoch: epoch N's order depends on the seed and N alone, so a resumed run
(`epoch=` the epochs done) goes on with the order it would have had.
"""

import math

import numpy as np

import keras

from cifarkit import folders


class FileBatches(keras.utils.PyDataset):
    """(uint8 images, targets) batches of ImageFiles, read on demand."""

    def __init__(self, images, targets, batch_size, shuffle=False, seed=0, workers=2, epoch=0):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=4)
        self.images, self.targets, self.batch_size = images, np.asarray(targets), batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.order = self.epoch_order(epoch)

    def epoch_order(self, epoch):
        """The order of epoch `epoch` (0-based): a function of the seed and the epoch."""
        if not self.shuffle:
            return np.arange(len(self.images))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.images))

    def __len__(self):
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index):
        chosen = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.images.read(chosen), self.targets[chosen]

    def on_epoch_end(self):
        self.epoch += 1
        self.order = self.epoch_order(self.epoch)


def streamed(images):
    return isinstance(images, folders.ImageFiles)


def inputs(images, targets, batch_size, shuffle=False, seed=0, epoch=0):
    """Keyword arguments for model.fit / evaluate: the arrays as they are,
    or ImageFiles as FileBatches of `batch_size` (starting at epoch `epoch`'s order)."""
    if streamed(images):
        return dict(x=FileBatches(images, targets, batch_size, shuffle, seed, epoch=epoch))
    return dict(x=images, y=targets, batch_size=batch_size, **({"shuffle": shuffle} if shuffle else {}))
