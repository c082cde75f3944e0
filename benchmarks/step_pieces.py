"""Keras's training step under the torch backend, piece by piece, against plain PyTorch's.

    python benchmarks/step_pieces.py                          # 5 windows of 20 batches, into benchmarks/results/
    python benchmarks/step_pieces.py --windows 2 --batches 5 --out /tmp/pieces

ResNet-20 v1 as throughput.py times it (batch 128, SGD with Nesterov
momentum, L2 1e-4 on the kernels, batch norm on torch's fused kernel as the
scripts train it), without augmentation, in float32, on random images. Each
row does what the row before it does and one piece more of what `model.fit`
does, so the difference between two rows is what that piece costs:

1. forward, loss and backward: `model(x, training=True)`,
   `model.compute_loss(...)`, `loss.backward()`;
2. and Keras's SGD update: `optimizer.apply(gradients, weights)`;
3. `model.train_step`: the same with zero_grad, the loss tracker and the
   metrics (Keras's own step, called in a loop);
4. `model.fit` over NumPy arrays, per batch (throughput.fit_runner's clock,
   which leaves out fit's set-up and teardown): each batch converted to a
   tensor, the epoch iterator, callbacks, logs;

rows 3 and 4 once as throughput.py compiles (cross-entropy, no metric) and
once as the scripts do (label smoothing 0.1 and the accuracy metric). Plain
PyTorch's rows: forward, loss and backward; and torch.optim.SGD's step
(foreach kernels). Rows 1-3 and PyTorch's run on tensors made once; the
rows alternate window by window, so a slow phase of the machine hits all;
each figure is the median of the windows' milliseconds per batch.
Before timing, `same_step` checks that rows 1-2 update the weights exactly
as Keras's own train_step does (else they would time something else; work
that moves no weight, an extra forward pass say, it cannot see). Keras's
rows include the model's own scaling of the pixels and the L2 penalties in
the loss; PyTorch's get scaled pixels and apply weight decay in the step.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import throughput  # noqa: E402

BENCHMARK_COMPILE = "cross-entropy, no metric (throughput.py's)"
SCRIPT_COMPILE = "label smoothing 0.1, accuracy metric (the scripts')"


def keras_model(compile_as):
    """throughput.py's ResNet-20 v1 without augmentation, batch norm fused,
    compiled as `compile_as` says."""
    import keras
    sys.path.insert(0, throughput.ROOT)
    from cifarkit import batchnorm
    keras.utils.set_random_seed(0)
    model = throughput.MODELS["ResNet-20 v1"][0](None)
    if compile_as == SCRIPT_COMPILE:
        loss, metrics = keras.losses.CategoricalCrossentropy(label_smoothing=0.1), ["accuracy"]
    else:
        loss, metrics = "categorical_crossentropy", None
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), loss, metrics=metrics)
    batchnorm.fuse(model)
    return model


def batches(count=8):
    """`count` batches of random images and one-hot labels, as torch tensors."""
    import keras
    x, y = throughput.images(throughput.BATCH * count, (32, 32, 3))
    y = keras.utils.to_categorical(y.ravel(), 10).astype("float32")  # as fit() converts them
    return [(keras.ops.convert_to_tensor(x[i:i + throughput.BATCH]),
             keras.ops.convert_to_tensor(y[i:i + throughput.BATCH]))
            for i in range(0, len(x), throughput.BATCH)]


def backward(model, x, y):
    """Row 1: forward, the compiled loss (with the L2 penalties) and backward;
    returns the weights and their gradients."""
    import torch
    model.zero_grad()
    with torch.enable_grad():
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
        loss.backward()
    weights = model.trainable_weights
    return weights, [w.value.grad for w in weights]


def update(model, x, y):
    """Row 2: row 1 and Keras's optimizer update, as train_step applies it."""
    import torch
    weights, gradients = backward(model, x, y)
    with torch.no_grad():
        model.optimizer.apply(gradients, weights)


def same_step(tolerance=1e-6):
    """Two steps of `update` leave the weights (and batch norms' moving
    statistics) where two of Keras's own train_step leave them, from the same
    start; returns the largest difference, raises past `tolerance`."""
    import numpy as np
    data = batches(2)
    ours, keras_own = keras_model(BENCHMARK_COMPILE), keras_model(BENCHMARK_COMPILE)
    keras_own.set_weights(ours.get_weights())
    for x, y in data:
        update(ours, x, y)
        keras_own.train_step((x, y))
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(ours.get_weights(), keras_own.get_weights()))
    if not worst <= tolerance:
        raise RuntimeError(f"rows 1-2 do not step as Keras's train_step does (weights differ by {worst:g})")
    return worst


def timed(step, data):
    """run(n) -> seconds for n steps over `data`, after the step's first call
    (on a GPU, until its queued work is done)."""
    import torch

    def run(n):
        step(*data[0])
        start = time.perf_counter()
        for i in range(n):
            step(*data[i % len(data)])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start
    return run


