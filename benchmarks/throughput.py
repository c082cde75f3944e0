"""Throughput of the collection against what a user would otherwise run, in
figures that hold on a noisy machine.

    python benchmarks/throughput.py                         # every installed backend
    python benchmarks/throughput.py --backends tensorflow --windows 3 --seconds 2
    python benchmarks/throughput.py --docs                  # and put the table into docs/speed.md

What it measures, images/s:

1. augmentation: augment.RandomAffine (compiled as inside a training step)
   against the seeds' ImageDataGenerator with the same knobs, for the light
   set (shifts 0.1, flips) and the heavy set (rotation 40, shifts 0.2, zoom
   0.2, flips);
2. ResNet-20 v1 training with model.fit (SGD with Nesterov momentum, batch
   128, the recipe's augmentation) in each setting of VARIANTS, against the
   same network in plain PyTorch (channels-last, batch 128, no augmentation);
3. ResNet-20 at its defaults against the same network written in plain
   Keras (keras.layers alone, no augmentation) under the same backend, so
   that our own cost shows as a ratio of its own (--no-plain-keras: not);
4. a cross-check: for the default and bfloat16 settings, a real
   `resnet_cifar.py --recipe fast` run of REAL_EPOCHS short epochs per
   backend, its summary's training images/s beside the benchmark's
   (--no-real-runs: not);
5. optionally (--models) the other models' training, without a peer.

How: every measurement runs in a long-lived worker process (one per Keras
backend, one for ImageDataGenerator, one for plain PyTorch), set up and
compiled once. A window runs a fixed number of batches chosen to take about
--seconds (a model.fit window is timed from the end of its first step to
the end of its last: fit's set-up and teardown, paid once per 390 batches in
a real run, would be paid per window here); --windows windows are taken per
figure, each of ours alternating with its peer's (which goes first alternates too), so slow phases of the
machine hit both. A figure is the median window with the min and max beside
it; a speed-up is the median of the window-by-window ratios. The output says
how many windows and how long each. This is a benchmark, not a test: nothing
here asserts a time. The peer ImageDataGenerator comes from tf_keras when
installed (`pip install -r benchmarks/requirements.txt`), else from Keras 3's
private legacy copy of the same code; both need SciPy.
"""

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
BATCH = 128

KNOBS = {
    "light": dict(width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True),
    "heavy": dict(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, zoom_range=0.2,
                  horizontal_flip=True),
}
RESNET20_AUGMENT = dict(width_shift_range=0.125, height_shift_range=0.125, horizontal_flip=True,
                        fill_mode="constant")

# ResNet-20 training settings tried against the PyTorch peer (part of `fit`, the model or the step).
VARIANTS = {
    "default (float32, augmentation on)": {},
    "augmentation off": dict(augment=False),
    "mixed precision (bfloat16)": dict(policy="mixed_bfloat16"),
    "jit_compile=True (XLA; torch.compile)": dict(jit_compile=True),
    "steps_per_execution=8": dict(steps_per_execution=8, backends=("tensorflow", "jax")),  # torch refuses it
    # TensorFlow runs independent ops side by side, each on all cores: on 2 cores they fight
    "TensorFlow inter-op threads 1": dict(env={"TF_NUM_INTEROP_THREADS": "1"}, backends=("tensorflow",)),
    "batch 256": dict(batch_size=256),
    # torch convolves channels-first: a channels-last Keras model is transposed around every convolution
    "channels-first layers (torch)": dict(data_format="channels_first", backends=("torch",)),
    "channels-first layers, bfloat16 (torch)": dict(data_format="channels_first", policy="mixed_bfloat16",
                                                    backends=("torch",)),
    # the scripts train batch norm on torch's fused kernel (cifarkit.batchnorm); this is Keras's own layer
    "Keras's batch norm (torch)": dict(fused_batch_norm=False, backends=("torch",)),
}


def script(name):
    """A script of the collection, imported only in a worker (after its backend is set)."""
    import importlib
    sys.path.insert(0, ROOT)
    return importlib.import_module(name)


