"""Seeds, precision and devices: what a run trains on.

- `setup(args)`: seeds every random draw, sets the mixed-precision policy
  (by default bfloat16 where the CPU runs it natively, `native_bfloat16`),
  picks the devices (`--devices`, or TF_CONFIG for several machines) and
  returns the scope to build and compile the model in;
- `data_parallel`: each backend's own engine (TensorFlow's MirroredStrategy,
  JAX's keras.distribution.DataParallel);
- `memory_estimate`: the seed's rule of thumb for a model's training memory.
"""

import contextlib
import os
import sys

import numpy as np

import keras
from keras import layers

from cifarkit import hardware
from cifarkit.cli import UsageError


def setup(args, scale_learning_rate=True):
    """Seed everything (weights, shuffling, augmentation) and choose the
    devices. Returns the context to build and compile the model in; the
    number of data-parallel replicas is kept as `args.replicas`, and the
    multi-worker strategy, when TF_CONFIG asks for one, as `args.multi_worker`.
    With several replicas, `args.batch_size` becomes the global batch and
    `args.learning_rate` is scaled with it (the linear scaling rule), so the
    script's optimizer and schedule use the scaled values. The rule is an
    SGD result (Goyal et al., 2017): a script whose optimizer is Adam or
    RMSprop, or whose rate already follows the batch, passes
    `scale_learning_rate=False` and keeps its rate."""
    args.multi_worker = None
    if os.environ.get("TF_CONFIG"):  # before TensorFlow does anything else
        from cifarkit import multiworker
        if args.resume:
            raise UsageError("--resume is not available in multi-worker training (TF_CONFIG is set)")
        try:
            args.multi_worker = multiworker.strategy_from_environment()
        except ValueError as e:
            raise UsageError(str(e)) from None
    keras.utils.set_random_seed(args.seed)
    if getattr(args, "mixed_precision", False) is None:  # neither --mixed-precision nor --no-mixed-precision
        # several workers (TF_CONFIG) may have different CPUs: one policy for all only when named
        args.mixed_precision = args.multi_worker is None and native_bfloat16()
        if args.mixed_precision:
            print(f"Mixed precision (bfloat16) by default: this CPU runs it natively "
                  f"({', '.join(hardware.cpu_flags())}); --no-mixed-precision trains in float32")
    elif getattr(args, "mixed_precision", False) and not _gpu() and not accelerators() and not hardware.cpu_flags() \
            and os.path.isfile("/proc/cpuinfo"):  # (elsewhere the CPU's flags are not known)
        print(f"warning: --mixed-precision on a CPU without bfloat16 instructions (no {', no '.join(hardware.BF16_FLAGS)}) "
              "trains several times slower than float32 (resnet_cifar.py --n 1 on an AVX2-only EPYC: 33 against 301 images/s); "
              "--no-mixed-precision trains in float32", file=sys.stderr)
    keras.mixed_precision.set_global_policy(
        mixed_precision_policy() if getattr(args, "mixed_precision", False) else "float32")
    if args.multi_worker is not None:
        scope, args.replicas = args.multi_worker.scope(), args.multi_worker.num_replicas_in_sync
    else:
        scope, args.replicas = data_parallel(args.devices)
    if args.replicas > 1:  # the linear scaling rule: what the script reads is already scaled
        rate = f"learning rate {args.learning_rate} x {args.replicas} (linear scaling rule)" if scale_learning_rate \
            else f"learning rate {args.learning_rate} as it is"
        print(f"Data-parallel training on {args.replicas} replicas: batch {args.batch_size} x {args.replicas}, {rate}")
        args.batch_size *= args.replicas
        if scale_learning_rate:
            args.learning_rate *= args.replicas
    return scope


def mixed_precision_policy():
    """float16 where it is fast (GPUs, with loss scaling that compile() adds
    by itself), bfloat16 on CPUs and TPUs, which have no float16 units."""
    return "mixed_float16" if _gpu() else "mixed_bfloat16"


