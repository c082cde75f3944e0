"""airbench94 in Keras: 94% on CIFAR-10 in ten epochs.

Keller Jordan's airbench94 ("94% on CIFAR-10 in 3.29 seconds on a single GPU",
arXiv 2404.00498; KellerJordan/cifar10-airbench, legacy/airbench94.py: 94.01%
mean over 1,000 runs in 9.9 epochs), its network and recipe written with Keras's
own layers and keras.ops, so it runs under TensorFlow, JAX and torch:

  network  a 2x2 convolution to 24 channels whose weights whiten the training
           set's 2x2 patches (frozen; its bias trains for 3 epochs), GELU; three
           blocks of width 64/256/256 (conv 3x3 without bias, max-pool 2, batch
           norm, GELU, conv 3x3, batch norm, GELU); max-pool over what is left; a
           linear head without bias, scaled by 1/9. Batch norm with a fast moving
           average (Keras momentum 0.6: PyTorch's 0.4) and no scale; each
           convolution's first filters start as the identity ("dirac").
  recipe   Nesterov SGD, momentum 0.85, batch 1024, label smoothing 0.2, weight
           decay through the momentum as PyTorch's SGD applies it, batch-norm
           biases at 64x the learning rate; the rate warms up linearly from 0.2x
           to its peak over the first 23% of steps, then falls linearly to 0.07x;
           every 5 steps the weights are pulled to a lookahead average of
           themselves (kept for the end: the averaged weights are evaluated and
           saved); every image is flipped in every other epoch (alternating
           flips), shifted by up to 2 pixels with reflection each epoch.
  figure   test-time augmentation over 6 views (the image, its mirror, both
           shifted by one pixel up-left and down-right; logits averaged with
           airbench's weights) is the headline; the single view is beside it.

Each trick is a hyperparameter below that switches it off (WHITEN, DIRAC_INIT,
BIAS_LR_SCALE 1, LOOKAHEAD_EVERY 0, ALTERNATE_FLIP, TTA_LEVEL 0, ...).

Where it differs from airbench94, and why: whole epochs (10, not 9.9: the
collection resumes and counts whole epochs); the network is evaluated on the
test set after every epoch as the collection's runs are (airbench does too,
untimed); the lookahead average covers the trained weights only, not batch
norm's moving statistics (the optimizer holds the average, so that it is
saved with a --resume backup and works under JAX, where a callback cannot
write the weights mid-epoch); batch norm's moving variance is Keras's
(biased) estimate.

The checkpoint carries the test-time augmentation: `<name>_final.h5` is the
trained network wrapped in its views (Keras's own layers: each view a fixed
remapping of rows and columns, a convolution with 0/1 weights), so
`keras.models.load_model` and predict.py give the headline figure's
predictions, and `inspect_checkpoint.py` its test accuracy. The per-epoch
`<name>_best.h5` is the single view.

    python airbench_cifar.py                     # 10 epochs, CIFAR-10
    python airbench_cifar.py --dataset photos/   # a folder of images, one subfolder per class

Expected result: 94.02% test accuracy with the 6 views (93.18% single view),
the mean of three runs at the defaults (`python3 airbench_cifar.py`, then
`--seed 1` and `--seed 2`: 94.08, 93.94 and 94.03%), TensorFlow in bfloat16 on
a 2-core AMD EPYC with AVX512-BF16, 17 to 18 minutes of training each;
results/airbench94_seed0/, _seed1/ and _seed2/ (commits 9fbdd79, a74a964 and
4a92831). airbench94's own mean over 1,000 runs: 94.01%.
"""

from cifarkit import quiet  # noqa: F401 (first: TensorFlow's start-up lines only when asked for)

import sys
import time

import numpy as np

import keras
from keras import layers, ops

from cifarkit import cli
from cifarkit import devices
from cifarkit import preprocessing
from cifarkit import streaming
from cifarkit import training

