"""airbench_cifar.py: each of airbench94's tricks does what it says, so one
silently off fails here: the first layer whitens the training patches and stays
frozen; the optimizer steps as airbench's PyTorch SGD with its parameter groups,
bias freezing and lookahead do; the lookahead's average is what is evaluated
and saved; every image is flipped in alternate epochs and shifted with
reflection; the checkpoint's test-time views are the ones named."""

import json

import numpy as np
import pytest

import keras

import airbench_cifar as ab
from cifarkit import preprocessing
from helpers import final_model_accuracy, use_synthetic


def smooth_images(n, size=32, seed=0):
    """Images whose neighbouring pixels are correlated, as photos' are (so
    whitening has something to undo): 8x8 noise blown up 4x, plus a little noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, size // 4, size // 4, 3))
    x = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2) + rng.integers(-20, 21, (n, size, size, 3))
    return np.clip(x, 0, 255).astype("uint8")


def normalization_of(x):
    flat = x.reshape(-1, 3)
    return preprocessing.channel_mean(flat.mean(0), flat.std(0))


def test_the_first_layer_whitens_the_training_patches():
    """Its 24 outputs (before the bias) on the training images' 2x2 patches:
    12 with covariance the identity (eps aside), then the same negated."""
    x = smooth_images(100)
    model = ab.build_model(normalization_of(x))
    ab.whiten(model, x, eps=1e-10)
    first = keras.Model(model.inputs, model.get_layer("whiten").output)
    out = first.predict(x, verbose=0).reshape(-1, 24)
    covariance = out[:, :12].T.astype("float64") @ out[:, :12] / len(out)  # uncentred, as airbench's
    np.testing.assert_allclose(covariance, np.eye(12), atol=2e-3)
    np.testing.assert_allclose(out[:, 12:], -out[:, :12], atol=1e-5)
    raw = x[:, :2, :2].reshape(len(x), -1).astype("float64")
    assert abs(np.corrcoef(raw.T)[0, 3]) > 0.5  # the pixels it decorrelates were correlated


def reference_run(params, grads, lr, momentum, decay, bias_scale, freeze_at, every, decay_at_end):
    """airbench94's own optimisation in PyTorch: SGD with Nesterov momentum and
    two parameter groups (biases at bias_scale x the rate, the same decay per
    step), a parameter frozen (requires_grad False) from step `freeze_at`, and
    LookaheadState's update every `every` steps, then at the last."""
    import torch
    w, b, f = (torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params)
    optimizer = torch.optim.SGD([dict(params=[b], lr=lr * bias_scale, weight_decay=decay / (lr * bias_scale)),
                                 dict(params=[w, f], lr=lr, weight_decay=decay / lr)], momentum=momentum, nesterov=True)
    steps = len(grads)
    alpha = decay_at_end * (np.arange(steps + 1) / steps) ** 3
    ema = [p.detach().clone() for p in (w, b, f)]

    def lookahead(d):
        with torch.no_grad():
            for e, p in zip(ema, (w, b, f)):
                e.lerp_(p, 1 - d)
                p.copy_(e)
    for t, g in enumerate(grads):
        f.requires_grad_(t < freeze_at)
        for p, gp in zip((w, b, f), g):
            p.grad = torch.tensor(gp, dtype=torch.float64) if p.requires_grad else None
        optimizer.step()
        if (t + 1) % every == 0:
            lookahead(alpha[t + 1])
        if t + 1 >= steps:
            lookahead(1.0)
    return [p.detach().numpy() for p in (w, b, f)]


def test_the_optimizer_steps_as_airbenchs_pytorch_sgd_with_lookahead():
    """Nesterov momentum, weight decay through the momentum, the bias group's
    64x rate without 64x the decay, the frozen bias, the lookahead: any one of
    them off and the weights differ from PyTorch's."""
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(4,)) for _ in range(3)]
    steps = 13  # the last step no multiple of 5: the weights end as the average
    grads = [[rng.normal(size=(4,)) for _ in range(3)] for _ in range(steps)]
    settings = dict(lr=0.02, momentum=0.85, decay=0.01, bias_scale=64.0, freeze_at=4, every=5, decay_at_end=0.7)
    expected = reference_run(params, grads, **settings)
    variables = [keras.Variable(p.astype("float32"), name=n) for p, n in zip(params, ("w", "bias", "frozen"))]
    optimizer = ab.AirbenchSGD(settings["lr"], momentum=0.85, decay=settings["decay"] / settings["lr"],
                               scales={variables[1].path: 64.0}, freeze_at={variables[2].path: 4}, every=5,
                               decay_at_end=0.7, steps=steps)
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(gp.astype("float32")) for gp in g], variables)
    for v, e in zip(variables, expected):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(v), e, rtol=1e-4, atol=1e-5)


