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