# Hyperparameters (each can be overridden on the command line: --epochs 5).
DATASET = "cifar10"  # cifar10, cifar100 (fine labels), cifar100_coarse, fashion_mnist or a folder of images
EPOCHS = 10  # passes over the training images (airbench94: 9.9)
BATCH_SIZE = 1024  # images per gradient step (the last partial batch of an epoch is dropped, as airbench does)
LEARNING_RATE = 11.5  # peak learning rate per 1024 images, airbench's decoupled form (1.5 for the mean loss at batch 1024)
MOMENTUM = 0.85  # Nesterov momentum
WEIGHT_DECAY = 0.0153  # weight decay per 1024 images, decoupled from the learning rate (airbench's form)
BIAS_LR_SCALE = 64.0  # batch-norm biases train at this multiple of the learning rate (not of the weight decay); 1: off
LABEL_SMOOTHING = 0.2  # label smoothing of the cross-entropy
WARMUP_FRACTION = 0.23  # the learning rate rises linearly over this fraction of the steps, then falls linearly
LR_START_FACTOR = 0.2  # the rate at the first step, as a fraction of the peak
LR_END_FACTOR = 0.07  # the rate at the last step, as a fraction of the peak
LOOKAHEAD_EVERY = 5  # every this many steps the weights are pulled to their lookahead average (0: off)
LOOKAHEAD_DECAY = 0.95 ** 5  # the average's decay at the last step; it grows as (step / steps)^3 towards it
WIDTHS = (64, 256, 256)  # the three blocks' widths
BN_MOMENTUM = 0.6  # batch norm's moving-average momentum, Keras's convention (PyTorch's 0.4)
LOGIT_SCALE = 1 / 9  # the head's output is multiplied by this
WHITEN = True  # the first convolution's weights whiten the training set's 2x2 patches, frozen (False: trained from a plain init)
WHITEN_IMAGES = 5000  # how many training images the whitening is computed from
WHITEN_BIAS_FREEZE_EPOCH = 3  # the first convolution's bias trains for this many epochs, then is frozen
DIRAC_INIT = True  # each 3x3 convolution's first filters (as many as its input channels) start as the identity
FLIP = True  # left-right mirrors in training
ALTERNATE_FLIP = True  # each image flipped in every other epoch (False: a fresh random half each epoch)
TRANSLATE = 2  # training images shifted by up to this many whole pixels, the border reflected (0: off)
TTA_LEVEL = 2  # test-time views: 0 the image, 1 and its mirror, 2 and both shifted one pixel up-left and down-right

WHITEN_EPS = 5e-4  # added to the patch covariance's eigenvalues before the whitening divides by their square roots
TTA_LEVELS = (0, 1, 2)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def pytorch_default():
    """PyTorch's default initialisation of convolutions and linear layers
    (uniform within 1/sqrt(fan_in)), which airbench starts from."""
    return keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform")


def conv_block(x, width, bn_momentum, name):
    """conv 3x3, max-pool 2, batch norm, GELU, conv 3x3, batch norm, GELU."""
    for i in (1, 2):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=pytorch_default(),
                          name=f"{name}_conv{i}")(x)
        if i == 1:
            x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-12, scale=False, name=f"{name}_norm{i}")(x)
        x = layers.Activation("gelu", name=f"{name}_gelu{i}")(x)
    return x


def build_model(normalization, input_shape=(32, 32, 3), num_classes=10, widths=WIDTHS, bn_momentum=BN_MOMENTUM,
                logit_scale=LOGIT_SCALE, dirac_init=DIRAC_INIT):
    """The uncompiled single-view classifier: raw uint8 pixels in,
    probabilities out. `normalization`: the layer that standardises the
    pixels (preprocessing.channel_mean). The whitening kernel is set from
    data afterwards (`whiten`)."""
    if min(input_shape[:2]) < 10:
        raise cli.UsageError(f"images of {input_shape[0]}x{input_shape[1]} are too small for this network's "
                             f"three poolings; use --image-size 10 or more")
    inputs = keras.Input(input_shape, name="image")
    x = normalization(inputs)
    x = layers.Conv2D(2 * input_shape[2] * 2 * 2, 2, padding="valid", kernel_initializer=pytorch_default(),
                      bias_initializer="zeros", name="whiten")(x)
    x = layers.Activation("gelu", name="whiten_gelu")(x)
    for i, width in enumerate(widths, 1):
        x = conv_block(x, width, bn_momentum, name=f"block{i}")
    # airbench's max-pool 3 is this on 32x32 (and 28x28) images, whose blocks leave 3x3; larger images keep one max
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(num_classes, use_bias=False, kernel_initializer=pytorch_default(), name="head")(x)
    x = layers.Rescaling(logit_scale, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="airbench94")
    if dirac_init:
        for layer in model.layers:
            if isinstance(layer, layers.Conv2D) and layer.kernel_size == (3, 3):
                kernel = ops.convert_to_numpy(layer.kernel)
                n = min(kernel.shape[2], kernel.shape[3])
                kernel[..., :n] = 0.0  # as torch.nn.init.dirac_: those filters pass one input channel each
                kernel[1, 1, np.arange(n), np.arange(n)] = 1.0
                layer.kernel.assign(kernel)
    return model


