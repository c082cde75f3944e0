"""ResNet v1 and v2 on CIFAR-10, after Keras's classic example (cifar10_resnet).

  v1  depth 6n+2 (20, 32, 44, 56, 110): stacks of two 3x3 conv-BN-ReLU layers
  v2  depth 9n+2 (56, 110, 164): pre-activation bottleneck blocks (BN-ReLU-conv)
3x3 convolutions with he_normal and L2 1e-4, batch norm, 1x1 projection shortcuts
where a stage changes, global average pooling (the example's 8x8 on 32x32 images,
any size here), Dense softmax. Per-pixel mean
subtraction lives inside the model, so checkpoints take raw uint8 RGB images.

Two recipes, each a set of defaults (RECIPES below) that flags and edits at the
top override, with the same meaning in both: `--recipe fast --epochs 5` trains the
fast recipe for 5 epochs. A flag the chosen recipe does not use (`--lr-steps` with
fast, `--warmup-epochs` with seed) is refused; the old `--fast-epochs`,
`--fast-batch-size`, ... name their replacements (`--epochs`, `--batch-size`, ...).
  seed  the example's own: Adam 1e-3 stepped down after epochs 80/120/160/180,
        plateau cuts (ReduceLROnPlateau's, made to last), batch 32, shifts 0.1 + flips,
        200 epochs
  fast  ours: SGD + Nesterov, batch 128, linear warm-up then cosine decay,
        label smoothing, whole-pixel shifts of up to 4 (zero fill: the paper's pad and crop) + flips,
        weight decay 5e-4, batch-norm momentum 0.9, 60 epochs (40 ended 0.5-0.7 short)

    python resnet_cifar.py                        # ResNet-20 v1, the seed recipe
    python resnet_cifar.py --recipe fast          # ResNet-20 v1 in 60 epochs
    python resnet_cifar.py --version 2 --n 6      # ResNet-56 v2

Expected result: 91.59% and 91.39% test accuracy after the fast recipe's 60
epochs (`python3 resnet_cifar.py --recipe fast --epochs 60 --seed 1`, then
`--seed 2`; JAX on an NVIDIA H200, 3 min 53 s each, the two side by side;
commit b9978ec): results/resnet20_fast_60_epochs_h200_seed1/ and _seed2/;
91.09% under TensorFlow on a 2-core AMD EPYC (seed 0, about 2 h 20 min of
training; results/resnet20_fast_60_epochs/). The mean of the three, 91.36%,
meets the paper's 91.25%. Its old length, 40 epochs, ended at 90.54%
(results/resnet20_fast/, 1 h 55 min on the same CPU). The seed recipe's 200
epochs have not been run here.
"""

from cifarkit import quiet  # noqa: F401 (first: TensorFlow's start-up lines only when asked for)

import os
import sys

import keras
from keras import layers

from cifarkit import cli
from cifarkit import devices
from cifarkit import preprocessing
from cifarkit import schedules
from cifarkit import training

# Hyperparameters (each can be overridden on the command line: --epochs 5).
# None: the chosen recipe's value (RECIPES below); a value set here is used whatever the recipe.
DATASET = "cifar10"  # cifar10, cifar100 (fine labels), cifar100_coarse, fashion_mnist or a folder of images
VERSION = 1  # ResNet version: 1 (depth 6n+2) or 2 (depth 9n+2)
N = 3  # residual blocks per stage: depth 20 for v1 (n=3), 29 for v2 (n=3)
RECIPE = "seed"  # seed (the Keras example's schedule) or fast (ours, far fewer epochs): see RECIPES
EPOCHS = None  # passes over the training images
BATCH_SIZE = None  # images per gradient step
LEARNING_RATE = None  # seed: Adam's learning rate before the steps; fast: SGD's peak
LR_STEPS = None  # seed: (from 0-based epoch, factor) steps of the learning rate
PLATEAU_FACTOR = None  # seed: ReduceLROnPlateau's factor
PLATEAU_PATIENCE = None  # seed: epochs without improvement before a plateau cut
PLATEAU_MIN_LR = None  # seed: ReduceLROnPlateau's floor
WARMUP_EPOCHS = None  # fast: linear warm-up before the cosine decay
MOMENTUM = None  # fast: SGD's Nesterov momentum
LABEL_SMOOTHING = None  # label smoothing of the cross-entropy
SHIFT = None  # random shifts: a fraction of width and height below 1, or whole pixels (1 or more)
FILL_MODE = None  # how pixels shifted in from outside are filled
WEIGHT_DECAY = None  # L2 regularisation of every convolution kernel
BN_MOMENTUM = None  # batch norm's moving-average momentum (Keras's default: 0.99)
HORIZONTAL_FLIP = True  # random left-right mirror
VAL_SPLIT = 0.0  # fraction of training images held out for validation (0: the test set, as the seed)