def fitted(model):
    """Row 4: run(n) -> seconds for n batches of model.fit over NumPy arrays
    (throughput.fit_runner's clock, which times the batches after the first)."""
    run = throughput.fit_runner(model, throughput.BATCH, (32, 32, 3))
    return lambda n: run(n)[1] * n / (n - 1)


def pytorch_rows():
    """Plain PyTorch's two rows: throughput.pytorch_runner's network, optimizer,
    loss and batches (on the GPU where there is one), its step cut in two."""
    peer, size = throughput.pytorch_runner(), throughput.BATCH
    data = [(peer.x[i:i + size], peer.y[i:i + size]) for i in range(0, len(peer.x), size)]

    def backward_only(xb, yb):
        peer.optimizer.zero_grad(set_to_none=True)
        peer.loss_fn(peer.model(xb), yb).backward()

    def with_step(xb, yb):
        backward_only(xb, yb)
        peer.optimizer.step()
    return timed(backward_only, data), timed(with_step, data)


def rows():
    """The table's rows in order: {name: (run(n) -> seconds for n batches,
    the row it adds a piece to, or None)}."""
    data = batches()
    plain = keras_model(BENCHMARK_COMPILE)
    one, two = "1. forward, loss and backward", "2. and Keras's SGD update"
    out = {one: (timed(lambda x, y: backward(plain, x, y), data), None),
           two: (timed(lambda x, y: update(plain, x, y), data), one)}
    before = two
    for compile_as in (BENCHMARK_COMPILE, SCRIPT_COMPILE):
        model = keras_model(compile_as)
        step = f"3. model.train_step, {compile_as}"
        out[step] = (timed(lambda x, y, m=model: m.train_step((x, y)), data), before)
        out[f"4. model.fit, {compile_as}"] = (fitted(keras_model(compile_as)), step)
        before = f"3. model.train_step, {BENCHMARK_COMPILE}"
    torch_backward, torch_step = pytorch_rows()
    out["PyTorch: forward, loss and backward"] = (torch_backward, None)
    out["PyTorch: and torch.optim.SGD's step"] = (torch_step, "PyTorch: forward, loss and backward")
    return out


def measure(runs, windows, n, log=print):
    """{row: [ms per batch of each window]}, the rows ({name: (run, ...)})
    taking turns in each window."""
    times = {name: [] for name in runs}
    for window in range(windows):
        for name, (run, _) in runs.items():
            times[name].append(1000 * run(n) / n)
            log(f"  window {window + 1}/{windows} {name}: {times[name][-1]:.1f} ms per batch")
    return times


def markdown(report):
    lines = [f"Measured on {report['machine']}, {report['date']}: ResNet-20 v1, batch {throughput.BATCH}, "
             f"float32, no augmentation, under Keras's torch backend; {report['windows']} windows of "
             f"{report['batches']} batches per row, the rows taking turns; median (min-max) milliseconds per "
             "batch. Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".", "",
             "| row | ms per batch | against | difference (ms) |", "|---|---:|---|---:|"]
    medians = {name: statistics.median(ms) for name, ms in report["ms_per_batch"].items()}
    for name, ms in report["ms_per_batch"].items():
        base = report["added_to"][name]
        cost = f"{medians[name] - medians[base]:+.1f}" if base else ""
        lines.append(f"| {name} | {medians[name]:.1f} ({min(ms):.1f}-{max(ms):.1f}) | {base or ''} | {cost} |")
    lines += ["", f"Rows 1-2 step as Keras's train_step does: weights within {report['same_step']:.1e} after two "
              "steps from the same start."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    os.environ["KERAS_BACKEND"] = "torch"  # before Keras is first imported
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--windows", type=int, default=5, help="timed windows per row")
    parser.add_argument("--batches", type=int, default=20, help="batches per window")
    parser.add_argument("--out", default=os.path.join(throughput.ROOT, "benchmarks", "results"),
                        help="folder for step_pieces.json and step_pieces.md")
    args = parser.parse_args(argv)
    if args.windows < 1 or args.batches < 2:
        parser.error("--windows must be at least 1 and --batches at least 2")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "torch":
        parser.error("Keras is already imported under another backend; run this script on its own")
    import torch
    torch.set_num_threads(os.cpu_count())
    report = {"machine": throughput.machine(), "date": time.strftime("%Y-%m-%d"),
              "versions": throughput.versions(), "windows": args.windows, "batches": args.batches,
              "same_step": same_step()}
    runs = rows()
    report["added_to"] = {name: base for name, (_, base) in runs.items()}
    report["ms_per_batch"] = measure(runs, args.windows, args.batches)
    throughput.save_report(report, markdown(report), args.out, "step_pieces")
    return 0


if __name__ == "__main__":
    sys.exit(main())