def whitening_kernel(images, normalization, eps=WHITEN_EPS):
    """The 2x2 convolution that whitens `images`' 2x2 patches (uint8, N x H x
    W x C, after `normalization`): the eigenvectors of the patches' (uncentred)
    covariance, each divided by the square root of its eigenvalue, largest
    first, then the same negated: (2, 2, C, 2 * 4C)."""
    covariance, count = 0.0, 0
    for start in range(0, len(images), 500):
        x = ops.convert_to_numpy(normalization(images[start:start + 500])).astype("float64")
        patches = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(1, 2))  # N, H-1, W-1, C, 2, 2
        patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 4 * x.shape[-1])  # rows, then columns, then channels
        covariance, count = covariance + patches.T @ patches, count + len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance / count)
    order = np.argsort(eigenvalues)[::-1]
    filters = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)  # (4C, 4C): one filter a column
    filters = np.concatenate([filters, -filters], axis=1)
    return filters.reshape(2, 2, x.shape[-1], -1).astype("float32")


def whiten(model, images, eps=WHITEN_EPS):
    """Set the first convolution's kernel to the whitening of `images` (the
    optimizer keeps it frozen: `optimizer_for`)."""
    model.get_layer("whiten").kernel.assign(whitening_kernel(images, model.layers[1], eps))


# --------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------

class WarmupLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from start x peak to the peak over the first `warmup` of the
    steps, then linear to end x peak at the last step."""

    def __init__(self, peak, steps, warmup=WARMUP_FRACTION, start=LR_START_FACTOR, end=LR_END_FACTOR):
        self.peak, self.steps, self.warmup, self.start, self.end = peak, steps, warmup, start, end

    def __call__(self, step):
        step = ops.cast(step, "float32")
        up = max(int(self.steps * self.warmup), 1)
        rising = self.start + (1 - self.start) * step / up
        falling = 1 + (self.end - 1) * (step - up) / max(self.steps - up, 1)
        return self.peak * ops.where(step < up, rising, falling)

    def get_config(self):
        return dict(peak=self.peak, steps=self.steps, warmup=self.warmup, start=self.start, end=self.end)


class AirbenchSGD(keras.optimizers.Optimizer):
    """Nesterov SGD as airbench runs it, with its lookahead.

    Keras's SGD falls short in three ways: its weight decay skips the
    momentum (PyTorch's, which airbench tunes, adds `decay x weight` to the
    gradient), it has one learning rate for every variable (batch-norm
    biases train at `scales` x it here), and it freezes no variable mid-run
    (the whitening bias stops at step `freeze_at`). Keras's EMA averages every
    step and would not be evaluated; airbench's lookahead every `every`
    steps sets the weights to `average + (1 - decay) (weights - average)`,
    `decay` rising as (step / steps)^3 to `decay_at_end`, and at the last step
    to the average. The averages are optimizer variables, so a --resume
    backup holds them."""

    def __init__(self, learning_rate, momentum, decay, scales=None, freeze_at=None, every=5,
                 decay_at_end=LOOKAHEAD_DECAY, steps=1, name="airbench_sgd", **kwargs):
        super().__init__(learning_rate, name=name, **kwargs)
        self.momentum, self.decay, self.every, self.decay_at_end, self.steps = momentum, decay, every, decay_at_end, steps
        # decay: per unit of learning rate, as PyTorch's SGD takes it (airbench's per-step decay / the peak rate)
        self.scales, self.freeze_at = dict(scales or {}), dict(freeze_at or {})  # by variable path

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]
        self.scale_of = [self.scales.get(v.path, 1.0) for v in variables]  # by index: update_step may get
        self.freeze_of = [self.freeze_at.get(v.path) for v in variables]  # the backend's variable, without a path
        # each average starts as its weights (an initializer: build may run where an assign would not last)
        self.averages = [self.add_variable_from_reference(v, "average", initializer=self._copy_of(v))
                         for v in variables] if self.every else []

    @staticmethod
    def _copy_of(variable):
        return lambda shape, dtype: ops.cast(ops.copy(variable.value), dtype)

    def update_step(self, gradient, variable, learning_rate):
        i = self._get_variable_index(variable)
        lr = ops.cast(learning_rate, variable.dtype)
        # the weight decay joins the gradient (so the momentum), not scaled with the bias's rate
        g = self.scale_of[i] * ops.cast(gradient, variable.dtype) + self.decay * variable
        momentum = self.momentums[i]
        self.assign(momentum, self.momentum * momentum + g)
        step = lr * (g + self.momentum * momentum)  # Nesterov
        if self.freeze_of[i] is not None:
            step = step * ops.cast(self.iterations < self.freeze_of[i], variable.dtype)
        new = variable - step
        if self.every:
            t = ops.cast(self.iterations + 1, variable.dtype)  # the steps done once this one is
            pull = ops.cast(ops.equal(ops.mod(self.iterations + 1, self.every), 0), variable.dtype)
            decay = self.decay_at_end * (t / self.steps) ** 3
            average = self.averages[i]
            averaged = average + pull * (1 - decay) * (new - average)
            self.assign(average, averaged)
            take = ops.maximum(pull, ops.cast(t >= self.steps, variable.dtype))
            new = take * averaged + (1 - take) * new
        self.assign(variable, new)

    def get_config(self):
        return dict(super().get_config(), momentum=self.momentum, decay=self.decay, every=self.every,
                    decay_at_end=self.decay_at_end, steps=self.steps)


def optimizer_for(args, model, steps_per_epoch):
    """airbench's hyperparameters in its decoupled form, as this optimizer takes them."""
    kilostep = 1 + 1 / (1 - args.momentum)  # airbench's measure of how much momentum enlarges a step
    peak = args.learning_rate * args.batch_size / 1024 / kilostep  # for the mean loss over a batch
    steps = steps_per_epoch * args.epochs
    norm_biases = {w.path for layer in model.layers if isinstance(layer, layers.BatchNormalization)
                   for w in layer.trainable_weights}
    whiten = model.get_layer("whiten")  # its kernel frozen by the optimizer, not by trainable=False, which
    freeze_at = {whiten.bias.path: args.whiten_bias_freeze_epoch * steps_per_epoch}  # reorders the saved weights
    if args.whiten:
        freeze_at[whiten.kernel.path] = 0
    decay = args.weight_decay * args.batch_size / 1024 / kilostep  # per step at the peak rate
    return AirbenchSGD(WarmupLinear(peak, steps, args.warmup_fraction, args.lr_start_factor, args.lr_end_factor),
                       momentum=args.momentum, decay=decay / peak,
                       scales={p: args.bias_lr_scale for p in norm_biases},
                       freeze_at=freeze_at,
                       every=args.lookahead_every, decay_at_end=args.lookahead_decay, steps=steps)


