"""Training across machines with TensorFlow's MultiWorkerMirroredStrategy.

TensorFlow only, and isolated here: a distribution strategy is TensorFlow's
own feature. Every worker runs the same script with the same flags; the
cluster comes from the TF_CONFIG environment variable, e.g. on machine 0

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
                "task": {"type": "worker", "index": 0}}' python resnet_cifar.py

and the same with "index": 1 on machine 1.

Keras 3's fit() cannot run under this strategy yet (keras-team/keras#20585),
so `attach` gives a model `fit` and `evaluate` of this module's own, called
as Keras's are (training.Run.resume attaches them), and `fit` runs the same epochs with a loop of its own: each worker
trains on its shard of every global batch, gradients are summed across all
replicas of all workers, batch-norm statistics are averaged across workers
after every epoch, and the scripts' callbacks (learning-rate schedule,
history, checkpoints, progress bar) are called as fit() calls them. Its step
is fit()'s: the loss is the model's compute_loss() (compile()'s loss plus
`model.losses`, the regularisation, as fit() and evaluate() log it), scaled by
the optimizer's scale_loss() before the gradients are taken, so a
LossScaleOptimizer (compile() adds one under mixed_float16) scales, unscales
and skips non-finite steps as under fit(); a step is skipped on every worker
when any worker's gradients are not finite. Every worker validates on the
whole validation set, so all take the same decisions; only the chief
(worker 0) writes files.
"""

import json
import os
import weakref

import numpy as np

import keras


def strategy_from_environment():
    """A MultiWorkerMirroredStrategy when TF_CONFIG names a cluster, else None.
    Must run before TensorFlow does anything else in the process."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return None
    try:
        workers = json.loads(config)["cluster"]["worker"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("TF_CONFIG must be JSON like {\"cluster\": {\"worker\": [\"host:port\", ...]}, "
                         "\"task\": {\"type\": \"worker\", \"index\": 0}}") from None
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"TF_CONFIG is set: training across machines needs KERAS_BACKEND=tensorflow, "
                         f"not {keras.backend.backend()}")
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    print(f"Multi-worker training: worker {task_index()} of {len(workers)}, "
          f"{strategy.num_replicas_in_sync} replicas in all")
    return strategy


def task_index():
    return int(json.loads(os.environ["TF_CONFIG"]).get("task", {}).get("index", 0))


def is_chief():
    """Worker 0 writes the checkpoints, history and summary."""
    return task_index() == 0


def _dataset(strategy, x, y, global_batch, seed):
    """Each worker's shard of the shuffled training set, in per-replica batches.
    Every worker shuffles with the same seed, so the shards are disjoint."""
    import tensorflow as tf

    def make(context):
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        ds = ds.shard(context.num_input_pipelines, context.input_pipeline_id)
        return ds.batch(context.get_per_replica_batch_size(global_batch), drop_remainder=True).prefetch(2)
    return strategy.distribute_datasets_from_function(make)


def attach(model, strategy, seed=0):
    """This model's `fit(x, y, batch_size=..., ...)` and `evaluate(x, y, ...)`
    become the loops below across the workers of `strategy`, taking the
    arguments a script gives Keras's own."""
    def fit_(x, y, batch_size, epochs, initial_epoch=0, validation_data=None, validation_batch_size=None,
             callbacks=(), verbose="auto", shuffle=True, **others):
        if others or initial_epoch:
            raise ValueError(f"multi-worker training (TF_CONFIG) does not take fit()'s "
                             f"{', '.join(sorted(others) or ['initial_epoch'])}")
        return fit(model, strategy, x, y, batch_size=batch_size, epochs=epochs, validation_data=validation_data,
                   callbacks=list(callbacks), verbose=verbose, seed=seed)

    def evaluate_(x, y, batch_size=256, verbose=0):
        return evaluate(model, x, y, batch_size)

    model.fit, model.evaluate = fit_, evaluate_


_evaluation_steps = weakref.WeakKeyDictionary()  # model: its compiled evaluation step