def test_the_learning_rate_warms_up_then_decays_as_airbenchs():
    steps = 480
    schedule = ab.WarmupLinear(1.5, steps)
    up = int(steps * 0.23)
    for step in (0, 1, 50, up - 1, up, up + 1, 300, steps - 1, steps):
        frac = step / up if step < up else (step - up) / (steps - up)
        expected = 0.2 * (1 - frac) + frac if step < up else (1 - frac) + 0.07 * frac  # airbench94's get_lr
        assert float(schedule(step)) == pytest.approx(1.5 * expected, rel=1e-5)


def labelled_images(n):
    """Image i: its number in the top-left pixel's red, a bright left column
    (so a mirror shows), nothing else."""
    x = np.zeros((n, 8, 8, 3), np.uint8)
    x[:, :, 0, 1] = 255
    x[:, 0, 0, 0] = np.arange(n)
    return x


def flipped_in(batches):
    """{image number: mirrored?} over one epoch of batches."""
    seen = {}
    for i in range(len(batches)):
        x, _ = batches[i]
        mirrored = x[:, 0, -1, 1] == 255
        for row, m in zip(x, mirrored):
            seen[int(row[0, -1 if m else 0, 0])] = bool(m)
    return seen


@pytest.mark.parametrize("alternate", [True, False])
def test_alternating_flips_mirror_every_image_in_every_other_epoch(alternate):
    n = 40
    batches = ab.AirbenchBatches(labelled_images(n), np.zeros((n, 1)), 8, seed=3, alternate=alternate, translate=0)
    epochs = []
    for _ in range(3):
        epochs.append(flipped_in(batches))
        batches.on_epoch_end()
    assert all(len(e) == n for e in epochs)
    assert 10 < sum(epochs[0].values()) < 30  # about half in the first epoch
    alternated = all(epochs[0][i] != epochs[1][i] and epochs[2][i] == epochs[0][i] for i in range(n))
    assert alternated is alternate


def test_shifts_are_whole_pixels_within_two_with_the_border_reflected():
    import scipy.ndimage
    x = np.random.default_rng(0).integers(0, 256, (30, 10, 10, 3)).astype(np.uint8)
    shifts = np.random.default_rng(1).integers(-2, 3, (30, 2))
    got = ab.augment(x, np.zeros(30, bool), shifts, 2)
    for image, shift, out in zip(x, shifts, got):
        expected = scipy.ndimage.shift(image, (shift[0], shift[1], 0), order=0, mode="mirror")
        np.testing.assert_array_equal(out, expected)
    batches = ab.AirbenchBatches(x, np.zeros((30, 1)), 10, seed=0, flip=False, translate=2)
    assert len(batches) == 3 and set(np.unique(batches.shifts)) == {-2, -1, 0, 1, 2}


def test_the_checkpoints_test_time_views_are_airbenchs(tmp_path):
    """The wrapped model's output is the softmax of the weighted mean logits
    of the image, its mirror, both shifted one pixel (reflected) down-right
    and up-left, and their mirrors (weights 1/4, 1/4, 1/8 x 4); it saves to
    .h5 and loads with plain keras.models.load_model, predicting the same."""
    x = smooth_images(6, seed=1)
    model = ab.build_model(normalization_of(x), widths=(8, 8, 8))
    logits = keras.Model(model.inputs, model.get_layer("logits").output)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    views = [(0.25, x), (0.25, x[:, :, ::-1])]
    for crop in (padded[:, :32, :32], padded[:, 2:, 2:]):
        views += [(0.125, crop), (0.125, crop[:, :, ::-1])]
    mean = sum(w * logits.predict(v, verbose=0) for w, v in views)
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(mean))
    tta = ab.with_tta(model, 2)
    np.testing.assert_allclose(tta.predict(x, verbose=0), expected, atol=1e-5)
    np.testing.assert_allclose(ab.with_tta(model, 0).predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    tta.save(tmp_path / "tta.h5")
    loaded = keras.models.load_model(tmp_path / "tta.h5")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)