# --------------------------------------------------------------------------
# Data: alternating flips and reflected shifts, on uint8 batches
# --------------------------------------------------------------------------

class AirbenchBatches(keras.utils.PyDataset):
    """Training batches of `batch_size` (the last partial one dropped),
    shuffled, flipped and shifted per epoch. Epoch N's order, flips and
    shifts depend on the seed and N alone, so a resumed run sees what it
    would have. With `alternate`, image i is flipped in epoch N when its
    coin (drawn once) says so and N is even, or it does not and N is odd."""

    def __init__(self, images, targets, batch_size, seed=0, epoch=0, flip=True, alternate=True, translate=2):
        super().__init__(workers=1, use_multiprocessing=False, max_queue_size=4)
        self.images, self.targets, self.batch_size = images, np.asarray(targets), min(batch_size, len(images))
        self.seed, self.flip, self.alternate, self.translate = seed, flip, alternate, translate
        self.coins = np.random.default_rng([seed, 1]).random(len(images)) < 0.5
        self.start_epoch(epoch)

    def start_epoch(self, epoch):
        self.epoch, n = epoch, len(self.images)
        seed = self.seed
        self.order = np.random.default_rng([seed, 0, epoch]).permutation(n)
        if not self.flip:
            self.flips = np.zeros(n, bool)
        elif self.alternate:
            self.flips = self.coins ^ bool(epoch % 2)
        else:
            self.flips = np.random.default_rng([seed, 2, epoch]).random(n) < 0.5
        self.shifts = np.random.default_rng([seed, 3, epoch]).integers(-self.translate, self.translate + 1, (n, 2))

    @staticmethod
    def batches_in(n, batch_size):
        """Batches an epoch: the last partial one dropped (one, of all n, where n < batch_size)."""
        return n // min(batch_size, n)

    def __len__(self):
        return self.batches_in(len(self.images), self.batch_size)

    def __getitem__(self, index):
        chosen = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        x = self.images.read(chosen) if streaming.streamed(self.images) else self.images[chosen]
        return augment(x, self.flips[chosen], self.shifts[chosen], self.translate), self.targets[chosen]

    def on_epoch_end(self):
        self.start_epoch(self.epoch + 1)