# model: (build it with an augmentation dict or None, the augmentation its script uses, input shape)
MODELS = {
    "ResNet-20 v1": (lambda aug: script("resnet_cifar").build_model(1, 20, None, aug), RESNET20_AUGMENT,
                     (32, 32, 3)),
    "simple_cnn deep": (lambda aug: script("simple_cnn").build_model("deep", aug), KNOBS["heavy"], (32, 32, 3)),
    "ResNet-56 v1": (lambda aug: script("resnet_cifar").build_model(1, 56, None, aug), KNOBS["light"],
                     (32, 32, 3)),
    "VGG-19": (lambda aug: script("vgg19_cifar").build_model("E", aug), RESNET20_AUGMENT, (32, 32, 3)),
    "All-CNN-C": (lambda aug: script("allconv_cifar").build_model(aug), KNOBS["light"], (32, 32, 3)),
    "ResNet-18 (Fashion-MNIST, 96x96)": (
        lambda aug: script("resnet18_fashion_mnist").build_model("imagenet", (28, 28, 1), 96, 10, aug),
        KNOBS["light"], (28, 28, 1)),
}


def images(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n,) + shape, dtype=np.uint8), rng.integers(0, 10, size=(n, 1))


# --------------------------------------------------------------------------
# Runners: each returns run(batches) -> images processed (inside a worker)
# --------------------------------------------------------------------------

def augmentation_runner(knobs):
    """augment.RandomAffine alone, in training mode, compiled as inside a
    training step: tf.function, jax.jit, or torch's eager mode."""
    import keras
    augment = script("cifarkit.augment")
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for layer in augment.augmentation(**KNOBS[knobs], seed=0):
        x = layer(x)
    model = keras.Model(inputs, x)
    batch = keras.ops.convert_to_tensor(images(BATCH, (32, 32, 3))[0].astype("float32") / 255.0)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        compiled = tf.function(lambda b: model(b, training=True))

        def once():
            compiled(batch).numpy()
    elif backend == "jax":
        import jax
        state = [v.value for v in model.non_trainable_variables]  # the random seeds' state
        compiled = jax.jit(lambda s, b: model.stateless_call([], s, b, training=True))

        def once():
            nonlocal state
            out, state = compiled(state, batch)
            out.block_until_ready()
    else:
        import torch

        def once():
            with torch.no_grad():
                model(batch, training=True)

    return loop_runner(once)


def loop_runner(once):
    """run(batches) -> (images, seconds): `once()` (one batch, finished on
    return) called `batches` times, timed."""
    def run(batches):
        start = time.perf_counter()
        for _ in range(batches):
            once()
        return BATCH * batches, time.perf_counter() - start
    return run


def generator_runner(knobs):
    """The seeds' ImageDataGenerator with the same knobs, on float images."""
    if importlib.util.find_spec("scipy") is None:
        raise RuntimeError("ImageDataGenerator needs SciPy: pip install -r benchmarks/requirements.txt")
    if importlib.util.find_spec("tf_keras") is not None:
        from tf_keras.preprocessing.image import ImageDataGenerator
    else:
        from keras.src.legacy.preprocessing.image import ImageDataGenerator
    x, y = images(BATCH * 16, (32, 32, 3))
    flow = ImageDataGenerator(fill_mode="nearest", **KNOBS[knobs]).flow(x.astype("float32") / 255.0, y,
                                                                         batch_size=BATCH, shuffle=False)

    return loop_runner(lambda: next(flow))


def built_channels_first(build, augment):
    """`build(augment)` with channels-first convolutions and pooling, batch
    norm on axis 1 and the preprocessed image transposed to (channels, height,
    width): for this measurement only (the scripts build channels-last models;
    the checkpoint still takes height x width x channels pixels)."""
    import functools
    import keras
    preprocessing = script("cifarkit.preprocessing")
    batch_norm, preprocess = keras.layers.BatchNormalization, preprocessing.preprocess
    keras.layers.BatchNormalization = functools.partial(batch_norm, axis=1)
    preprocessing.preprocess = lambda *a, **k: keras.layers.Permute((3, 1, 2))(preprocess(*a, **k))
    keras.config.set_image_data_format("channels_first")
    try:
        return build(augment)
    finally:
        keras.layers.BatchNormalization, preprocessing.preprocess = batch_norm, preprocess
        keras.config.set_image_data_format("channels_last")