# The recipes: each is the defaults of the hyperparameters above left at None.
# A recipe uses only those it names: --warmup-epochs with --recipe seed is refused.
RECIPES = {
    "seed": dict(  # the Keras example's
        epochs=200, batch_size=32, learning_rate=1e-3,
        lr_steps=[(81, 0.1), (121, 0.01), (161, 1e-3), (181, 0.5e-3)],
        plateau_factor=0.31622776601683794,  # the square root of 0.1
        plateau_patience=5, plateau_min_lr=0.5e-6,
        label_smoothing=0.0, shift=0.1, fill_mode="nearest", weight_decay=1e-4, bn_momentum=0.99,
    ),
    "fast": dict(  # ours
        epochs=60, batch_size=128, learning_rate=0.1, warmup_epochs=2, momentum=0.9, label_smoothing=0.1,
        shift=4,  # whole pixels in {-4, ..., 4}: the paper's 4-pixel pad and crop
        fill_mode="constant",  # shifted-in pixels are 0, the mean colour: the paper's zero padding
        weight_decay=2.5e-4,  # L2 of every kernel, as SGD weight decay 5e-4 (the seed's 1e-4 is 2e-4)
        bn_momentum=0.9,  # PyTorch's 0.1
    ),
}
# Flags of earlier versions, refused with their new names
RENAMED = {f"--fast-{flag}": f"--{flag} (with --recipe fast)" for flag in (
    "epochs", "batch-size", "learning-rate", "warmup-epochs", "momentum", "shift", "weight-decay",
    "bn-momentum", "fill-mode")}
NUM_CLASSES = 10
# The builders' defaults: the Keras example's weight decay and batch-norm momentum
EXAMPLE = RECIPES["seed"]


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def resnet_layer(inputs, num_filters=16, kernel_size=3, strides=1, activation="relu",
                 batch_normalization=True, conv_first=True, weight_decay=EXAMPLE["weight_decay"],
                 bn_momentum=EXAMPLE["bn_momentum"]):
    """Conv2D-BN-activation (conv_first) or BN-activation-Conv2D."""
    conv = layers.Conv2D(num_filters, kernel_size, strides=strides, padding="same",
                         kernel_initializer="he_normal",
                         kernel_regularizer=keras.regularizers.l2(weight_decay))
    x = inputs
    if conv_first:
        x = conv(x)
    if batch_normalization:
        x = layers.BatchNormalization(momentum=bn_momentum)(x)
    if activation is not None:
        x = layers.Activation(activation)(x)
    if not conv_first:
        x = conv(x)
    return x


def resnet_v1(x, depth, num_classes=NUM_CLASSES, weight_decay=EXAMPLE["weight_decay"],
              bn_momentum=EXAMPLE["bn_momentum"]):
    opts = dict(weight_decay=weight_decay, bn_momentum=bn_momentum)
    num_filters, num_blocks = 16, (depth - 2) // 6
    x = resnet_layer(x, **opts)
    for stack in range(3):
        for block in range(num_blocks):
            strides = 2 if stack > 0 and block == 0 else 1
            y = resnet_layer(x, num_filters, strides=strides, **opts)
            y = resnet_layer(y, num_filters, activation=None, **opts)
            if strides == 2:  # projection shortcut where the stage changes
                x = resnet_layer(x, num_filters, kernel_size=1, strides=strides, activation=None,
                                 batch_normalization=False, **opts)
            x = layers.Activation("relu")(layers.add([x, y]))
        num_filters *= 2
    x = layers.GlobalAveragePooling2D()(x)  # 8x8 maps on 32x32 images, 7x7 on Fashion-MNIST's 28x28
    return layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal",
                        dtype="float32")(x)  # float32 output under --mixed-precision


def resnet_v2(x, depth, num_classes=NUM_CLASSES, weight_decay=EXAMPLE["weight_decay"],
              bn_momentum=EXAMPLE["bn_momentum"]):
    opts = dict(weight_decay=weight_decay, bn_momentum=bn_momentum)
    filters_in, num_blocks = 16, (depth - 2) // 9
    x = resnet_layer(x, filters_in, conv_first=True, **opts)
    for stage in range(3):
        for block in range(num_blocks):
            activation, batch_normalization, strides = "relu", True, 1
            if stage == 0:
                filters_out = filters_in * 4
                if block == 0:  # the first layer already ends in BN-ReLU
                    activation, batch_normalization = None, False
            else:
                filters_out = filters_in * 2
                if block == 0:
                    strides = 2
            y = resnet_layer(x, filters_in, kernel_size=1, strides=strides, activation=activation,
                             batch_normalization=batch_normalization, conv_first=False,
                             **opts)
            y = resnet_layer(y, filters_in, conv_first=False, **opts)
            y = resnet_layer(y, filters_out, kernel_size=1, conv_first=False, **opts)
            if block == 0:
                x = resnet_layer(x, filters_out, kernel_size=1, strides=strides, activation=None,
                                 batch_normalization=False, **opts)
            x = layers.add([x, y])
        filters_in = filters_out
    x = layers.BatchNormalization(momentum=bn_momentum)(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)  # 8x8 maps on 32x32 images, 7x7 on Fashion-MNIST's 28x28
    return layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal",
                        dtype="float32")(x)  # float32 output under --mixed-precision


