"""Throughput of the collection on this machine: augmentation, training and
inference images/s, against what a user would otherwise run.

    python benchmarks/throughput.py                      # every installed backend
    python benchmarks/throughput.py --backends tensorflow --steps 5

It measures, and prints, and writes as JSON and as a Markdown table
(benchmarks/results/throughput.{json,md} by default):

1. augmentation images/s: our preprocessing layers (training.augmentation)
   against ImageDataGenerator with the same knobs, for the light set (shifts
   0.1, flips) and the heavy set (rotation 40, shifts 0.2, zoom 0.2, flips);
2. training images/s of every model of the collection, augmentation on and
   off, per installed backend (each in its own process);
3. the same ResNet-20 v1 in plain PyTorch, channels-last, same batch;
4. inference images/s in float32 and in mixed precision.

The peer ImageDataGenerator comes from tf_keras (TensorFlow's legacy
tf.keras) when installed, else from Keras 3's private legacy copy of the same
code; both need SciPy (`pip install -r benchmarks/requirements.txt`).
This is a benchmark, not a test: nothing here asserts a time.
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")

LIGHT = dict(width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True)
HEAVY = dict(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2, zoom_range=0.2,
             horizontal_flip=True)

def script(name):
    """A script of the collection, imported only in a worker (after its backend is set)."""
    import importlib
    return importlib.import_module(name)


# model: (build it with an augmentation dict or None, the augmentation its script uses, input shape)
MODELS = {
    "simple_cnn deep": (lambda aug: script("simple_cnn").build_model("deep", aug), HEAVY, (32, 32, 3)),
    "ResNet-20 v1": (lambda aug: script("resnet_cifar").build_model(1, 20, None, aug),
                     dict(width_shift_range=0.125, height_shift_range=0.125, horizontal_flip=True), (32, 32, 3)),
    "ResNet-56 v1": (lambda aug: script("resnet_cifar").build_model(1, 56, None, aug), LIGHT, (32, 32, 3)),
    "VGG-19": (lambda aug: script("vgg19_cifar").build_model("E", aug),
               dict(width_shift_range=0.125, height_shift_range=0.125, horizontal_flip=True,
                    fill_mode="constant"), (32, 32, 3)),
    "All-CNN-C": (lambda aug: script("allconv_cifar").build_model(aug), LIGHT, (32, 32, 3)),
    "ResNet-18 (Fashion-MNIST, 96x96)": (
        lambda aug: script("resnet18_fashion_mnist").build_model("imagenet", (28, 28, 1), 96, 10, aug),
        LIGHT, (28, 28, 1)),
}


def build(model_name, augment):
    return MODELS[model_name][0](augment)


def images(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n,) + shape, dtype=np.uint8), rng.integers(0, 10, size=(n, 1))


# --------------------------------------------------------------------------
# Measurements (run inside one backend's worker process)
# --------------------------------------------------------------------------

def augmentation_rate(knobs, batch_size, batches):
    """Our augmentation layers alone, in training mode, compiled as they are
    inside a training step: tf.function, jax.jit, or torch's eager mode."""
    import keras
    import augment
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for layer in augment.augmentation(**knobs, seed=0):
        x = layer(x)
    model = keras.Model(inputs, x)
    data = images(batch_size * batches, (32, 32, 3))[0].astype("float32") / 255.0
    data = [keras.ops.convert_to_tensor(data[i:i + batch_size]) for i in range(0, len(data), batch_size)]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        compiled = tf.function(lambda batch: model(batch, training=True))

        def run(batch):
            return compiled(batch).numpy()
    elif backend == "jax":
        import jax
        state = [v.value for v in model.non_trainable_variables]  # the random seeds' state
        compiled = jax.jit(lambda state, batch: model.stateless_call([], state, batch, training=True))

        def run(batch):
            nonlocal state
            out, state = compiled(state, batch)
            return out.block_until_ready()
    else:
        import torch

        def run(batch):
            with torch.no_grad():
                return model(batch, training=True)
    assert tuple(run(data[0]).shape) == (batch_size, 32, 32, 3)  # and compiled
    start = time.perf_counter()
    for batch in data:
        run(batch)
    return batch_size * len(data) / (time.perf_counter() - start)