def training_runner(model_name, variant):
    """model.fit over uint8 arrays, as the scripts train: SGD with Nesterov
    momentum, one-hot targets, the script's augmentation unless switched off."""
    import keras
    v = VARIANTS[variant]
    batch = v.get("batch_size", BATCH)
    build, augment, shape = MODELS[model_name]
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(v.get("policy", "float32"))
    try:
        augment = augment if v.get("augment", True) else None
        model = built_channels_first(build, augment) if v.get("data_format") == "channels_first" else build(augment)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), "categorical_crossentropy",
                  jit_compile=v.get("jit_compile", "auto"), steps_per_execution=v.get("steps_per_execution", 1))
    return fit_runner(model, batch, shape, v.get("steps_per_execution", 1), v.get("fused_batch_norm", True))


def fit_runner(model, batch, shape, steps_per_execution=1, fused_batch_norm=True):
    """run(batches) -> (images, seconds): one model.fit epoch over about that
    many batches of random uint8 images (a whole number of executions of
    the step function), batch norm on torch's fused kernel under torch as
    the scripts train (cifarkit.batchnorm; `fused_batch_norm=False`: Keras's
    own). Timed from the end of fit's first execution to the
    end of its last, each of the two waited for (its loss read, so that
    JAX's or a GPU's queued work is done): neither fit's set-up nor its
    teardown is counted. A real run pays those once an epoch of 390
    batches, a window would pay them once per window; under TensorFlow the
    teardown alone waits up to 2.5 s (a finished tf.data iterator waits for
    its autotuning thread's next tick), which made 3-4 s windows read
    TensorFlow up to 1.5x too slow."""
    import keras
    data = {}

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.executions, self.marks = 0, []

        def on_train_batch_end(self, step, logs=None):
            self.executions += 1
            if self.executions in (1, self.expected):
                if logs and "loss" in logs:
                    keras.ops.convert_to_numpy(logs["loss"])
                self.marks.append(time.perf_counter())

    clock = Clock()
    callbacks = [clock] + ([script("cifarkit.batchnorm").FuseBatchNorm()] if fused_batch_norm else [])

    def run(batches):
        clock.expected = max(2, math.ceil(batches / steps_per_execution))
        batches = clock.expected * steps_per_execution
        if batches not in data:
            data.clear()  # calibration's shorter runs are not kept beside the window's
            x, y = images(batch * batches, shape)
            data[batches] = (x, keras.utils.to_categorical(y.ravel(), 10))
        x, y = data[batches]
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
        if len(clock.marks) != 2:
            raise RuntimeError(f"fit ran {clock.executions} executions of its step, not {clock.expected}")
        return batch * steps_per_execution * (clock.expected - 1), clock.marks[1] - clock.marks[0]
    run.model = model  # for the tests
    return run


def plain_keras_runner():
    """The plain-Keras peer: ResNet-20 v1 written with keras.layers alone (no
    code of ours), the layers, initialisation, L2 1e-4 and batch-norm momentum
    of build_model's, pixels scaled by a Rescaling layer, no augmentation; SGD
    with Nesterov momentum and model.fit as `training_runner` trains ours. Our
    own cost (the augmentation, preprocessing) is the ratio against it."""
    import keras
    from keras import layers
    keras.utils.set_random_seed(0)

    def conv(x, filters, size=3, strides=1):
        return layers.Conv2D(filters, size, strides=strides, padding="same", kernel_initializer="he_normal",
                             kernel_regularizer=keras.regularizers.l2(1e-4))(x)

    def conv_bn(x, filters, strides=1, relu=True):
        x = layers.BatchNormalization()(conv(x, filters, strides=strides))
        return layers.Activation("relu")(x) if relu else x

    inputs = keras.Input((32, 32, 3))
    x = conv_bn(layers.Rescaling(1 / 255)(inputs), 16)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            strides = 2 if stage > 0 and block == 0 else 1
            y = conv_bn(conv_bn(x, filters, strides), filters, relu=False)
            if strides == 2:
                x = conv(x, filters, size=1, strides=2)
            x = layers.Activation("relu")(layers.add([x, y]))
    outputs = layers.Dense(10, activation="softmax", kernel_initializer="he_normal")(
        layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), "categorical_crossentropy")
    return fit_runner(model, BATCH, (32, 32, 3), fused_batch_norm=False)  # no code of ours