def native_bfloat16():
    """Whether mixed precision is the default: training on the CPU (no GPU or
    TPU visible) where it has bfloat16 instructions (hardware.BF16_FLAGS).
    There ResNet-20's fast recipe trained 1.17-1.34x faster in bfloat16
    in real runs (docs/speed.md) and is not shown to lose accuracy: 40
    epochs ended at 91.25% (torch) and 90.95% (TensorFlow) against
    float32's 90.54% (results/resnet20_fast*)."""
    return not _gpu() and not accelerators() and bool(hardware.cpu_flags())


def _gpu():
    return _torch_cuda() if keras.backend.backend() == "torch" else \
        any(d.lower().startswith("gpu") or "cuda" in d.lower() for d in accelerators())


def _torch_cuda():
    import torch
    return torch.cuda.is_available()


def accelerators():
    """The visible GPUs/TPUs (none: an empty list)."""
    return [d for d in keras.distribution.list_devices() if not d.lower().startswith("cpu")] \
        if keras.backend.backend() in ("jax", "tensorflow") else []


def data_parallel(devices=0):
    """(context to build and compile in, number of replicas).

    - `devices` > 1, or 0 with several accelerators visible: synchronous
      data parallelism over that many local devices, with
      tf.distribute.MirroredStrategy under TensorFlow and
      keras.distribution.DataParallel under JAX;
    - otherwise one device and a do-nothing context."""
    backend = keras.backend.backend()
    if devices == 0:
        devices = len(accelerators())
    if devices <= 1:
        return contextlib.nullcontext(), 1
    if backend == "tensorflow":
        strategy = _tf_strategy(devices)
        return strategy.scope(), strategy.num_replicas_in_sync
    if backend == "jax":
        available = accelerators() or keras.distribution.list_devices()
        if len(available) < devices:
            raise UsageError(f"--devices {devices}: only {len(available)} device(s) visible")
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=available[:devices]))
        return contextlib.nullcontext(), devices
    raise UsageError(f"--devices {devices}: data-parallel training needs the tensorflow or jax "
                     f"backend, not {backend}")


def _tf_strategy(devices):
    """TensorFlow's own MirroredStrategy: the one TensorFlow-only corner of
    the collection."""
    import tensorflow as tf
    names = [d.name for d in tf.config.list_logical_devices("GPU")] or \
        [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(names) < devices:
        raise UsageError(f"--devices {devices}: only {len(names)} device(s) visible")
    return tf.distribute.MirroredStrategy(devices=names[:devices])


# --------------------------------------------------------------------------
# Memory estimate (the VGG seed's formula)
# --------------------------------------------------------------------------

def memory_estimate(model, batch_size, bytes_per_value=4):
    """Rows (layer, output shape, activations per image, parameters) for the
    input and every convolution, pooling and dense layer, and the total bytes:
    parameters x 3 (weights, gradients, momentum) + activations x batch x 2
    (forward and backward)."""
    rows = [("input", tuple(model.inputs[0].shape[1:]), int(np.prod(model.inputs[0].shape[1:])), 0)]
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.MaxPooling2D, layers.Dense)):
            shape = tuple(layer.output.shape[1:])
            rows.append((layer.name, shape, int(np.prod(shape)), 0))
    params = int(model.count_params())
    activations = sum(r[2] for r in rows)
    total = bytes_per_value * (3 * params + 2 * batch_size * activations)
    rows = [(n, s, a, model.get_layer(n).count_params() if n != "input" else 0) for n, s, a, _ in rows]
    return rows, params, activations, total


def print_memory_estimate(model, batch_size):
    rows, params, activations, total = memory_estimate(model, batch_size)
    print(f"{model.name}, batch {batch_size}, float32")
    print(f"{'layer':<16} {'output':<16} {'activations':>12} {'parameters':>12}")
    for name, shape, acts, p in rows:
        print(f"{name:<16} {'x'.join(map(str, shape)):<16} {acts:>12,} {p:>12,}")
    print(f"parameters (incl. batch-norm statistics): {params:,} -> x3 x 4 B = {3 * 4 * params / 2**20:,.1f} MiB")
    print(f"activations per image: {activations:,} -> x batch x2 x 4 B = "
          f"{2 * 4 * batch_size * activations / 2**20:,.1f} MiB")
    print(f"total: {total / 2**20:,.1f} MiB")