def image_data_generator():
    """The seeds' ImageDataGenerator: tf_keras's, else Keras 3's legacy copy."""
    if importlib.util.find_spec("scipy") is None:
        return None, "needs SciPy: pip install -r benchmarks/requirements.txt"
    if importlib.util.find_spec("tf_keras") is not None:
        from tf_keras.preprocessing.image import ImageDataGenerator
        return ImageDataGenerator, "tf_keras.preprocessing.image.ImageDataGenerator"
    from keras.src.legacy.preprocessing.image import ImageDataGenerator
    return ImageDataGenerator, "keras.src.legacy.preprocessing.image.ImageDataGenerator"


def generator_rate(knobs, batch_size, batches):
    ImageDataGenerator, source = image_data_generator()
    if ImageDataGenerator is None:
        return None, source
    x, y = images(batch_size * batches, (32, 32, 3))
    flow = ImageDataGenerator(fill_mode="nearest", **knobs).flow(x.astype("float32") / 255.0, y,
                                                                 batch_size=batch_size, shuffle=False)
    next(flow)
    start = time.perf_counter()
    for _ in range(batches):
        next(flow)
    return batch_size * batches / (time.perf_counter() - start), source


def training_rate(model_name, augment, batch_size, steps, jit_compile="auto", policy="float32"):
    """Images/s of model.fit on uint8 arrays, as the scripts train: SGD with
    Nesterov momentum, one-hot targets; after one compiling fit."""
    import keras
    keras.utils.set_random_seed(0)
    shape = MODELS[model_name][2]
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build(model_name, augment)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), "categorical_crossentropy",
                  jit_compile=jit_compile)
    x, y = images(batch_size * steps, shape)
    y = keras.utils.to_categorical(y.ravel(), 10)
    model.fit(x[:2 * batch_size], y[:2 * batch_size], batch_size=batch_size, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return len(x) / (time.perf_counter() - start)


def inference_rate(model_name, policy, batch_size, batches):
    import keras
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build(model_name, None)
        x = images(batch_size * batches, MODELS[model_name][2])[0]
        model.predict(x[:batch_size], batch_size=batch_size, verbose=0)
        start = time.perf_counter()
        model.predict(x, batch_size=batch_size, verbose=0)
        return len(x) / (time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def torch_resnet20_rate(batch_size, steps):
    """The peer: ResNet-20 v1 written in plain PyTorch (same layers, he_normal
    aside), channels-last memory, SGD with Nesterov momentum, no augmentation."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=True)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=True)
            self.bn2 = nn.BatchNorm2d(cout)
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
    model = nn.Sequential(*layers).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    x_all, y_all = images(batch_size * steps, (32, 32, 3))
    x_all = torch.from_numpy(x_all).permute(0, 3, 1, 2).float().div(255).contiguous(
        memory_format=torch.channels_last)
    y_all = torch.from_numpy(y_all.ravel()).long()

    def step(i):
        xb, yb = x_all[i * batch_size:(i + 1) * batch_size], y_all[i * batch_size:(i + 1) * batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()

    model.train()
    for i in range(2):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return batch_size * steps / (time.perf_counter() - start)


def worker(args):
    """All measurements under one backend; writes a JSON dict to args.json."""
    import keras
    sys.path.insert(0, ROOT)
    backend = keras.backend.backend()
    result = {"backend": backend, "keras": keras.__version__, "augmentation": {}, "training": {},
              "inference": {}, "notes": []}

    def note(what, e):
        line = f"{backend}: {what} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        print("  " + line, flush=True)
        result["notes"].append(line)

    for name, knobs in (("light", LIGHT), ("heavy", HEAVY)):
        try:
            result["augmentation"][name] = augmentation_rate(knobs, args.batch_size, args.aug_batches)
            print(f"  {backend} augmentation {name}: {result['augmentation'][name]:.0f} images/s", flush=True)
        except Exception as e:  # one failing measurement does not lose the others
            note(f"augmentation {name}", e)
    for model_name in args.models:
        row = result["training"].setdefault(model_name, {})
        for label, augment in (("augmentation off", None), ("augmentation on", MODELS[model_name][1])):
            try:
                row[label] = training_rate(model_name, augment, args.batch_size, args.steps)
                print(f"  {backend} train {model_name} {label}: {row[label]:.0f} images/s", flush=True)
            except Exception as e:
                note(f"training {model_name} {label}", e)
        row = result["inference"].setdefault(model_name, {})
        for policy in ("float32", "mixed_bfloat16"):
            try:
                row[policy] = inference_rate(model_name, policy, 2 * args.batch_size, args.steps)
                print(f"  {backend} inference {model_name} {policy}: {row[policy]:.0f} images/s", flush=True)
            except Exception as e:
                note(f"inference {model_name} {policy}", e)
    if "ResNet-20 v1" in args.models:  # what else might close the gap to the PyTorch peer
        augment = MODELS["ResNet-20 v1"][1]
        variants = {"jit_compile=True (XLA)": dict(jit_compile=True),
                    "mixed precision (bfloat16)": dict(policy="mixed_bfloat16"),
                    f"batch {2 * args.batch_size}": dict(batch_size=2 * args.batch_size)}
        for label, change in variants.items():
            try:
                kwargs = {"batch_size": args.batch_size, **change}
                rate = training_rate("ResNet-20 v1", augment, steps=args.steps, **kwargs)
                result.setdefault("variants", {})[label] = rate
                print(f"  {backend} train ResNet-20 v1, augmentation on, {label}: {rate:.0f} images/s", flush=True)
            except Exception as e:
                note(f"ResNet-20 v1 {label}", e)
    with open(args.json, "w") as f:
        json.dump(result, f)


# --------------------------------------------------------------------------
# The run: one worker per backend, the peers, the table
# --------------------------------------------------------------------------

def machine():
    sys.path.insert(0, ROOT)
    import hardware
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
            try:
                out[name] = __import__(name).__version__
            except Exception:  # a broken install is reported, not fatal
                out[name] = "?"
    return out


def fmt(v):
    return "-" if v is None else f"{v:,.0f}"


def markdown(report):
    lines = [f"Measured on {report['machine']}, {report['date']}; batch {report['batch_size']}, "
             f"{report['steps']} timed steps after a compiling one; versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".", ""]
    backends = [r["backend"] for r in report["backends"]]
    lines += ["**Augmentation, images/s** (ours: compiled preprocessing layers; the seeds': "
              f"`{report['generator_source']}`)", "",
              "| knobs | ImageDataGenerator | " + " | ".join(f"ours ({b})" for b in backends) + " | speed-up |",
              "|---|---:|" + "---:|" * len(backends) + "---:|"]
    for name in ("light", "heavy"):
        ours = [r["augmentation"].get(name) for r in report["backends"]]
        peer = report["generator"].get(name)
        best = max([v for v in ours if v] or [0])
        speedup = f"{best / peer:.1f}x" if peer else "-"
        lines.append(f"| {name} | {fmt(peer)} | " + " | ".join(fmt(v) for v in ours) + f" | {speedup} |")
    lines += ["", "**Training, images/s** (augmentation off / on, and what augmentation costs of a step)", "",
              "| model | " + " | ".join(f"{b} off / on (cost)" for b in backends) + " |",
              "|---|" + "---:|" * len(backends)]
    for model_name in report["models"]:
        cells = []
        for r in report["backends"]:
            row = r["training"].get(model_name, {})
            off, on = row.get("augmentation off"), row.get("augmentation on")
            cost = f" ({1 - on / off:.0%})" if off and on else ""
            cells.append(f"{fmt(off)} / {fmt(on)}{cost}")
        lines.append(f"| {model_name} | " + " | ".join(cells) + " |")
    if report.get("torch_peer"):
        lines.append(f"| ResNet-20 v1, plain PyTorch channels-last (peer) | {fmt(report['torch_peer'])}, "
                     "augmentation off |" + " |" * (len(backends) - 1))
    variants = sorted({k for r in report["backends"] for k in r.get("variants", {})})
    if variants:
        lines += ["", "**ResNet-20 v1 training, augmentation on: settings tried**, images/s", "",
                  "| setting | " + " | ".join(backends) + " |", "|---|" + "---:|" * len(backends)]
        lines.append("| default (float32, jit_compile='auto') | " + " | ".join(
            fmt(r["training"].get("ResNet-20 v1", {}).get("augmentation on")) for r in report["backends"]) + " |")
        for label in variants:
            lines.append(f"| {label} | " + " | ".join(fmt(r.get("variants", {}).get(label))
                                                      for r in report["backends"]) + " |")
    lines += ["", "**Inference, images/s** (float32 / mixed precision, bfloat16 on CPUs)", "",
              "| model | " + " | ".join(f"{b} float32 / mixed" for b in backends) + " |",
              "|---|" + "---:|" * len(backends)]
    for model_name in report["models"]:
        cells = [f"{fmt(r['inference'].get(model_name, {}).get('float32'))} / "
                 f"{fmt(r['inference'].get(model_name, {}).get('mixed_bfloat16'))}" for r in report["backends"]]
        lines.append(f"| {model_name} | " + " | ".join(cells) + " |")
    notes = [n for r in report["backends"] for n in r.get("notes", [])] + report.get("notes", [])
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS,
                        default=[b for b in BACKENDS if importlib.util.find_spec(b)],
                        help="Keras backends to measure (default: the installed ones)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), metavar="MODEL",
                        help="models to train: " + ", ".join(MODELS))
    parser.add_argument("--batch-size", type=int, default=128, help="images per training step")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per measurement")
    parser.add_argument("--aug-batches", type=int, default=20, help="timed batches per augmentation measurement")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"),
                        help="folder for throughput.json and throughput.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.batch_size, args.steps, args.aug_batches) < 1:
        parser.error("--batch-size, --steps and --aug-batches must be positive")
    if args.worker:
        return worker(args)

    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "versions": versions(),
              "batch_size": args.batch_size, "steps": args.steps, "models": args.models,
              "backends": [], "generator": {}, "notes": []}
    print(f"Throughput on {report['machine']}")
    for name, knobs in (("light", LIGHT), ("heavy", HEAVY)):
        rate, report["generator_source"] = generator_rate(knobs, args.batch_size, args.aug_batches)
        report["generator"][name] = rate
        print(f"  ImageDataGenerator {name}: " + (f"{rate:.0f} images/s" if rate else report["generator_source"]),
              flush=True)
    for backend in args.backends:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            path = f.name
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--json", path,
               "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--aug-batches", str(args.aug_batches), "--models", *args.models]
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
        print(f"[{backend}]", flush=True)
        done = subprocess.run(cmd, env=env, cwd=ROOT)
        if done.returncode == 0 and os.path.getsize(path):
            with open(path) as f:
                report["backends"].append(json.load(f))
        else:
            report["notes"].append(f"the {backend} worker exited with status {done.returncode}")
        os.unlink(path)
    if "ResNet-20 v1" in args.models and importlib.util.find_spec("torch"):
        report["torch_peer"] = torch_resnet20_rate(args.batch_size, args.steps)
        print(f"  plain PyTorch ResNet-20 v1 (channels-last): {report['torch_peer']:.0f} images/s")

    os.makedirs(args.out, exist_ok=True)
    table = markdown(report)
    with open(os.path.join(args.out, "throughput.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "throughput.md"), "w") as f:
        f.write(table)
    print("\n" + table)
    print(f"Written: {os.path.join(args.out, 'throughput.json')} and throughput.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