def augment(x, flips, shifts, pad):
    """Mirror the images where `flips`, then shift image i by shifts[i] (rows,
    columns; whole pixels within +-pad), the border reflected."""
    x = np.where(flips[:, None, None, None], x[:, :, ::-1], x)
    if not pad:
        return x
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    rows = pad - shifts[:, :1] + np.arange(h)[None]  # shifted down by s: output row r is input row r - s
    cols = pad - shifts[:, 1:] + np.arange(w)[None]
    return padded[np.arange(len(x))[:, None, None], rows[:, :, None], cols[:, None, :]]


# --------------------------------------------------------------------------
# Test-time augmentation, inside the checkpoint
# --------------------------------------------------------------------------

def reflect(index, size):
    return np.abs(index) if index < 0 else (2 * (size - 1) - index if index >= size else index)


def tta_views(height, width, level=TTA_LEVEL):
    """airbench's views as (weight, rows, columns): output pixel (r, c) of a
    view is input pixel (rows[r], columns[c]); None keeps an axis as it is."""
    mirror = list(range(width - 1, -1, -1))
    if level == 0:
        return [(1.0, None, None)]
    if level == 1:
        return [(0.5, None, None), (0.5, None, mirror)]
    views = [(0.25, None, None), (0.25, None, mirror)]
    for s in (1, -1):  # reflect-pad 1, crop at (0, 0): moved down-right; at (2, 2): up-left
        rows = [reflect(r - s, height) for r in range(height)]
        cols = [reflect(c - s, width) for c in range(width)]
        views += [(0.125, rows, cols), (0.125, rows, cols[::-1])]
    return views


def remap(x, rows, cols, name):
    """x (N, H, W, C) with its rows and columns picked anew: a convolution
    per axis whose 0/1 kernel copies pixel by pixel (exact in any precision)."""
    _, h, w, c = x.shape
    if cols is not None:
        kernel = np.zeros((1, w, c, w * c), "float32")
        for j, source in enumerate(cols):
            kernel[0, source, np.arange(c), j * c + np.arange(c)] = 1
        conv = layers.Conv2D(w * c, (1, w), use_bias=False, trainable=False, dtype="float32", name=f"{name}_cols")
        x = layers.Reshape((h, w, c), name=f"{name}_cols_back")(conv(x))
        conv.set_weights([kernel])
    if rows is not None:
        kernel = np.zeros((h, 1, c, h * c), "float32")
        for i, source in enumerate(rows):
            kernel[source, 0, np.arange(c), i * c + np.arange(c)] = 1
        conv = layers.Conv2D(h * c, (h, 1), use_bias=False, trainable=False, dtype="float32", name=f"{name}_rows")
        x = layers.Reshape((w, h, c), name=f"{name}_rows_back")(conv(x))
        x = layers.Permute((2, 1, 3), name=f"{name}_rows_order")(x)
        conv.set_weights([kernel])
    return x


def with_tta(model, level=TTA_LEVEL):
    """The classifier wrapped in its test-time views: uint8 pixels in, the
    softmax of the views' weighted mean logits out (the same weights)."""
    normalization = model.layers[1]
    network = keras.Model(normalization.output, model.get_layer("logits").output, name="network")
    inputs = keras.Input(model.inputs[0].shape[1:], name="image")
    x = normalization(inputs)
    logits = []
    for k, (weight, rows, cols) in enumerate(tta_views(*x.shape[1:3], level)):
        view = remap(x, rows, cols, f"view{k}")
        logits.append(layers.Rescaling(weight, dtype="float32", name=f"view{k}_weight")(network(view)))
    mean = layers.Add(dtype="float32", name="tta_logits")(logits) if len(logits) > 1 else logits[0]
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(mean)
    return keras.Model(inputs, outputs, name=f"{model.name}_tta{level}")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

