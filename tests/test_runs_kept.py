"""Nothing a user trained is lost by accident, and each script compiles the
optimizer its docstring promises."""

import csv

import pytest

import keras

import allconv_cifar
from cifarkit import cli
import resnet18_fashion_mnist
import resnet_cifar
import simple_cnn
import vgg19_cifar
from helpers import use_synthetic

ARGS = ["--model", "simple", "--epochs", "2", "--batch-size", "32", "--verbose", "0"]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def finished(tmp_path, monkeypatch):
    use_synthetic(monkeypatch, 96, 32)
    out = tmp_path / "out"
    simple_cnn.main(ARGS + ["--output-dir", str(out)])
    return out


def test_a_new_run_does_not_overwrite_a_finished_one(finished):
    history = (finished / "cifar10_simple_history.csv").read_text()
    with pytest.raises(cli.UsageError, match=r"already holds a run of cifar10_simple .*--resume.*--fresh"):
        simple_cnn.main(ARGS + ["--output-dir", str(finished)])
    assert (finished / "cifar10_simple_history.csv").read_text() == history
    simple_cnn.main(ARGS + ["--output-dir", str(finished), "--fresh", "--epochs", "1"])
    assert len(rows(finished / "cifar10_simple_history.csv")) == 1


def test_a_run_that_died_before_its_first_epoch_does_not_block_its_command(tmp_path, monkeypatch):
    """An edited model that fails in its first step (or a Ctrl-C while the
    data loads) left an empty backup and a header-only history: nothing to
    lose, so the same command runs again without --fresh."""
    use_synthetic(monkeypatch, 96, 32)
    out = tmp_path / "out"

    def broken(*args, **kwargs):
        raise ValueError("an edit that breaks the first step")
    real_fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", broken)
    with pytest.raises(ValueError, match="breaks the first step"):
        simple_cnn.main(ARGS + ["--output-dir", str(out)])
    assert (out / ".cifar10_simple_resume").is_dir()
    monkeypatch.setattr(keras.Model, "fit", real_fit)
    assert simple_cnn.main(ARGS + ["--output-dir", str(out)]) == 0
    assert len(rows(out / "cifar10_simple_history.csv")) == 2


def test_resume_of_a_finished_run_says_so(finished):
    with pytest.raises(cli.UsageError, match=r"has finished"):
        simple_cnn.main(ARGS + ["--output-dir", str(finished), "--resume"])


def test_resume_and_fresh_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        simple_cnn.main(ARGS + ["--output-dir", str(tmp_path), "--resume", "--fresh"])
    assert "give one of them" in capsys.readouterr().err


def test_resume_with_other_values_names_them_and_leaves_the_run(finished):
    """(Kills at every stage, then --resume: tests/test_kills.py.)"""
    history = (finished / "cifar10_simple_history.csv").read_text()
    with pytest.raises(cli.UsageError, match=r"--batch-size 32 \(now 64\)"):
        simple_cnn.main(ARGS[:5] + ["64"] + ARGS[6:] + ["--output-dir", str(finished), "--resume"])
    assert (finished / "cifar10_simple_history.csv").read_text() == history


def compiled_optimizer(monkeypatch, module, argv):
    """The optimizer `module.main(argv)` compiles its model with."""
    seen = {}

    class Compiled(Exception):
        pass

    def compile(self, optimizer=None, **kwargs):
        seen["optimizer"] = optimizer
        raise Compiled
    monkeypatch.setattr(keras.Model, "compile", compile)
    with pytest.raises(Compiled):
        module.main(argv)
    return seen["optimizer"]


@pytest.mark.parametrize("module,argv,kind,rate,nesterov", [
    (simple_cnn, [], keras.optimizers.Adam, simple_cnn.LEARNING_RATE, None),
    (resnet_cifar, ["--recipe", "seed"], keras.optimizers.Adam, resnet_cifar.RECIPES["seed"]["learning_rate"], None),
    (resnet_cifar, ["--recipe", "fast"], keras.optimizers.SGD, resnet_cifar.RECIPES["fast"]["learning_rate"], True),
    (vgg19_cifar, ["--config", "A"], keras.optimizers.SGD, vgg19_cifar.LEARNING_RATE, True),
    (allconv_cifar, [], keras.optimizers.SGD, allconv_cifar.LEARNING_RATE, True),
    (resnet18_fashion_mnist, ["--dataset", "cifar10"], keras.optimizers.Adam, resnet18_fashion_mnist.LEARNING_RATE,
     None),
], ids=["simple_cnn", "resnet_seed", "resnet_fast", "vgg", "allconv", "resnet18"])
def test_each_script_compiles_the_optimizer_its_docstring_names(module, argv, kind, rate, nesterov,
                                                                 monkeypatch, tmp_path):
    use_synthetic(monkeypatch, 32, 8)
    optimizer = compiled_optimizer(monkeypatch, module, argv + ["--output-dir", str(tmp_path)])
    assert type(optimizer) is kind
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(rate)
    if nesterov is not None:
        assert optimizer.nesterov is nesterov and optimizer.momentum == pytest.approx(0.9)
    # What the script says it uses: its docstring, or its learning rate's comment (the flag's help).
    said = (module.__doc__ or "") + " ".join(
        comment for name, _, comment in cli.hyperparameters(module.__file__) if name.endswith("LEARNING_RATE"))
    assert ("Adam" if kind is keras.optimizers.Adam else "SGD") in said