def depth_of(version, n):
    return n * 6 + 2 if version == 1 else n * 9 + 2


def depth_problem(version, depth):
    """What is wrong with a ResNet's version and depth, or None."""
    if version not in (1, 2):
        return f"VERSION must be 1 or 2, got {version}"
    step = 6 if version == 1 else 9
    if depth < step + 2 or (depth - 2) % step:
        valid = ", ".join(str(step * k + 2) for k in range(1, 5))
        return f"ResNet v{version} depth must be {step}n+2 ({valid}, ...), got {depth}"
    return None


def build_model(version=VERSION, depth=None, normalization=None, augment=None,
                input_shape=(32, 32, 3), num_classes=NUM_CLASSES, weight_decay=EXAMPLE["weight_decay"],
                bn_momentum=EXAMPLE["bn_momentum"]):
    """An uncompiled ResNet taking raw pixels. `depth` defaults to N's;
    `normalization`: a layer (preprocessing.pixel_mean(x_train)), default ÷255;
    `augment`: ImageDataGenerator knobs (augment.augmentation), or None;
    `bn_momentum`: batch norm's moving-average momentum (Keras's 0.99)."""
    depth = depth or depth_of(version, N)
    problem = depth_problem(version, depth)
    if problem:
        raise cli.UsageError(problem)
    inputs = keras.Input(input_shape, name="image")
    x = preprocessing.preprocess(inputs, normalization or preprocessing.rescale(), augment)
    body = resnet_v1 if version == 1 else resnet_v2
    outputs = body(x, depth, num_classes=num_classes, weight_decay=weight_decay, bn_momentum=bn_momentum)
    return keras.Model(inputs, outputs, name=f"ResNet{depth}v{version}")


# --------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------

def recipe(args):
    """The recipe's optimizer and learning-rate callback, from args (its
    values, unless overridden). fast: SGD with Nesterov momentum, linear
    warm-up then cosine decay; seed: Adam, stepped down at LR_STEPS, with the
    example's ReduceLROnPlateau as cuts that last (schedules.PlateauSchedule)."""
    if args.recipe == "fast":
        return (keras.optimizers.SGD(args.learning_rate, momentum=args.momentum, nesterov=True),
                keras.callbacks.LearningRateScheduler(
                    schedules.warmup_cosine(args.learning_rate, args.epochs, args.warmup_epochs)))
    return (keras.optimizers.Adam(args.learning_rate),
            schedules.PlateauSchedule(schedules.step_schedule(args.learning_rate, args.lr_steps),
                                      factor=args.plateau_factor, patience=args.plateau_patience,
                                      min_lr=args.plateau_min_lr))


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_args(argv=None):
    """The command line over the hyperparameters above, as this module holds
    them now; args holds the values used (the recipe's, unless overridden)."""
    args = cli.parse_args(sys.modules[__name__], __doc__.splitlines()[0], argv, choices={"VERSION": (1, 2)},
                          recipes=("RECIPE", RECIPES), renamed=RENAMED,
                          extra=lambda p: p.add_argument("--depth", type=int, help="network depth (instead of N)"))
    if args.depth is not None:  # checked here, before any data is read
        problem = depth_problem(args.version, args.depth) or (
            f"give --depth or --n, not both (--n {args.n} is depth {depth_of(args.version, args.n)})"
            if args.n != N else None)
        if problem:
            cli.OneLineParser(prog=os.path.basename(__file__)).error(problem)
    return args


def main(argv=None):
    args = parse_args(argv)
    # seeds, precision and devices: the scope to build the model in (seed's Adam: no linear scaling)
    scope = devices.setup(args, scale_learning_rate=args.recipe == "fast")

    # Data
    data = training.prepare_data(args)  # data.train, data.validation, data.test: (images, labels)

    # Model
    augment = dict(width_shift_range=args.shift, height_shift_range=args.shift,
                   horizontal_flip=args.horizontal_flip, fill_mode=args.fill_mode)
    with scope:
        model = build_model(version=args.version, depth=args.depth or depth_of(args.version, args.n),
                            normalization=preprocessing.pixel_mean(data.train[0]), augment=augment,
                            input_shape=data.input_shape, num_classes=data.num_classes,
                            weight_decay=args.weight_decay, bn_momentum=args.bn_momentum)
        optimizer, schedule = recipe(args)
        model.compile(optimizer=optimizer,
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
                      metrics=["accuracy"])
    model.summary()

    # Training
    name = training.run_name(args, model.name)
    run = training.Run(args, data, name, best_template=f"{name}_model.{{epoch:03d}}.h5",  # the example's names
                       note=f"recipe {args.recipe}")
    callbacks = run.callbacks(schedule)  # the recipe's learning rate, then the callbacks of every run

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
