"""Batch normalization on torch's fused kernel while training under the torch backend.

Keras's BatchNormalization trains under torch with a chain of elementwise
kernels (the batch's mean and variance, then the normalization, each with its
backward pass); `torch.nn.functional.batch_norm` does the same work in one
kernel forward and one backward. `fused_call` is Keras's
BatchNormalization.call with that kernel in its training branch, computing
what Keras's layer computes:

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
the scripts train with (`training.Run.callbacks`): under torch it gives each
BatchNormalization of the model (nested models included) the fused training
step for the length of `fit`, as an attribute of the layer object, and takes
it away at the end. The layer's class, name and weights never change, so
whatever is saved at any moment (the backup's weights, a checkpoint, a
user's own `model.save`, even after a `fit` that raised) is Keras's own
layer; elsewhere the callback does nothing.
"""

import types

import keras
from keras import layers, ops


def fused_call(layer, inputs, training=None, mask=None):
    """BatchNormalization.call for `layer`, its training step under torch on
    torch.nn.functional.batch_norm (see the module's docstring)."""
    keras_call = layers.BatchNormalization.call
    if (not (training and layer.trainable) or mask is not None or layer.renorm
            or keras.backend.backend() != "torch"):
        return keras_call(layer, inputs, training=training, mask=mask)
    import torch
    import torch.nn.functional as F
    x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))  # as Keras's layer computes
    axis = layer.axis % x.ndim
    channels = x.shape[axis]
    count = x.numel() // channels  # values per channel in the batch
    if count < 2:
        return keras_call(layer, inputs, training=training, mask=mask)
    x = torch.movedim(x, axis, 1)  # (batch, channels, ...): a view, as the kernel takes it
    mean = torch.zeros(channels, dtype=x.dtype, device=x.device)
    unbiased = torch.ones(channels, dtype=x.dtype, device=x.device)
    gamma = ops.cast(layer.gamma, x.dtype) if layer.scale else None
    beta = ops.cast(layer.beta, x.dtype) if layer.center else None
    # torch momentum 1: the running buffers become the batch's mean and unbiased variance
    outputs = F.batch_norm(x, mean, unbiased, gamma, beta, training=True, momentum=1.0, eps=layer.epsilon)
    variance = unbiased * ((count - 1) / count)  # Keras keeps the biased variance
    m = layer.momentum
    layer.moving_mean.assign(ops.cast(layer.moving_mean, x.dtype) * m + mean * (1.0 - m))
    layer.moving_variance.assign(ops.cast(layer.moving_variance, x.dtype) * m + variance * (1.0 - m))
    return ops.cast(torch.movedim(outputs, 1, axis), layer.compute_dtype)


def batch_norms(model):
    """The BatchNormalization layers of `model` and of the models nested in it."""
    found = []
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found += batch_norms(layer)
    return found


def fuse(model):
    """Under torch, give each BatchNormalization of `model` the fused
    training step (an attribute of the layer object: its class and weights
    stay Keras's). Returns the layers given it (none under other backends)."""
    if keras.backend.backend() != "torch":
        return []
    turned = batch_norms(model)
    for layer in turned:
        layer.call = types.MethodType(fused_call, layer)
    return turned


def unfuse(model):
    """Take the fused training step away again. Returns the layers it was taken from."""
    turned = [layer for layer in batch_norms(model) if "call" in vars(layer)]
    for layer in turned:
        del layer.call
    return turned


class FuseBatchNorm(keras.callbacks.Callback):
    """Trains the model's batch norms on torch's fused kernel for the length
    of fit (under torch; nothing elsewhere)."""

    def on_train_begin(self, logs=None):
        fuse(self.model)

    def on_train_end(self, logs=None):
        unfuse(self.model)