def test_a_run_evaluates_and_saves_the_lookahead_average_with_the_whitening_frozen(tmp_path, monkeypatch):
    """After a run its weights are the optimizer's lookahead averages (the
    last step, 8, is no multiple of 5), the whitening kernel is the one
    computed from the first training images, the final checkpoint holds those
    weights in its test-time views, and its summary gives both figures."""
    data = use_synthetic(monkeypatch, n_train=64, n_test=32)
    kept = {}
    original = ab.with_tta

    def keep(model, level):
        kept["model"] = model
        return original(model, level)
    monkeypatch.setattr(ab, "with_tta", keep)
    out = tmp_path / "out"
    assert ab.main(["--widths", "(8, 8, 8)", "--batch-size", "16", "--epochs", "2", "--verbose", "0",
                    "--output-dir", str(out)]) == 0
    model = kept["model"]
    optimizer = model.optimizer
    assert int(optimizer.iterations) == 8
    for v in model.trainable_variables:
        average = optimizer.averages[optimizer._get_variable_index(v)]
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), keras.ops.convert_to_numpy(average))
    kernel = keras.ops.convert_to_numpy(model.get_layer("whiten").kernel)
    np.testing.assert_allclose(kernel, ab.whitening_kernel(data[0][0], model.layers[1]), rtol=1e-5, atol=1e-5)
    summary = json.loads((out / "cifar10_airbench94_summary.json").read_text())
    assert summary["tta_views"] == 6
    import csv
    with open(out / "cifar10_airbench94_history.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]  # the single view is the last epoch's test evaluation, of these weights
    assert summary["test_accuracy_single_view"] == pytest.approx(float(last["val_accuracy"]), abs=1e-6)
    x_test, y_test = data[1]
    assert summary["test_accuracy"] == pytest.approx(final_model_accuracy(summary, x_test, y_test), abs=1e-6)
    assert summary["parameters"] == model.count_params()
    saved = keras.models.load_model(summary["files"]["final"])
    network = saved.get_layer("network")
    for name in ("whiten", "block2_conv1", "head"):
        np.testing.assert_array_equal(network.get_layer(name).get_weights()[0], model.get_layer(name).get_weights()[0])


def test_the_optimizer_takes_airbenchs_hyperparameters_in_their_decoupled_form():
    """At batch 1024 airbench's 11.5 per 1024 images is 1.5 for the mean
    loss, its weight decay 0.0153 per 1024 images is 0.0153 / 11.5 per unit
    of rate; exactly the batch norms' biases get 64x the rate; the whitening
    kernel is frozen from the start and its bias after 3 epochs."""
    args = ab.parse_args([])
    model = ab.build_model(normalization_of(smooth_images(4)))
    optimizer = ab.optimizer_for(args, model, steps_per_epoch=48)
    schedule = optimizer._learning_rate
    assert schedule.peak == pytest.approx(1.5) and schedule.steps == 480
    assert optimizer.decay == pytest.approx(0.0153 / 11.5)
    betas = {w.path for w in model.trainable_weights if w.path.endswith("/beta")}
    assert len(betas) == 6 and {p for p, s in optimizer.scales.items() if s == 64.0} == betas
    assert optimizer.freeze_at == {"whiten/kernel": 0, "whiten/bias": 3 * 48}


def test_the_lookahead_average_starts_from_the_weights_in_a_real_fit(tmp_path, monkeypatch):
    """With no step to speak of (a rate of 1e-12, no decay), a run ends with
    its initial weights: an average that started anywhere else (zeros, as
    when its start was assigned where fit() did not keep it) pulls them away."""
    use_synthetic(monkeypatch, n_train=64, n_test=32)
    kept = {}
    original = ab.build_model

    def keep(*args, **kwargs):
        kept["model"] = model = original(*args, **kwargs)
        kept["start"] = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
        return model
    monkeypatch.setattr(ab, "build_model", keep)
    assert ab.main(["--widths", "(8, 8, 8)", "--batch-size", "16", "--epochs", "2", "--verbose", "0", "--no-whiten",
                    "--learning-rate", "1e-12", "--weight-decay", "0", "--output-dir", str(tmp_path / "out")]) == 0
    for w, start in zip(kept["model"].trainable_weights, kept["start"]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(w), start, atol=1e-6, err_msg=w.path)


def test_the_checkpoint_loads_in_a_fresh_process_under_another_backend(tmp_path):
    """The checkpoint with its views is plain Keras: a new process under
    torch opens it with keras.models.load_model and predicts as it did here."""
    import os
    import subprocess
    import sys
    from conftest import ROOT
    x = smooth_images(4, seed=2)
    tta = ab.with_tta(ab.build_model(normalization_of(x), widths=(8, 8, 8)), 2)
    tta.save(tmp_path / "tta.h5")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", tta.predict(x, verbose=0))
    code = ("import sys, numpy as np, keras; m = keras.models.load_model(sys.argv[1] + '/tta.h5'); "
            "np.testing.assert_allclose(m.predict(np.load(sys.argv[1] + '/x.npy'), verbose=0), "
            "np.load(sys.argv[1] + '/expected.npy'), atol=1e-5); print('same', keras.backend.backend())")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, KERAS_BACKEND="torch"), timeout=600)
    assert done.returncode == 0 and "same torch" in done.stdout, done.stderr[-2000:]
