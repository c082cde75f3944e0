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

Expected result: 74.89% test accuracy after 5 of the 200 epochs
(`python3 vgg19_cifar.py --epochs 5`), 24 min on a 2-core AMD EPYC, code
version not recorded (2026-11-24): results/vgg19_5_epochs/. The 200 epochs
have not been run here.
"""

from cifarkit import quiet  # noqa: F401 (first: TensorFlow's start-up lines only when asked for)
import sys

import numpy as np

import keras
from keras import layers

import load_data
from cifarkit import checkpoints
from cifarkit import cli
from cifarkit import devices
from cifarkit import preprocessing
from cifarkit import schedules
from cifarkit import training

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
    x = preprocessing.preprocess(inputs, preprocessing.channel_mean(channel_mean), augment)
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
# ImageNet initialisation
# --------------------------------------------------------------------------

def imagenet_layer_names(model):
    """Our layers that take ImageNet weights: the convolutions."""
    return [l.name for l in model.layers if l.name.startswith("block") and "_conv" in l.name]


def load_imagenet_weights(model, path):
    """The convolutions' weights from Keras's VGG19 ImageNet file (`path`, or
    'imagenet': downloaded by Keras), by layer name; block1_conv1's kernel,
    which takes BGR there, with its input channels reversed to take RGB.
    Returns the names of the layers loaded."""
    if path == "imagenet":
        path = keras.utils.get_file("vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", IMAGENET_URL,
                                    cache_subdir="models", file_hash=IMAGENET_MD5)
    return checkpoints.load_weights_by_name(model, path, imagenet_layer_names(model), bgr_layer="block1_conv1")


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
    scope = devices.setup(args)  # seeds, precision and devices: the scope to build the model in

    # Model (first: --estimate-memory needs no data)
    augment = dict(width_shift_range=args.shift, height_shift_range=args.shift,
                   horizontal_flip=args.horizontal_flip, fill_mode=args.fill_mode, cval=args.cval)
    shape, classes = load_data.shape_of(args.dataset, args.image_size, args.color)
    mean = args.channel_mean if shape[-1] == 3 else [float(np.mean(args.channel_mean))]  # grayscale
    with scope:
        model = build_model(config=args.config, augment=augment, channel_mean=mean, weight_decay=args.weight_decay,
                            dropout=args.dropout, input_shape=shape, num_classes=classes,
                            bn_momentum=args.bn_momentum)
    if args.estimate_memory:
        devices.print_memory_estimate(model, args.batch_size // args.replicas)  # per device
        return 0
    if args.weights:
        loaded = load_imagenet_weights(model, args.weights)
        init = f"ImageNet weights from {args.weights} ({len(loaded)} layers: {', '.join(loaded)})"
    else:
        init = "he_normal (no pretrained weights)"
    print(f"Initialisation: {init}")
    with scope:
        model.compile(optimizer=keras.optimizers.SGD(args.learning_rate, momentum=args.momentum, nesterov=True),
                      loss="categorical_crossentropy", metrics=["accuracy"])
    model.summary()

    # Data
    data = training.prepare_data(args)  # data.train, data.validation, data.test: (images, labels)

    # Training
    run = training.Run(args, data, training.run_name(args, model.name), note=f"initialisation: {init}")
    schedule = schedules.step_schedule(args.learning_rate, args.lr_steps)
    callbacks = run.callbacks(keras.callbacks.LearningRateScheduler(schedule))  # and those of every run

    initial_epoch = run.resume(model)  # --resume: the last finished epoch's weights, optimizer and callbacks
    # x: the images (arrays, or a folder read from disk), y: one-hot labels (hence categorical_crossentropy)
    model.fit(**run.training_data(args.batch_size), validation_data=run.validation_data(),
              epochs=args.epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=args.verbose)

    # Evaluation and saving
    test_loss, test_accuracy = model.evaluate(**run.test_data(), verbose=0)
    run.save(model, test_loss, test_accuracy)  # the final checkpoint, the history's plot, the summary
    return 0


if __name__ == "__main__":
    cli.run(main)