def pytorch_runner(autocast=False):
    """The peer: ResNet-20 v1 in plain PyTorch (the same layers; PyTorch's
    default initialisation), channels-last memory, SGD with Nesterov momentum
    and weight decay, batch 128, no augmentation; on the GPU where there is
    one, as Keras's backends are; with `autocast`, under torch.autocast in
    bfloat16 (the like-for-like peer of our mixed precision)."""
    import contextlib
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    device = "cuda" if torch.cuda.is_available() else "cpu"

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout)
            self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout)
            self.shortcut = nn.Conv2d(cin, cout, 1, stride) if stride != 1 else nn.Identity()

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.shortcut(x) + self.bn2(self.conv2(y)))

    layers, cin = [nn.Conv2d(3, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU()], 16
    for stage, cout in enumerate((16, 32, 64)):
        for block in range(3):
            layers.append(Block(cin, cout, 2 if stage > 0 and block == 0 else 1))
            cin = cout
    layers += [nn.AvgPool2d(8), nn.Flatten(), nn.Linear(64, 10)]
    model = nn.Sequential(*layers).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    x, y = images(BATCH * 8, (32, 32, 3))
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255).to(device).contiguous(
        memory_format=torch.channels_last)
    y = torch.from_numpy(y.ravel()).long().to(device)
    precision = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if autocast else contextlib.nullcontext

    def run(batches):
        start = time.perf_counter()
        for i in range(batches):
            j = (i % 8) * BATCH
            optimizer.zero_grad(set_to_none=True)
            with precision():
                loss = loss_fn(model(x[j:j + BATCH]), y[j:j + BATCH])
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()  # a window ends when the GPU has done its work, not when it was queued
        return BATCH * batches, time.perf_counter() - start
    run.model, run.optimizer, run.loss_fn, run.x, run.y = model, optimizer, loss_fn, x, y  # tests, step_pieces
    return run


def runner(task):
    kind = task["kind"]
    if kind == "augment":
        return augmentation_runner(task["knobs"])
    if kind == "generator":
        return generator_runner(task["knobs"])
    if kind == "train":
        return training_runner(task["model"], task["variant"])
    if kind == "keras":
        return plain_keras_runner()
    return pytorch_runner(task.get("autocast", False))


# --------------------------------------------------------------------------
# Workers: long-lived processes answering "one window of this task, please"
# --------------------------------------------------------------------------

def serve():
    """Worker loop: one JSON request per stdin line ({"task", "seconds"}),
    one JSON answer per stdout line. A task is set up, compiled and
    calibrated on its first request (its batches per window fixed then)."""
    channel, sys.stdout = sys.stdout, sys.stderr  # prints go to stderr; stdout carries answers
    prepared = {}
    for line in sys.stdin:
        request = json.loads(line)
        key = json.dumps(request["task"], sort_keys=True)
        try:
            if key not in prepared:
                run = runner(request["task"])
                run(2)  # compile and warm up
                prepared[key] = run, calibrate(run, request["seconds"])
            run, batches = prepared[key]
            start = time.perf_counter()
            n, seconds = run(batches)
            answer = {"rate": n / seconds, "seconds": seconds, "batches": batches,
                      "call_seconds": time.perf_counter() - start}
        except Exception as e:  # reported in the table's notes; the other figures go on
            answer = {"error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"}
        channel.write(json.dumps(answer) + "\n")
        channel.flush()


def calibrate(run, seconds):
    """How many batches make a window of about `seconds` of timed work
    (fit_runner times its batches after the first, so the fixed cost of a
    call is out of both the estimate and the window): estimated on a run of
    about that length, then one untimed run at the window's length (its data
    made, its caches warm), so that no timed window pays for either."""
    n = 2
    while True:
        _, spent = run(n)
        if spent >= seconds or n >= 4096:
            break
        n = max(2 * n, math.ceil(n * seconds / max(spent, 1e-9)))  # one step where a batch's cost dominates
    batches = max(2, math.ceil(seconds * n / max(spent, 1e-9)))
    run(batches)
    return batches


