"""Batch normalization on torch's fused kernel while training under the torch backend.

Keras's BatchNormalization trains under torch with a chain of elementwise
kernels (the batch's mean and variance, then the normalization, each with its
backward pass); `torch.nn.functional.batch_norm` does the same work in one
kernel forward and one backward. `FusedBatchNormalization` is Keras's layer
with that kernel in its training branch, computing what Keras's layer
computes:

- the output normalizes with the batch's statistics, which stay in the graph
  (the gradients flow through them, as in Keras's layer; keras#18793 fused
  the torch batch norm with detached statistics and keras#19102 took it out
  again for the wrong gradients that gave);
- the moving averages are Keras's: moving = moving * momentum + batch * (1 -
  momentum) with the batch's biased variance (torch's own running_var keeps
  the unbiased one with the other momentum convention, so the kernel's
  running statistics are taken with torch momentum 1, which makes them the
  batch's own, and converted);
- it computes in float32 under mixed precision, as Keras's layer does.

Anything else (inference, another backend, masks, renormalization, a batch of
one value per channel) is Keras's own code. `FuseBatchNorm` is the callback
the scripts train with (`training.Run.callbacks`): under torch it turns each
BatchNormalization of the model into a FusedBatchNormalization for the
length of `fit` (the same object, its class swapped: weights, optimizer
slots and names unchanged) and back at its end; elsewhere it does nothing.
Checkpoints written during `fit` hold Keras's own layer: `checkpoints.save_h5`
saves inside `keras_layers(model)`, so plain `keras.models.load_model` opens
them.
"""

import contextlib

import keras
from keras import layers, ops


class FusedBatchNormalization(layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training step under torch is
    torch.nn.functional.batch_norm (see the module's docstring)."""

    def call(self, inputs, training=None, mask=None):
        if (not (training and self.trainable) or mask is not None or self.renorm
                or keras.backend.backend() != "torch"):
            return super().call(inputs, training=training, mask=mask)
        import torch
        import torch.nn.functional as F
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))  # as Keras's layer computes
        axis = self.axis % x.ndim
        channels = x.shape[axis]
        count = x.numel() // channels  # values per channel in the batch
        if count < 2:
            return super().call(inputs, training=training, mask=mask)
        x = torch.movedim(x, axis, 1)  # (batch, channels, ...): a view, as the kernel takes it
        mean = torch.zeros(channels, dtype=x.dtype, device=x.device)
        unbiased = torch.ones(channels, dtype=x.dtype, device=x.device)
        gamma = ops.cast(self.gamma, x.dtype) if self.scale else None
        beta = ops.cast(self.beta, x.dtype) if self.center else None
        # torch momentum 1: the running buffers become the batch's mean and unbiased variance
        outputs = F.batch_norm(x, mean, unbiased, gamma, beta, training=True, momentum=1.0, eps=self.epsilon)
        variance = unbiased * ((count - 1) / count)  # Keras keeps the biased variance
        self.moving_mean.assign(ops.cast(self.moving_mean, x.dtype) * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            ops.cast(self.moving_variance, x.dtype) * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(torch.movedim(outputs, 1, axis), self.compute_dtype)


def _batch_norms(model, cls):
    """The layers of exactly class `cls` in `model` and the models nested in it."""
    found = []
    for layer in model.layers:
        if type(layer) is cls:
            found.append(layer)
        elif hasattr(layer, "layers"):
            found += _batch_norms(layer, cls)
    return found


def fuse(model):
    """Under torch, turn each keras.layers.BatchNormalization of `model`
    (nested models included) into a FusedBatchNormalization, in place.
    Returns the layers turned (none under other backends)."""
    if keras.backend.backend() != "torch":
        return []
    turned = _batch_norms(model, layers.BatchNormalization)
    for layer in turned:
        layer.__class__ = FusedBatchNormalization
    return turned


def unfuse(model):
    """Turn each FusedBatchNormalization of `model` back into Keras's own
    layer, in place. Returns the layers turned."""
    turned = _batch_norms(model, FusedBatchNormalization)
    for layer in turned:
        layer.__class__ = layers.BatchNormalization
    return turned


@contextlib.contextmanager
def keras_layers(model):
    """`model` with Keras's own BatchNormalization inside the block (to save
    it), fused again after it as it was before."""
    turned = unfuse(model)
    try:
        yield model
    finally:
        for layer in turned:
            layer.__class__ = FusedBatchNormalization


class FuseBatchNorm(keras.callbacks.Callback):
    """Trains the model's batch norms on torch's fused kernel for the length
    of fit (under torch; nothing elsewhere)."""

    def on_train_begin(self, logs=None):
        fuse(self.model)

    def on_train_end(self, logs=None):
        unfuse(self.model)