CHECKS = {  # what the collection's checks by name leave open: (good?, what a good value is)
    "lookahead_every": (lambda v: isinstance(v, int) and v >= 0, "a whole number, 0 (off) or more"),
    "translate": (lambda v: isinstance(v, int) and v >= 0, "a whole number of pixels, 0 (off) or more"),
    "whiten_images": (lambda v: isinstance(v, int) and v >= 1, "a whole number, 1 or more"),
    "whiten_bias_freeze_epoch": (lambda v: isinstance(v, int) and v >= 0, "a whole number, 0 or more"),
    "warmup_fraction": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "lookahead_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "bias_lr_scale": (lambda v: v > 0, "more than 0"),
    "logit_scale": (lambda v: v > 0, "more than 0"),
    "widths": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(w, int) and w >= 1 for w in v),
               "three whole numbers, e.g. (64, 256, 256)"),
}


def parse_args(argv=None):
    """The command line over the hyperparameters above, as this module holds them now."""
    args = cli.parse_args(sys.modules[__name__], __doc__.splitlines()[0], argv, choices={"TTA_LEVEL": TTA_LEVELS},
                          only={"ALTERNATE_FLIP": {"FLIP": (True,)}})
    for name, (good, expected) in CHECKS.items():
        value = getattr(args, name)
        if isinstance(value, bool) or not good(value):
            cli.OneLineParser(prog="airbench_cifar.py").error(f"--{name.replace('_', '-')} must be {expected}, "
                                                                f"got {value!r}")
    return args


def sample(images, n):
    """The first n images as an array (read from disk for a streamed folder)."""
    n = min(n, len(images))
    return images.read(np.arange(n)) if streaming.streamed(images) else images[:n]


def main(argv=None):
    args = parse_args(argv)
    # seeds, precision and devices: the scope to build the model in (its rate follows the batch already)
    scope = devices.setup(args, scale_learning_rate=False)

    # Data
    data = training.prepare_data(args)  # data.train, data.validation, data.test: (images, labels)
    job_start = time.perf_counter()  # airbench's timed job: whitening, training, test-time evaluation
    first = sample(data.train[0], args.whiten_images)  # the whitening's images; and the channels' statistics
    mean, std = first.reshape(-1, first.shape[-1]).mean(0), first.reshape(-1, first.shape[-1]).std(0)

    # Model
    with scope:
        model = build_model(preprocessing.channel_mean(mean, std), input_shape=data.input_shape,
                            num_classes=data.num_classes, widths=tuple(args.widths), bn_momentum=args.bn_momentum,
                            logit_scale=args.logit_scale, dirac_init=args.dirac_init)
        if args.whiten:
            whiten(model, first)
        steps_per_epoch = AirbenchBatches.batches_in(len(data.train[0]), args.batch_size)
        model.compile(optimizer=optimizer_for(args, model, steps_per_epoch),
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
                      metrics=["accuracy"])
    model.summary()

    # Training
    run = training.Run(args, data, training.run_name(args, "airbench94"), note="single view each epoch")
    callbacks = run.callbacks()  # those of every run
    initial_epoch = run.resume(model)  # --resume: the last finished epoch's weights, optimizer and callbacks
    batches = AirbenchBatches(data.train[0], training.one_hot(data.train[1], data.num_classes), args.batch_size,
                              seed=args.seed, epoch=initial_epoch, flip=args.flip, alternate=args.alternate_flip,
                              translate=args.translate)  # flipped and shifted as the epoch it starts at
    fitted = model.fit(batches, shuffle=False, validation_data=run.validation_data(), epochs=args.epochs,
                       initial_epoch=initial_epoch, callbacks=callbacks, verbose=args.verbose)

    # Evaluation and saving: the single view, then the test-time views (the headline, and the checkpoint)
    last = {k: v[-1] for k, v in fitted.history.items() if v}
    if data.validation[0] is data.test[0] and "val_accuracy" in last:  # the last epoch's, of these weights
        single_loss, single_accuracy = last["val_loss"], last["val_accuracy"]
    else:
        single_loss, single_accuracy = model.evaluate(**run.test_data(), verbose=0)
    tta = with_tta(model, args.tta_level)
    tta.compile(loss=keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    test_loss, test_accuracy = tta.evaluate(**run.test_data(), verbose=0)
    job_seconds = time.perf_counter() - job_start  # (with this session's checkpoints and backups; data loading apart)
    views = len(tta_views(*data.input_shape[:2], args.tta_level))
    print(f"Single view: test accuracy {single_accuracy:.4f}; with its {views} test-time views (the checkpoint):")
    run.save(tta, test_loss, test_accuracy, parameters=model.count_params(),
             extra={"test_accuracy_single_view": float(single_accuracy), "test_loss_single_view": float(single_loss),
                    "tta_views": views, "job_seconds": round(job_seconds, 2)})
    return 0


if __name__ == "__main__":
    cli.run(main)