def evaluate(model, x, y, batch_size=256):
    """(loss, accuracy) of the whole set, computed by this worker alone; the
    loss as evaluate() reports it, regularisation included."""
    import tensorflow as tf
    if model not in _evaluation_steps:  # traced once, not once an epoch
        def step(xb, yb):
            loss, hits = _loss_and_hits(model, xb, yb, training=False)
            return _whole_loss(loss), hits
        _evaluation_steps[model] = tf.function(step)
    step = _evaluation_steps[model]
    total_loss, hits = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        loss, correct = step(xb, yb)
        total_loss += float(loss) * len(xb)
        hits += int(correct)
    return total_loss / len(x), hits / len(x)


def _loss_and_hits(model, xb, yb, training):
    """The loss as fit()'s train and test steps compute it: compile()'s loss
    plus model.losses (the regularisation). Keras divides it by the number of
    replicas in sync of the strategy in effect (so that the optimizer, which
    sums the replicas' gradients, takes their mean); `_whole_loss` undoes that."""
    import tensorflow as tf
    pred = model(xb, training=training)
    loss = model.compute_loss(x=xb, y=yb, y_pred=pred, training=training)
    hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(pred, -1), tf.argmax(yb, -1)), tf.int32))
    return loss, hits


def _whole_loss(loss):
    """A replica's share of the loss back to the loss itself, as Keras's
    unscale_loss_for_distribution does for the loss that fit() logs."""
    import tensorflow as tf
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss * tf.cast(replicas, loss.dtype) if replicas > 1 else loss


def _skipped_together(grads):
    """A LossScaleOptimizer skips a step (and halves its scale) when its
    gradients are not all finite, but it looks at this worker's gradients
    before they are summed across workers: left alone, one worker would skip
    while another waited for it in the sum. Any worker's non-finite gradient
    makes every worker's gradients NaN, so all skip together."""
    import tensorflow as tf
    present = [g for g in grads if g is not None]
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in present])
    bad = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
    poison = tf.where(bad > 0, float("nan"), 0.0)  # + 0.0 leaves a gradient exactly as it is
    return [None if g is None else g + tf.cast(poison, g.dtype) for g in grads]


def fit(model, strategy, x, y, *, batch_size, epochs, validation_data, callbacks, verbose, seed=0):
    """model.fit(x, y, batch_size=batch_size (global), epochs, validation_data,
    callbacks, verbose) across the workers of `strategy`."""
    import tensorflow as tf
    steps = len(x) // batch_size
    if steps < 1:
        raise ValueError(f"{len(x)} training images are fewer than one global batch of {batch_size}")
    data = _dataset(strategy, x, y, batch_size, seed)
    optimizer = model.optimizer
    loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    if not optimizer.built:  # as fit() does: built before tracing, scale_loss() reads the current scale
        with strategy.scope():
            optimizer.build(model.trainable_variables)

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            loss, hits = _loss_and_hits(model, xb, yb, training=True)  # this replica's share
            scaled = optimizer.scale_loss(loss)  # times the loss scale of a LossScaleOptimizer
        grads = tape.gradient(scaled, model.trainable_variables)
        if loss_scaled:
            grads = _skipped_together(grads)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))  # sums, unscales, skips
        return _whole_loss(loss), hits

    @tf.function
    def train_step(batch):
        loss, hits = strategy.run(replica_step, args=batch)
        return (strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None))

    statistics = [v for v in model.non_trainable_variables if "moving" in v.path]

    @tf.function
    def averaged_statistics():
        values = strategy.run(lambda: [tf.identity(v.value) for v in statistics])
        return [strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for v in values]

    callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                                 model=model, verbose=verbose, epochs=epochs, steps=steps)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        losses, hits, seen = [], 0, 0
        for step, batch in zip(range(steps), data):
            callback_list.on_train_batch_begin(step)
            loss, correct = train_step(batch)
            losses.append(float(loss))
            hits, seen = hits + int(correct), seen + batch_size
            callback_list.on_train_batch_end(step, {"loss": float(np.mean(losses)), "accuracy": hits / seen})
        for var, value in zip(statistics, averaged_statistics()):  # one set of BN statistics
            var.assign(value)
        logs = {"loss": float(np.mean(losses)), "accuracy": hits / seen}
        callback_list.on_test_begin()
        val_loss, val_acc = evaluate(model, *validation_data)
        callback_list.on_test_end({"loss": val_loss, "accuracy": val_acc})
        logs.update(val_loss=val_loss, val_accuracy=val_acc)
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history