def test_a_run_out_of_order_is_refused_not_silently_restarted(tmp_path, monkeypatch):
    """The edits a Keras user makes to a script's training lines: resume()
    before callbacks() would skip the backup's restore (a resumed run would
    start again from epoch 0 and overwrite it); training_data() before
    resume() would shuffle a resumed streamed run from epoch 0; an `epochs=`
    edited in fit() alone would put the resume and summary out of step."""
    from cifarkit import devices, training
    use_synthetic(monkeypatch, 32, 16)
    args = simple_cnn.parse_args(["--model", "simple", "--epochs", "1", "--batch-size", "16", "--verbose", "0",
                                  "--output-dir", str(tmp_path)])
    devices.setup(args)
    data = training.prepare_data(args)
    run = training.Run(args, data, "order")
    model = simple_cnn.build_model("simple", input_shape=data.input_shape, num_classes=data.num_classes)
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    with pytest.raises(RuntimeError, match=r"run.callbacks\(...\) before run.resume"):
        run.resume(model)
    callbacks = run.callbacks()
    with pytest.raises(RuntimeError, match=r"run.resume\(model\) before run.training_data"):
        run.training_data(args.batch_size)
    initial_epoch = run.resume(model)
    with pytest.raises(cli.UsageError, match=r"fit\(epochs=2\) differs from the run's 1"):
        model.fit(**run.training_data(args.batch_size), validation_data=run.validation_data(), epochs=2,
                  initial_epoch=initial_epoch, callbacks=callbacks, verbose=0)


def test_a_run_resumed_on_another_number_of_devices_says_so(tmp_path, monkeypatch, capsys):
    """Its batch and learning rate were scaled by the devices it trained on:
    resumed on another number, the message names the devices, not a
    --batch-size the user never gave."""
    import json
    import glob
    use_synthetic(monkeypatch, 32, 16)
    argv = ["--model", "simple", "--epochs", "1", "--batch-size", "16", "--verbose", "0", "--output-dir", str(tmp_path)]
    simple_cnn.main(argv)
    (record,) = glob.glob(str(tmp_path / ".*_resume" / "run.json"))
    with open(record) as f:
        settings = json.load(f)
    settings.update(replicas=2, batch_size=32, learning_rate=2 * settings["learning_rate"])  # as 2 devices record it
    with open(record, "w") as f:
        json.dump(settings, f)
    with pytest.raises(cli.UsageError, match=r"trained on 2 device\(s\), global batch 32; resume it on as many"):
        simple_cnn.main(argv[:3] + ["2"] + argv[4:] + ["--resume"])


@pytest.mark.parametrize("script, argv, scaled", [
    (simple_cnn, ["--model", "simple"], False),  # Adam: the linear scaling rule is an SGD result
    (resnet_cifar, ["--depth", "8", "--recipe", "seed"], False),
    (resnet_cifar, ["--depth", "8", "--recipe", "fast"], True)])
def test_data_parallel_training_scales_the_rate_of_sgd_only(script, argv, scaled, tmp_path, monkeypatch):
    """On 2 replicas the global batch doubles; the learning rate doubles with
    it for SGD (Goyal et al.) and stays for Adam (an 8-GPU machine trained
    simple_cnn.py's Adam at 8e-3)."""
    import contextlib
    import json
    from cifarkit import devices
    use_synthetic(monkeypatch, 64, 16)
    monkeypatch.setattr(devices, "data_parallel", lambda n: (contextlib.nullcontext(), 2))
    given = script.parse_args(argv).learning_rate
    out = tmp_path / "out"
    assert script.main(argv + ["--epochs", "1", "--batch-size", "16", "--verbose", "0", "--output-dir", str(out)]) == 0
    (path,) = out.glob("*_summary.json")
    hyperparameters = json.loads(path.read_text())["hyperparameters"]
    assert hyperparameters["batch_size"] == 32
    assert hyperparameters["learning_rate"] == pytest.approx(given * (2 if scaled else 1))


def test_the_same_command_started_twice_leaves_the_first_alone(tmp_path, monkeypatch):
    """While the first run trains its first epoch (nothing finished yet) a
    second start of the same command would find nothing to lose and delete
    the first's backup; the record names the process that trains there."""
    import glob
    import json
    import subprocess
    import sys
    use_synthetic(monkeypatch, 64, 16)
    out = tmp_path / "out"
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: (_ for _ in ()).throw(ValueError("stopped in epoch 1")))
    with pytest.raises(ValueError):
        simple_cnn.main(ARGS + ["--output-dir", str(out)])
    (record,) = glob.glob(str(out / ".*_resume" / "run.json"))
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # the first run, training
    try:
        settings = json.load(open(record))
        json.dump(dict(settings, pid=first.pid), open(record, "w"))
        for extra in ([], ["--fresh"], ["--resume"]):
            with pytest.raises(cli.UsageError, match=rf"is training there now \(process {first.pid}\)"):
                simple_cnn.main(ARGS + ["--output-dir", str(out)] + extra)
    finally:
        first.kill()
        first.wait()
    monkeypatch.undo()
    use_synthetic(monkeypatch, 64, 16)
    assert simple_cnn.main(ARGS + ["--output-dir", str(out)]) == 0  # once it has ended
