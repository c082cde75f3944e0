"""The top of the file is the truth: the edits people make to a script's
hyperparameters (the comment removed, an expression, the comment on the line
above, a list over several lines, a value set from Python before main()) all
reach the run, and a value the command line cannot give is one line.

Each edit is made to a copy of the script in tmp_path, imported as a module of
its own, with the repo's modules importable (conftest puts the repo on sys.path)."""

import glob
import importlib
import importlib.util
import json
import os
import re
import sys

import pytest

from cifarkit import cli
from conftest import ROOT
from helpers import use_synthetic

SCRIPTS = ["simple_cnn", "resnet_cifar", "vgg19_cifar", "allconv_cifar", "resnet18_fashion_mnist"]
WITH_LR_STEPS = ["resnet_cifar", "vgg19_cifar", "allconv_cifar"]
MODES = {"resnet_cifar": [["--recipe", "seed"], ["--recipe", "fast"]]}  # every recipe; one run for the others


def edited(tmp_path, monkeypatch, script, *edits):
    """A copy of `script` with each `NAME = ...` line replaced by its new text, imported as `edited_<script>`."""
    with open(os.path.join(ROOT, script + ".py"), encoding="utf-8") as f:
        source = f.read()
    for name, text in edits:
        source, found = re.subn(rf"^{name} = .*$", lambda _: text, source, count=1, flags=re.M)
        assert found == 1, f"{script}.py has no line `{name} = ...`"
    name = f"edited_{script}"
    path = tmp_path / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def parse(module, tmp_path, *flags):
    return module.parse_args([*flags, "--output-dir", str(tmp_path / "out")])


