"""Every bad value on every script's command line: one line, a non-zero exit,
before any data is read or any file written."""

import pytest

import allconv_cifar
from cifarkit import cli
import load_data
from cifarkit import datasets
import resnet18_fashion_mnist
import resnet_cifar
import simple_cnn
import vgg19_cifar

SCRIPTS = {"simple_cnn": simple_cnn, "resnet_cifar": resnet_cifar, "vgg19_cifar": vgg19_cifar,
           "allconv_cifar": allconv_cifar, "resnet18_fashion_mnist": resnet18_fashion_mnist}

EVERY_SCRIPT = [  # (flags, what the one line must name)
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--batch-size", "eight"], "--batch-size"),
    (["--epochs", "0"], "--epochs"),
    (["--learning-rate", "-1"], "--learning-rate"),
    (["--learning-rate", "0"], "--learning-rate"),
    (["--val-split", "1.0"], "--val-split"),
    (["--val-split", "-0.1"], "--val-split"),
    (["--subset", "-5"], "--subset"),
    (["--devices", "-1"], "--devices"),
    (["--verbose", "3"], "--verbose"),
    (["--data-dir", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["--output-dir", "/proc/no/such/place"], "/proc/no/such/place"),
]
PER_SCRIPT = {
    "simple_cnn": [(["--lr-drop-factor", "0"], "--lr-drop-factor"), (["--rotation-range", "400"], "--rotation-range"),
                   (["--zoom-range", "1.5"], "--zoom-range"), (["--width-shift-range", "-0.1"], "--width-shift-range"),
                   (["--lr-drop-epoch", "-1"], "--lr-drop-epoch"), (["--model", "huge"], "--model"),
                   (["--model", "deep_aug", "--fill-mode", "mirror"], "--fill-mode"),
                   (["--model", "deep_aug", "--fill-mode", "constant", "--cval", "black"], "--cval")],
    "resnet_cifar": [(["--recipe", "fast", "--learning-rate", "0"], "--learning-rate"),
                     (["--label-smoothing", "1"], "--label-smoothing"),
                     (["--plateau-factor", "1.5"], "--plateau-factor"), (["--plateau-factor", "1"], "--plateau-factor"),
                     (["--fill-mode", "mirror"], "--fill-mode"), (["--plateau-patience", "-1"], "--plateau-patience"),
                     (["--n", "0"], "--n"), (["--lr-steps", "[(80, -1)]"], "--lr-steps"),
                     (["--recipe", "fast", "--momentum", "1.0"], "--momentum"),
                     (["--recipe", "fast", "--epochs", "0"], "--epochs"),
                     (["--recipe", "fast", "--warmup-epochs", "-1"], "--warmup-epochs"), (["--recipe", "slow"], "--recipe"),
                     (["--recipe", "fast", "--bn-momentum", "1.5"], "--bn-momentum"),
                     (["--recipe", "fast", "--shift", "2.5"], "--shift"), (["--weight-decay", "-1e-4"], "--weight-decay"),
                     (["--fast-epochs", "5"], "--fast-epochs is now --epochs (with --recipe fast)"),
                     (["--depth", "21"], "depth must be 6n+2"), (["--depth", "20", "--n", "5"], "not both")],
    "vgg19_cifar": [(["--dropout", "1.0"], "--dropout"), (["--momentum", "-0.5"], "--momentum"),
                    (["--weight-decay", "-1"], "--weight-decay"), (["--shift", "2.5"], "--shift"),
                    (["--config", "Z"], "--config"), (["--bn-momentum", "2"], "--bn-momentum"),
                    (["--channel-mean", "[1, 2]"], "--channel-mean"), (["--channel-mean", "[300, 0, 0]"], "--channel-mean")],
    "allconv_cifar": [(["--input-dropout", "1"], "--input-dropout"), (["--lr-steps", "junk"], "--lr-steps"),
                      (["--momentum", "1"], "--momentum")],
    "resnet18_fashion_mnist": [(["--resize", "-1"], "--resize"), (["--bn-momentum", "2"], "--bn-momentum"),
                               (["--stem", "tiny"], "--stem"), (["--dataset", "mnist"], "--dataset")],
}
CASES = [(script, flags, named) for script in SCRIPTS for flags, named in EVERY_SCRIPT + PER_SCRIPT[script]]


@pytest.fixture
def no_data(monkeypatch):
    """Reading any data is a failure: the values must be refused before."""
    def refuse(*a, **k):
        raise AssertionError("data was read before the values were checked")
    for reader in ("load", "load_data", "load_fashion_mnist", "load_cifar100"):
        monkeypatch.setattr(datasets, reader, refuse)


@pytest.mark.parametrize("script,flags,named", CASES, ids=[f"{s}:{' '.join(f)}" for s, f, _ in CASES])
def test_bad_value_is_one_line_and_nothing_is_written(script, flags, named, no_data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--output-dir", str(out)] + flags  # a later --output-dir wins
    with pytest.raises(SystemExit) as exit_:
        SCRIPTS[script].main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert named in err, err
    assert not out.exists()


def test_output_dir_that_is_a_file_is_named(no_data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        simple_cnn.main(["--output-dir", str(blocker / "runs")])
    err = capsys.readouterr().err.strip()
    assert "is a file, not a folder" in err and str(blocker) in err


def test_every_rule_accepts_the_scripts_own_defaults():
    for module in SCRIPTS.values():
        for name, value, _ in cli.hyperparameters(module):
            if value is not None:  # None: resnet_cifar.py's recipe gives the value
                assert cli.check_value(name, value) is None, (module.__name__, name, value)
    for recipe, values in resnet_cifar.RECIPES.items():
        for key, value in values.items():
            assert cli.check_value(key.upper(), value) is None, (recipe, key, value)


def test_keras_value_errors_reach_the_user_as_one_line(capsys):
    def main():
        raise ValueError("Input 0 of layer 'dense' is incompatible with the layer:\nexpected axis -1 ...")
    with pytest.raises(SystemExit) as exit_:
        cli.run(main)
    assert exit_.value.code == 1
    line = main.__code__.co_firstlineno + 1  # where it was raised: an edited model's line is named
    assert capsys.readouterr().err == ("error: Input 0 of layer 'dense' is incompatible with the layer: "
                                       f"(at tests/test_cli.py line {line}, in main)\n")


def test_from_the_shell_a_bad_value_is_the_only_line_and_tensorflow_is_quiet(tmp_path):
    import os
    import subprocess
    import sys
    from conftest import ROOT
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "resnet_cifar.py", "--recipe", "fast", "--epochs", "0"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: --epochs must be 1 or more, got 0 "
                                          "(see resnet_cifar.py --help)"]
    # The user's own TF_CPP_MIN_LOG_LEVEL wins: at 0, TensorFlow's start-up lines are back.
    result = subprocess.run([sys.executable, "resnet_cifar.py", "--epochs", "0"], cwd=ROOT,
                            env=dict(env, TF_CPP_MIN_LOG_LEVEL="0"), capture_output=True, text=True, timeout=300)
    assert len(result.stderr.splitlines()) > 1 and result.stderr.splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_lists_every_hyperparameter(name, capsys):
    """--help works for every script (a % in a comment once broke it) and
    shows each hyperparameter's flag with its default."""
    module = SCRIPTS[name]
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    shown = capsys.readouterr().out
    for hyperparameter, value, _ in cli.hyperparameters(module.__file__):
        assert "--" + hyperparameter.lower().replace("_", "-") in shown
    assert shown.count("--image-size") >= 1
