"""Tiny synthetic CIFAR-like data: each class has its own colour, so a model
can learn it in an epoch or two."""

import numpy as np


def synthetic_cifar(n_train=300, n_test=100, size=32, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    palette = rng.integers(30, 226, size=(10, channels))

    def make(n):
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        noise = rng.integers(-30, 31, size=(n, size, size, channels))
        x = np.clip(palette[y][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        return x, y.reshape(-1, 1)
    return make(n_train), make(n_test)


def use_synthetic(monkeypatch, n_train=300, n_test=100):
    """Make load_data.load_data() return synthetic data (no files involved)."""
    from cifarkit import datasets
    data = synthetic_cifar(n_train, n_test)
    monkeypatch.setattr(datasets, "load_data", lambda data_dir=None: data)
    return data


def final_model_accuracy(summary, x_test, y_test):
    """The test accuracy of the run's final checkpoint, computed here from its
    file: what the summary's test_accuracy must be."""
    import keras
    model = keras.models.load_model(summary["files"]["final"])
    predicted = np.argmax(model.predict(x_test, batch_size=256, verbose=0), axis=-1)
    return float(np.mean(predicted == np.ravel(y_test)))
