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


def inputs(images, targets, batch_size, shuffle=False, seed=0, epoch=0, arrays=False):
    """Keyword arguments for model.fit / evaluate: ImageFiles as FileBatches
    of `batch_size` (starting at epoch `epoch`'s order); arrays as a tf.data
    pipeline under TensorFlow (`tensorflow_batches`), as they are under the
    other backends or with `arrays=True`."""
    itself = {"shuffle": False} if shuffle else {}  # batches that shuffle themselves: fit() is told not to
    if streamed(images):  # (Keras would shuffle FileBatches' batch order too, with Python's random)
        return dict(x=FileBatches(images, targets, batch_size, shuffle, seed, epoch=epoch), **itself)
    if not as_arrays(images, arrays):  # (and warn that a tf.data pipeline cannot be)
        return dict(x=tensorflow_batches(images, targets, batch_size, shuffle, seed + 7919 * epoch), **itself)
    return dict(x=images, y=targets, batch_size=batch_size, **({"shuffle": shuffle} if shuffle else {}))


def as_arrays(images, arrays=False):
    """Whether `inputs` hands fit() these images as arrays (x, y, batch_size)."""
    return not streamed(images) and (arrays or keras.backend.backend() != "tensorflow")


def tensorflow_batches(images, targets, batch_size, shuffle=False, seed=0):
    """In-memory arrays as a tf.data pipeline of (images, targets) batches,
    reshuffled every epoch where `shuffle`, for the TensorFlow backend only.

    Why not the arrays themselves: Keras hands them to TensorFlow through a
    pipeline whose parallel map and prefetch are tuned by tf.data's
    autotuner, and each epoch starts only once the last epoch's iterator has
    stopped its autotuning thread. On a 2-core CPU that wait was 2-15 s an
    epoch (py-spy: the main thread in ~IteratorResource); ResNet-20's fast
    recipe on 12,800 images trained at 383 images/s with it and 517 with
    this pipeline, the same batches with nothing left to the autotuner.
    Shuffled by TensorFlow's seeded shuffle, its seed from `seed` (and the
    epoch a resumed run starts at): a resumed run's orders are not the
    uninterrupted run's, as with Keras's own shuffling of arrays."""
    import tensorflow as tf  # TensorFlow's own input pipeline: the one backend that takes one
    images, targets = tf.constant(images), tf.constant(np.asarray(targets))
    order = tf.data.Dataset.range(len(images))
    if shuffle:
        order = order.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    batches = order.batch(batch_size).map(lambda chosen: (tf.gather(images, chosen), tf.gather(targets, chosen)))
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.prefetch(2).with_options(options)
