"""VGG 11/13/16/19 with batch norm on CIFAR-10, optionally from ImageNet weights.

Configs (Simonyan & Zisserman, table 1), chosen with CONFIG or --config:
  A  VGG11      B  VGG13      C  VGG16 with 1x1 convolutions ending blocks 3-5
  D  VGG16      E  VGG19 (the default)
Every convolution is 3x3 'same' (1x1 where C says so) + batch norm + ReLU,
he_normal, L2 1e-4; a 2x2 max-pool ends each of the five blocks; layer names
follow Keras's own VGG (block{b}_conv{i}, block{b}_pool, fc1, fc2). Head:
Flatten, Dense 4096 + BN + ReLU + dropout 0.5 (twice), Dense 10 + BN, softmax.
Per-channel mean subtraction lives inside the model, so checkpoints take raw
uint8 RGB images.

ImageNet weights (--weights) are Keras's VGG19 file, whose filters expect
Caffe's input: BGR, minus ImageNet's means [103.939, 116.779, 123.68], no
scaling. The model subtracts the same means in RGB order (CHANNEL_MEAN) and
loads block1_conv1's kernel with its input channels reversed: the same
convolution, on RGB. Only the convolutions are loaded (Keras's _notop file is
enough). Loading fc2 behind a fresh fc1: unmeasured whether it helps, so removed.

Batch norm's moving averages use momentum 0.9 (PyTorch's), not Keras's 0.99:
with 0.99 they average over about a hundred steps, long enough for the weights
to have moved on, and after one epoch on 10,000 images the test accuracy sat
at chance (9.99%) while the training accuracy climbed (19.9%). With 0.9, two
epochs on 2,000 images give 17.5% on the training batches and 22.2% on the test
images.

    python vgg19_cifar.py                                   # VGG19, the seed's schedule
    python vgg19_cifar.py --config D --epochs 30
    python vgg19_cifar.py --weights vgg19_weights_tf_dim_ordering_tf_kernels.h5
    python vgg19_cifar.py --estimate-memory --batch-size 256
"""

import quiet  # noqa: F401 (first: TensorFlow's start-up lines only when asked for)
import sys

import numpy as np

import keras
from keras import layers

import cli
import load_data
import schedules
import training

# Hyperparameters (each can be overridden on the command line: --epochs 5).
CONFIG = "E"  # A (VGG11), B (VGG13), C (VGG16 with 1x1), D (VGG16), E (VGG19)
DATASET = "cifar10"  # cifar10, cifar100 (fine labels), cifar100_coarse, fashion_mnist or a folder of images
EPOCHS = 200  # passes over the training images
BATCH_SIZE = 128  # images per gradient step
LEARNING_RATE = 0.01  # SGD's learning rate at the start
LR_STEPS = [(80, 0.5), (140, 0.1)]  # (from 0-based epoch, factor): 0.005 after epoch 80, 0.001 after 140
MOMENTUM = 0.9  # Nesterov momentum
WEIGHT_DECAY = 1e-4  # L2 regularisation of every convolution kernel
DROPOUT = 0.5  # dropout after each 4096-unit layer
BN_MOMENTUM = 0.9  # batch norm's moving averages (Keras's 0.99 lags the weights: test at chance in short runs)
CHANNEL_MEAN = [123.680, 116.779, 103.939]  # subtracted from raw R, G, B inside the model (ImageNet's)
SHIFT = 0.125  # random shifts, fraction of width and height
HORIZONTAL_FLIP = True  # random left-right mirror
FILL_MODE = "constant"  # shifted-in pixels are filled with CVAL (after mean subtraction: the mean)
CVAL = 0.0  # the fill value
VAL_SPLIT = 0.0  # fraction of training images held out for validation (0: the test set, as the seed)
WEIGHTS = None  # None (he_normal), a VGG19 ImageNet .h5 file, or 'imagenet' (download via Keras)

CONFIGS = {  # per block: number of convolutions and, for C, 1x1 for the last
    "A": [(1, 64), (1, 128), (2, 256), (2, 512), (2, 512)],
    "B": [(2, 64), (2, 128), (2, 256), (2, 512), (2, 512)],
    "C": [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)],
    "D": [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)],
    "E": [(2, 64), (2, 128), (4, 256), (4, 512), (4, 512)],
}
NAMES = {"A": "VGG11", "B": "VGG13", "C": "VGG16C", "D": "VGG16", "E": "VGG19"}
# Keras's ImageNet file with the convolutions only, and keras.applications.vgg19's hash of it
IMAGENET_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/"
                "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
