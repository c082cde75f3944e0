"""What fit() and evaluate() are given for in-memory arrays: under TensorFlow a
tf.data pipeline of our own (streaming.tensorflow_batches), elsewhere the
arrays themselves."""

import warnings

import numpy as np
import pytest

import keras

from cifarkit import streaming

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the pipeline is TensorFlow's; other backends take the arrays")


def arrays(n=48):
    """Images whose every pixel holds the image's number (mod 256), targets the number itself."""
    images = (np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8))
    return images, np.arange(n, dtype="float32")


def epoch(dataset):
    """One pass: the batches' sizes and the targets in order; each image checked against its target."""
    sizes, seen = [], []
    for images, targets in dataset:
        images, targets = images.numpy(), targets.numpy()
        np.testing.assert_array_equal(images[:, 0, 0, 0], targets.astype(np.uint8))  # pairs stay together
        assert images.dtype == np.uint8  # raw pixels: preprocessing lives in the model
        sizes.append(len(targets))
        seen.extend(targets.astype(int))
    return sizes, seen


def test_training_batches_cover_every_image_once_an_epoch_in_a_new_order():
    x, y = arrays()
    inputs = streaming.inputs(x, y, batch_size=10, shuffle=True, seed=1)
    assert inputs["shuffle"] is False and set(inputs) == {"x", "shuffle"}  # fit() neither refuses nor warns
    dataset = inputs["x"]
    (sizes, first), (_, second) = epoch(dataset), epoch(dataset)
    assert sizes == [10, 10, 10, 10, 8]
    assert sorted(first) == sorted(second) == list(range(48))
    assert first != second and first != list(range(48))


def test_nothing_is_left_to_the_autotuner_so_epochs_start_at_once():
    """Keras's own pipeline for arrays (parallel map and prefetch tuned by
    tf.data's autotuner) made each epoch wait 2-15 s for the last epoch's
    autotuning thread on a 2-core CPU."""
    dataset = streaming.inputs(*arrays(), batch_size=10, shuffle=True)["x"]
    assert dataset.options().autotune.enabled is False


def test_evaluation_batches_keep_the_arrays_order():
    x, y = arrays(20)
    sizes, seen = epoch(streaming.inputs(x, y, batch_size=8)["x"])
    assert sizes == [8, 8, 4] and seen == list(range(20))


def test_a_resumed_run_does_not_replay_the_first_epochs_order():
    x, y = arrays()
    fresh = epoch(streaming.inputs(x, y, 10, shuffle=True, seed=1)["x"])[1]
    resumed = epoch(streaming.inputs(x, y, 10, shuffle=True, seed=1, epoch=3)["x"])[1]
    again = epoch(streaming.inputs(x, y, 10, shuffle=True, seed=1, epoch=3)["x"])[1]
    assert resumed != fresh and resumed == again  # its own order, the same each time


def test_multi_worker_training_and_the_other_backends_take_the_arrays(monkeypatch):
    x, y = arrays()
    given = streaming.inputs(x, y, 10, shuffle=True, arrays=True)
    assert given["x"] is x and given["y"] is y and given["batch_size"] == 10 and given["shuffle"]
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    assert streaming.as_arrays(x) and streaming.inputs(x, y, 10)["x"] is x


def test_fit_and_evaluate_train_on_the_pipeline():
    x, y = arrays(64)
    targets = keras.utils.to_categorical(y.astype(int) % 2, 2)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(**streaming.inputs(x, targets, 16, shuffle=True), epochs=2, verbose=0,
                            validation_data=streaming.inputs(x, targets, 32)["x"])
    assert len(history.history["val_loss"]) == 2
    assert not [w for w in caught if "shuffle" in str(w.message)]  # "shuffle=True ... will be ignored"
    from_pipeline = model.evaluate(**streaming.inputs(x, targets, 32), verbose=0)
    np.testing.assert_allclose(from_pipeline, model.evaluate(x, targets, batch_size=32, verbose=0), rtol=1e-5)


def test_a_streamed_folder_keeps_its_own_order(tmp_path):
    """FileBatches shuffles itself (epoch N's order from the seed and N, so a
    resumed run sees the batches it would have): fit() must not shuffle its
    batch order again, which Keras does to a PyDataset when shuffle is left True."""
    import load_data
    import cv2
    root = tmp_path / "photos"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            cv2.imwrite(str(root / c / f"{i}.png"), np.full((8, 8, 3), i, np.uint8))
    (x, y), _, _ = load_data.load_folder(str(root), stream=True)
    inputs = streaming.inputs(x, y, 2, shuffle=True, seed=3)
    assert isinstance(inputs["x"], streaming.FileBatches) and inputs["shuffle"] is False