def help_text(module, capsys):
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(["--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def refused(module, tmp_path, capsys, *flags):
    """The one line a refused parse printed (exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        parse(module, tmp_path, *flags)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_simple_cnn_with_expressions_and_no_comments_trains_one_epoch_at_batch_64(tmp_path, monkeypatch):
    """The issue's "done when": EPOCHS = 3 - 2 and BATCH_SIZE = 16 * 4, with
    no comments, train one epoch at batch 64 (they used to be no flags at
    all, and main() stopped on `args.batch_size`)."""
    module = edited(tmp_path, monkeypatch, "simple_cnn", ("EPOCHS", "EPOCHS = 3 - 2"),
                    ("BATCH_SIZE", "BATCH_SIZE = 16 * 4"))
    use_synthetic(monkeypatch, 160, 32)
    out = tmp_path / "out"
    assert module.main(["--model", "simple", "--val-split", "0", "--verbose", "0", "--output-dir", str(out)]) == 0
    [path] = glob.glob(str(out / "*_summary.json"))
    with open(path) as f:
        summary = json.load(f)
    assert summary["epochs_run"] == 1
    assert summary["hyperparameters"]["batch_size"] == 64 and summary["hyperparameters"]["epochs"] == 1
    assert summary["optimizer_steps"] == 3  # 160 images at 64 a step


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_expression_without_a_comment_is_a_flag(script, tmp_path, monkeypatch, capsys):
    module = edited(tmp_path, monkeypatch, script, ("EPOCHS", "EPOCHS = 3 - 2"), ("BATCH_SIZE", "BATCH_SIZE = 16 * 4"))
    for mode in MODES.get(script, [[]]):
        args = parse(module, tmp_path, *mode)
        assert (args.epochs, args.batch_size) == (1, 64), mode
        args = parse(module, tmp_path, *mode, "--batch-size", "8")
        assert (args.epochs, args.batch_size) == (1, 8), mode
    assert "--batch-size N BATCH_SIZE (default: 64)" in help_text(module, capsys)  # no comment: the name is the help


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_comment_on_the_line_above_is_the_help(script, tmp_path, monkeypatch, capsys):
    module = edited(tmp_path, monkeypatch, script,
                    ("VAL_SPLIT", "# the share of images held out,\n# over two lines\nVAL_SPLIT = 0.25"))
    for mode in MODES.get(script, [[]]):
        assert parse(module, tmp_path, *mode).val_split == 0.25
    assert "the share of images held out, over two lines (default: 0.25)" in help_text(module, capsys)


@pytest.mark.parametrize("layout", ["comment on the first line", "comment on the last line"])
@pytest.mark.parametrize("script", WITH_LR_STEPS)
def test_a_list_over_several_lines(script, layout, tmp_path, monkeypatch, capsys):
    lines = ["LR_STEPS = [", "    (10, 0.5),  # the first cut (a comment inside is not the help)",
             "    (20, 0.1),", "]"]
    if layout == "comment on the first line":
        lines[0] += "  # steps over several lines"
    else:
        lines[-1] += "  # steps over several lines"
    module = edited(tmp_path, monkeypatch, script, ("LR_STEPS", "\n".join(lines)))
    assert parse(module, tmp_path).lr_steps == [(10, 0.5), (20, 0.1)]
    assert "steps over several lines (default: [(10, 0.5), (20, 0.1)])" in help_text(module, capsys)
    if script == "resnet_cifar":  # set at the top, a value the chosen recipe does not use is refused
        err = refused(module, tmp_path, capsys, "--recipe", "fast")
        assert "LR_STEPS = [(10, 0.5), (20, 0.1)] at the top of edited_resnet_cifar.py is not used with " \
               "--recipe fast" in err


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_value_set_from_python_before_main(script, tmp_path, monkeypatch):
    module = importlib.import_module(script)
    monkeypatch.setattr(module, "EPOCHS", 3)
    for mode in MODES.get(script, [[]]):
        assert parse(module, tmp_path, *mode).epochs == 3
    monkeypatch.setattr(module, "BATCH_SIZE", 48)  # main() parses with parse_args
    assert parse(module, tmp_path).batch_size == 48


def test_a_recipe_edited_from_python(tmp_path, monkeypatch):
    import resnet_cifar
    monkeypatch.setitem(resnet_cifar.RECIPES["fast"], "epochs", 7)
    assert parse(resnet_cifar, tmp_path, "--recipe", "fast").epochs == 7
    assert parse(resnet_cifar, tmp_path, "--recipe", "seed").epochs == 200


def test_a_recipe_only_value_set_at_the_top(tmp_path, monkeypatch, capsys):
    """WARMUP_EPOCHS = 3 at the top: used by the fast recipe, refused with the seed one."""
    module = edited(tmp_path, monkeypatch, "resnet_cifar", ("WARMUP_EPOCHS", "WARMUP_EPOCHS = 3"))
    assert parse(module, tmp_path, "--recipe", "fast").warmup_epochs == 3
    err = refused(module, tmp_path, capsys, "--recipe", "seed")
    assert "WARMUP_EPOCHS = 3" in err and "not used with --recipe seed (only with --recipe fast)" in err


@pytest.mark.parametrize("value,shown", [(lambda: 3, "<function"), (object(), "<object object")])
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_value_the_command_line_cannot_give_is_one_line(script, value, shown, tmp_path, monkeypatch, capsys):
    module = importlib.import_module(script)
    monkeypatch.setattr(module, "EPOCHS", value)
    err = refused(module, tmp_path, capsys)
    assert err.startswith(f"error: EPOCHS = {shown}") and "the command line cannot give" in err


def test_constants_after_the_blank_line_are_not_hyperparameters():
    import simple_cnn
    names = [name for name, _, _ in cli.hyperparameters(simple_cnn)]
    assert names[:4] == ["MODEL", "DATASET", "EPOCHS", "BATCH_SIZE"] and names[-1] == "CVAL"
    assert not {"MODELS", "OPTIMIZERS", "NUM_CLASSES"} & set(names)


@pytest.mark.parametrize("edits,expected", [
    ([("EPOCHS", "EPOCHS = 40 / 2"), ("BATCH_SIZE", "BATCH_SIZE = 128 / 2")], {"epochs": 20, "batch_size": 64}),
    ([("EPOCHS", "EPOCHS = 2.5")], "--epochs must be a whole number"),
    ([("OPTIMIZER", 'OPTIMIZER = "sgd"')], "--optimizer must be one of adam, rmsprop"),
    ([("MODEL", 'MODEL = "Deep"')], "--model must be one of simple, deep, deep_aug"),
], ids=["division", "fraction", "unknown-optimizer", "unknown-model"])
def test_an_edit_is_a_whole_number_or_a_choice_or_one_line(edits, expected, tmp_path, monkeypatch, capsys):
    """A count written as a division (40 / 2 is 20.0 in Python) is a whole
    number; a fraction of an epoch, or a choice the script does not know,
    is one line naming it before any data is read (not a traceback later)."""
    module = edited(tmp_path, monkeypatch, "simple_cnn", *edits)
    if isinstance(expected, dict):
        args = module.parse_args(["--output-dir", str(tmp_path / "out")])
        for key, value in expected.items():
            assert getattr(args, key) == value and type(getattr(args, key)) is int
        return
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(["--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and expected in err, err