IMAGENET_MD5 = "253f8cb515780f3b799900260a226db6"
NUM_CLASSES = 10


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def build_model(config=CONFIG, augment=None, channel_mean=CHANNEL_MEAN, weight_decay=WEIGHT_DECAY,
                dropout=DROPOUT, input_shape=(32, 32, 3), num_classes=NUM_CLASSES, bn_momentum=BN_MOMENTUM):
    """An uncompiled VGG with batch norm, taking raw pixels."""
    if config not in CONFIGS:
        raise cli.UsageError(f"unknown config {config!r}; choose one of {', '.join(CONFIGS)}")
    if min(input_shape[:2]) < 32:  # five 2x2 max-pools
        raise cli.UsageError(f"VGG needs images of at least 32x32 (five 2x2 max-pools), got "
                             f"{input_shape[0]}x{input_shape[1]}")
    inputs = keras.Input(input_shape, name="image")
    x = training.preprocess(inputs, training.channel_mean(channel_mean), augment)
    for b, (convs, filters) in enumerate(CONFIGS[config], start=1):
        for i in range(1, convs + 1):
            size = 1 if config == "C" and b >= 3 and i == convs else 3
            x = layers.Conv2D(filters, size, padding="same", kernel_initializer="he_normal",
                              kernel_regularizer=keras.regularizers.l2(weight_decay),
                              name=f"block{b}_conv{i}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{b}_bn{i}")(x)
            x = layers.Activation("relu", name=f"block{b}_relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for name in ("fc1", "fc2"):
        x = layers.Dense(4096, kernel_initializer="he_normal", name=name)(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
        x = layers.Activation("relu", name=f"{name}_relu")(x)
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    x = layers.Dense(num_classes, kernel_initializer="he_normal", name="predictions")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name="predictions_bn")(x)
    outputs = layers.Activation("softmax", name="softmax", dtype="float32")(x)  # float32 under --mixed-precision
    return keras.Model(inputs, outputs, name=NAMES[config])


# --------------------------------------------------------------------------
# ImageNet initialisation by layer name
# --------------------------------------------------------------------------

def read_h5_weights(path):
    """{layer name: [arrays]} from a Keras .h5 weights file in the classic
    layout (root attribute 'layer_names', per layer 'weight_names'), as
    Keras's ImageNet files are; a full-model .h5 keeps it under 'model_weights'."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                raise cli.UsageError(f"{path}: not a Keras .h5 weights file (no 'layer_names')")
            out = {}
            for name in group.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                layer = group[name]
                names = [n.decode() if isinstance(n, bytes) else n for n in layer.attrs.get("weight_names", [])]
                out[name] = [np.asarray(layer[n]) for n in names]
            return out
    except OSError as e:
        raise cli.UsageError(f"{path}: cannot read it as HDF5 ({e})") from None


def imagenet_layer_names(model):
    """Our layers that take ImageNet weights: the convolutions."""
    return [l.name for l in model.layers if l.name.startswith("block") and "_conv" in l.name]


def load_weights_by_name(model, path):
    """Copy weights from `path` into the layers of the same name (the seed's
    `by_name=True`). Every convolution must be found with matching shapes;
    otherwise nothing is loaded and the error lists what did not match. The
    file's first convolution takes BGR (Caffe's order, as Keras's ImageNet
    file does): its kernel is loaded with the input channels reversed, so
    that it takes the model's RGB."""
    if path == "imagenet":
        path = keras.utils.get_file("vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", IMAGENET_URL,
                                    cache_subdir="models", file_hash=IMAGENET_MD5)
    stored = read_h5_weights(path)
    problems, plan = [], []
    for name in imagenet_layer_names(model):
        layer = model.get_layer(name)
        wanted = [tuple(w.shape) for w in layer.get_weights()]
        if name not in stored:
            problems.append(f"{name}: not in the file")
            continue
        got = [tuple(a.shape) for a in stored[name]]
        if got != wanted:
            problems.append(f"{name}: file has {got}, model needs {wanted}")
            continue
        arrays = stored[name]
        if name == "block1_conv1":  # BGR filters turned into RGB ones
            arrays = [arrays[0][:, :, ::-1, :], *arrays[1:]]
        plan.append((layer, arrays))
    if problems:
        raise cli.UsageError(f"{path}: weights do not match {model.name}: " + "; ".join(problems))
    for layer, arrays in plan:
        layer.set_weights(arrays)
    return [layer.name for layer, _ in plan]


# --------------------------------------------------------------------------
# GPU memory estimate (the seed's formula)
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


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_args(argv=None):
    """The command line over the hyperparameters above, as this module holds them now."""
    return cli.parse_args(sys.modules[__name__], __doc__.splitlines()[0], argv, choices={"CONFIG": tuple(CONFIGS)},
                          only={"CVAL": {"FILL_MODE": ("constant",)}},  # used only with these values
                          extra=lambda p: p.add_argument(
                              "--estimate-memory", action="store_true",
                              help="print the GPU memory estimate for CONFIG and BATCH_SIZE and exit"))


def main(argv=None):
    args = parse_args(argv)
    scope = training.setup(args)
    augment = dict(width_shift_range=args.shift, height_shift_range=args.shift,
                   horizontal_flip=args.horizontal_flip, fill_mode=args.fill_mode, cval=args.cval)
    with scope:
        shape, classes = load_data.shape_of(args.dataset, args.image_size, args.color)
        mean = args.channel_mean if shape[-1] == 3 else [float(np.mean(args.channel_mean))]  # grayscale
        model = build_model(args.config, augment, mean, args.weight_decay, args.dropout, shape, classes,
                            bn_momentum=args.bn_momentum)
    if args.estimate_memory:
        print_memory_estimate(model, args.batch_size)
        return 0
    if args.weights:
        loaded = load_weights_by_name(model, args.weights)
        init = f"ImageNet weights from {args.weights} ({len(loaded)} layers: {', '.join(loaded)})"
    else:
        init = "he_normal (no pretrained weights)"
    print(f"Initialisation: {init}")

    # Data
    data = training.prepare_data(args)

    # Model
    with scope:
        model.compile(optimizer=keras.optimizers.SGD(args.learning_rate, momentum=args.momentum,
                                                     nesterov=True),
                      loss="categorical_crossentropy", metrics=["accuracy"])
    model.summary()

    # Training and evaluation
    schedule = schedules.step_schedule(args.learning_rate, args.lr_steps)
    training.train(model, args, data, name=training.run_name(args, model.name),
                   batch_size=args.batch_size, epochs=args.epochs, schedule=schedule,
                   validation_note=f"initialisation: {init}")
    return 0


if __name__ == "__main__":
    cli.run(main)