class Worker:
    """A `serve()` process under one Keras backend (or none)."""

    def __init__(self, backend, env=None):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND=backend or "tensorflow", **(env or {}))
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"], cwd=ROOT,
                                        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def window(self, task, seconds):
        self.process.stdin.write(json.dumps({"task": task, "seconds": seconds}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        return json.loads(line) if line else {"error": "the worker process died"}

    def close(self):
        self.process.stdin.close()
        self.process.wait()


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------

KERAS_KINDS = ("augment", "train", "keras")  # tasks run under a Keras backend (the others: their own worker)


def plan(backends, models, variants, augmentation=True, plain_keras=True):
    """(section, label, backend, our task, the peer's task or None), in the order measured."""
    entries = []
    for knobs in KNOBS if augmentation else ():
        for backend in backends:
            entries.append(("augmentation", knobs, backend, {"kind": "augment", "knobs": knobs},
                            {"kind": "generator", "knobs": knobs}))
    for variant in variants:
        # bfloat16 settings race PyTorch under autocast bfloat16; float32 ones, PyTorch in float32
        peer = {"kind": "pytorch", "autocast": VARIANTS[variant].get("policy") == "mixed_bfloat16"}
        for backend in backends:
            if backend not in VARIANTS[variant].get("backends", BACKENDS):
                continue
            entries.append(("resnet20", variant, backend,
                            {"kind": "train", "model": "ResNet-20 v1", "variant": variant}, peer))
    for backend in backends if plain_keras else ():
        entries.append(("plain", "default (float32, augmentation on)", backend,
                        {"kind": "train", "model": "ResNet-20 v1", "variant": "default (float32, augmentation on)"},
                        {"kind": "keras"}))
    for model in models:
        for backend in backends:
            entries.append(("models", model, backend,
                            {"kind": "train", "model": model, "variant": "default (float32, augmentation on)"},
                            None))
    return entries


# Settings a real script run can take, with its flags: each is cross-checked against resnet_cifar.py
REAL_RUNS = {"default (float32, augmentation on)": ["--no-mixed-precision"], "mixed precision (bfloat16)": ["--mixed-precision"]}
REAL_EPOCHS, REAL_SUBSET = 3, 12800  # the first epoch (compilation) is not counted


def real_run(backend, variant, data_dir=None, epochs=REAL_EPOCHS, subset=REAL_SUBSET):
    """The training images/s a real `resnet_cifar.py --recipe fast` run
    reports in its summary (epochs after the first, training part only), on
    the first `subset` CIFAR-10 images: what the benchmark's figure for the
    same setting and backend should agree with. Returns {"rate", "command"}
    or {"error"}."""
    import glob
    import tempfile
    flags = ["--recipe", "fast", "--epochs", str(epochs), "--subset", str(subset)] + REAL_RUNS[variant]
    command = f"KERAS_BACKEND={backend} python3 resnet_cifar.py " + " ".join(flags)
    with tempfile.TemporaryDirectory() as out:
        extra = ["--verbose", "0", "--output-dir", out] + (["--data-dir", data_dir] if data_dir else [])
        done = subprocess.run([sys.executable, "resnet_cifar.py"] + flags + extra, cwd=ROOT, capture_output=True,
                              text=True, env=dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2"))
        summaries = glob.glob(os.path.join(out, "*_summary.json"))
        if done.returncode or not summaries:
            last = (done.stderr.strip().splitlines() or ["no summary written"])[-1]
            return {"error": f"{backend} real run ({variant}): {last[:200]}"}
        with open(summaries[0]) as f:
            return {"rate": json.load(f)["train_images_per_s"], "command": command}


def cross_check(results, data_dir=None, log=print):
    """A real run per measured ResNet-20 setting of REAL_RUNS and backend,
    one after another (the machine to itself), beside the benchmark's
    figure: rows of section "real"."""
    rows = []
    for r in results:
        if r["section"] == "resnet20" and r["label"] in REAL_RUNS and "ours" in r:
            answer = real_run(r["backend"], r["label"], data_dir)
            row = {"section": "real", "label": r["label"], "backend": r["backend"], "errors": []}
            if "error" in answer:
                row["errors"].append(answer["error"])
            else:
                row.update(real=answer["rate"], command=answer["command"], benchmark=r["ours"]["median"])
                log(f"  real run {r['label']} [{r['backend']}]: {answer['rate']:,.0f} images/s "
                    f"(benchmark {r['ours']['median']:,.0f})")
            rows.append(row)
    return rows


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "windows": values}


def measure(entries, windows, seconds, log=print):
    workers = {}

    def worker_for(task, backend):
        env = VARIANTS.get(task.get("variant"), {}).get("env", {})
        keras_side = task["kind"] in KERAS_KINDS  # runs under the row's Keras backend
        key = (backend, json.dumps(env, sort_keys=True)) if keras_side else task["kind"]
        if key not in workers:
            workers[key] = Worker(backend if keras_side else None, env)
        return workers[key]

    raw = [{"ours": [], "peer": [], "errors": []} for _ in entries]
    try:
        for w in range(windows):
            for (section, label, backend, ours, peer), r in zip(entries, raw):
                if r["errors"]:
                    continue
                sides = [("ours", ours, backend)] + ([("peer", peer, backend)] if peer else [])
                for side, task, b in (sides if w % 2 == 0 else sides[::-1]):
                    answer = worker_for(task, b).window(task, seconds)
                    if "error" in answer:
                        r["errors"].append(f"{backend} {label} ({side}): {answer['error']}")
                        log(f"  {r['errors'][-1]}")
                        break
                    r[side].append(answer["rate"])
                    r.setdefault(side + "_seconds", []).append(answer["seconds"])
                else:
                    peer_text = f" / peer {r['peer'][-1]:,.0f}" if peer else ""
                    log(f"  window {w + 1}/{windows} {section} {label} [{backend}]: {r['ours'][-1]:,.0f}"
                        f"{peer_text} images/s")
    finally:
        for worker in workers.values():
            worker.close()
    results = []
    for (section, label, backend, ours, peer), r in zip(entries, raw):
        row = {"section": section, "label": label, "backend": backend, "errors": r["errors"]}
        if r["ours"] and not r["errors"]:
            row["ours"] = spread(r["ours"])
            row["window_seconds"] = spread(r["ours_seconds"])
            if peer:
                row["peer"] = spread(r["peer"])
                row["ratio"] = spread([a / b for a, b in zip(r["ours"], r["peer"])])
        results.append(row)
    return results


def fmt(s):
    return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"


def ratio(s):
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


def windows_text(n):
    return f"{n} window{'s' * (n != 1)}"


def markdown(report):
    rows = report["results"]
    lines = [f"Measured on {report['machine']}, {report['date']}: {windows_text(report['windows'])} of about "
             f"{report['seconds']:g} s per figure, ours alternating with the peer; median (min-max) images/s; "
             f"speed-up = median of the window-by-window ratios. Versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".", ""]

    def table(section, header, cells):
        chosen = [r for r in rows if r["section"] == section and ("ours" in r or "real" in r)]
        if chosen:
            lines.extend(header)
            lines.extend(cells(r) for r in chosen)
            lines.append("")

    table("augmentation", [f"**Augmentation** (augment.RandomAffine against `{report['generator']}`, "
                           f"batch {BATCH})", "",
                           "| knobs | backend | ours | ImageDataGenerator | speed-up |", "|---|---|---:|---:|---:|"],
          lambda r: f"| {r['label']} | {r['backend']} | {fmt(r['ours'])} | {fmt(r['peer'])} | {ratio(r['ratio'])} |")
    table("resnet20", ["**ResNet-20 v1 training** (model.fit; the peer: the same network in plain PyTorch, "
                       f"channels-last, batch {BATCH}, no augmentation, on the same device; for bfloat16 "
                       "settings, under torch.autocast in bfloat16)", "",
                       "| setting | backend | ours | plain PyTorch | ours / PyTorch |", "|---|---|---:|---:|---:|"],
          lambda r: f"| {r['label']} | {r['backend']} | {fmt(r['ours'])} | {fmt(r['peer'])} | {ratio(r['ratio'])} |")
    table("plain", ["**ResNet-20 v1 training against plain Keras** (the same network written with keras.layers "
                    "alone, no augmentation, same backend: what our augmentation and preprocessing cost)", "",
                    "| setting | backend | ours | plain Keras | ours / plain Keras |", "|---|---|---:|---:|---:|"],
          lambda r: f"| {r['label']} | {r['backend']} | {fmt(r['ours'])} | {fmt(r['peer'])} | {ratio(r['ratio'])} |")
    table("real", ["**Cross-check: real runs** (`resnet_cifar.py --recipe fast --epochs "
                   f"{report.get('real_epochs', 2)} --subset {REAL_SUBSET}`, training images/s from its summary "
                   "(the training part of the epochs after the first), run after the windows with the machine "
                   "to itself)", "",
                   "| setting | backend | benchmark (median) | real run | real / benchmark |",
                   "|---|---|---:|---:|---:|"],
          lambda r: f"| {r['label']} | {r['backend']} | {r['benchmark']:,.0f} | {r['real']:,.0f} | "
                    f"{r['real'] / r['benchmark']:.2f} |")
    table("models", ["**Other models' training** (augmentation on, batch 128)", "",
                     "| model | backend | ours |", "|---|---|---:|"],
          lambda r: f"| {r['label']} | {r['backend']} | {fmt(r['ours'])} |")
    notes = [e for r in rows for e in r["errors"]]
    if notes:
        lines += ["Not measured:"] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines).rstrip() + "\n"


def machine():
    sys.path.insert(0, ROOT)
    from cifarkit import hardware
    gpus = ""
    if importlib.util.find_spec("torch"):
        import torch
        if torch.cuda.is_available():
            gpus = ", GPU: " + torch.cuda.get_device_name(0)
    return f"{hardware.machine_description()}{gpus}; Python {platform.python_version()}"


def versions():
    out = {}
    for name in ("keras", "tensorflow", "jax", "torch", "numpy", "tf_keras", "scipy"):
        if importlib.util.find_spec(name):
            out[name] = subprocess.run([sys.executable, "-c", f"import {name}; print({name}.__version__)"],
                                       capture_output=True, text=True).stdout.strip() or "?"
    return out


def save_report(report, table, out, stem):
    """Write `stem`.json (the report) and `stem`.md (its table) into `out`, print
    the table, and return it."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out, stem + ".md"), "w") as f:
        f.write(table)
    print("\n" + table)
    print(f"Written: {os.path.join(out, stem + '.json')} and {stem}.md")
    return table


BEGIN = "<!-- speed table: generated by benchmarks/throughput.py; do not edit by hand -->"
END = "<!-- end of speed table -->"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS,
                        default=[b for b in BACKENDS if importlib.util.find_spec(b)],
                        help="Keras backends to measure (default: the installed ones)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        metavar="SETTING", help="ResNet-20 settings to measure: " + "; ".join(VARIANTS))
    parser.add_argument("--models", nargs="*", choices=list(MODELS)[1:], default=[], metavar="MODEL",
                        help="other models to time too: " + ", ".join(list(MODELS)[1:]))
    parser.add_argument("--augmentation", action=argparse.BooleanOptionalAction, default=True,
                        help="time augmentation against ImageDataGenerator too")
    parser.add_argument("--plain-keras", action=argparse.BooleanOptionalAction, default=True,
                        help="time ResNet-20 against the same network in plain Keras too")
    parser.add_argument("--real-runs", action=argparse.BooleanOptionalAction, default=True,
                        help=f"cross-check the default and bfloat16 figures against real resnet_cifar.py runs "
                             f"({REAL_EPOCHS} epochs of {REAL_SUBSET} images each, CIFAR-10 from --data-dir)")
    parser.add_argument("--data-dir", help="CIFAR-10 for the real runs (default: the scripts' own search)")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per figure")
    parser.add_argument("--seconds", type=float, default=4.0, help="about how long each window runs")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"),
                        help="folder for throughput.json and throughput.md")
    parser.add_argument("--docs", "--readme", dest="docs", action="store_true",
                        help="put the table into docs/speed.md (--readme: its old name)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve()
    if args.windows < 1 or args.seconds <= 0:
        parser.error("--windows must be at least 1 and --seconds positive")

    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "versions": versions(),
              "windows": args.windows, "seconds": args.seconds, "batch_size": BATCH,
              "generator": "tf_keras.preprocessing.image.ImageDataGenerator" if importlib.util.find_spec(
                  "tf_keras") else "keras.src.legacy.preprocessing.image.ImageDataGenerator"}
    print(f"Throughput on {report['machine']}: {windows_text(args.windows)} of about {args.seconds:g} s per figure")
    entries = plan(args.backends, args.models, args.variants, args.augmentation, args.plain_keras)
    report["results"] = measure(entries, args.windows, args.seconds)
    if args.real_runs:
        report["real_epochs"] = REAL_EPOCHS
        report["results"] += cross_check(report["results"], args.data_dir)
    table = save_report(report, markdown(report), args.out, "throughput")
    if args.docs:
        sys.path.insert(0, ROOT)
        import results_table
        path = os.path.join(ROOT, "docs", "speed.md")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(results_table.with_table(text, table.rstrip("\n"), BEGIN, END))
        print("docs/speed.md's table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
