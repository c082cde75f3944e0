"""One meaning per flag: for every script and each of its models, recipes and
modes, every hyperparameter's flag either changes what the run does (and the
recorded hyperparameters, which must be the values the run uses) or is refused
with one line saying the choice does not use it. Never ignored.

Nothing is built or trained: main() runs with build_model, the data and
training.Run replaced by recorders of what they are given, and a model whose
compile() and fit() record theirs."""

import json
import re

import numpy as np
import pytest

import allconv_cifar
from cifarkit import cli
import load_data
import resnet18_fashion_mnist
import resnet_cifar
import simple_cnn
from cifarkit import training
import vgg19_cifar
from helpers import synthetic_cifar

MODES = [  # (script, the flags that choose its model, recipe or mode)
    (simple_cnn, ["--model", "simple"]), (simple_cnn, ["--model", "deep"]), (simple_cnn, ["--model", "deep_aug"]),
    (simple_cnn, ["--model", "deep_aug", "--fill-mode", "constant"]),
    (resnet_cifar, ["--recipe", "seed"]), (resnet_cifar, ["--recipe", "fast"]),
    (vgg19_cifar, []), (vgg19_cifar, ["--fill-mode", "nearest"]),
    (allconv_cifar, []),
    (resnet18_fashion_mnist, ["--stem", "imagenet"]), (resnet18_fashion_mnist, ["--stem", "cifar"]),
]
OTHER_FLAGS = {  # beside the hyperparameters: flags that change what is trained
    "every script": [["--image-size", "40"], ["--color", "grayscale"]],
    "resnet_cifar": [["--depth", "8"]],
}
ALTERNATIVES = {  # hyperparameters with a fixed set of values: the first one other than the current
    "MODEL": ("simple", "deep", "deep_aug"), "OPTIMIZER": ("adam", "rmsprop"), "RECIPE": ("seed", "fast"),
    "VERSION": (1, 2), "CONFIG": ("E", "A"), "STEM": ("imagenet", "cifar"), "SCHEDULE": ("cosine", "constant"),
    "DATASET": ("cifar10", "cifar100"), "FILL_MODE": ("nearest", "constant", "reflect"),
    "WEIGHTS": (None, "imagenet"),
}
WHEN_NONE = {"LR_STEPS": [(10, 0.1)], "PLATEAU_FACTOR": 0.5, "PLATEAU_PATIENCE": 2, "PLATEAU_MIN_LR": 1e-6,
             "WARMUP_EPOCHS": 1, "MOMENTUM": 0.5}  # resnet_cifar.py's, where the recipe has none


def another(name, value):
    """A good value for hyperparameter NAME, other than `value`."""
    if name in ALTERNATIVES:
        return next(v for v in ALTERNATIVES[name] if v != value)
    if value is None:
        return WHEN_NONE[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.1
    if isinstance(value, list):  # steps lose their last one; numbers are halved
        return value[:-1] if isinstance(value[0], tuple) else [v / 2 for v in value]
    return "other_" + value


def flags_for(name, value):
    flag = "--" + name.lower().replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, repr(value) if isinstance(value, list) else str(value)]


def describe(value):
    """Something comparable for what a function was given (names left out)."""
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items() if k != "name"}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, np.ndarray):
        return ["array", list(value.shape), float(value.astype("float64").sum())]
    if hasattr(value, "get_config"):  # layers, optimizers, losses
        return [type(value).__name__, describe(value.get_config())]
    return value


class FakeModel:
    name = "fake"

    def __init__(self, seen):
        self.seen = seen

    def compile(self, *args, **kwargs):
        self.seen["compile"] = describe([args, kwargs])

    def summary(self, *args, **kwargs):
        pass

    def fit(self, batch_size, epochs, callbacks, **kwargs):
        self.seen["train"] = {"batch_size": batch_size, "epochs": epochs}
        self.seen["callbacks"] = [  # a learning-rate callback by the rates it gives, plateau cuts by their knobs
            [type(cb).__name__, [float(cb.schedule(e)) for e in range(epochs)] if hasattr(cb, "schedule") else None,
             {k: getattr(cb, k) for k in ("factor", "patience", "min_lr") if hasattr(cb, k)}] for cb in callbacks]

    def evaluate(self, *args, **kwargs):
        return 0.0, 0.0


@pytest.fixture
def run(monkeypatch, tmp_path):
    """run(module, argv) -> (the recorded hyperparameters, what the run was given), or the SystemExit."""
    seen = {}

    def prepare_data(args):  # what load_data reads of args: image size and colour only for a folder
        folder = args.dataset not in load_data.DATASETS
        seen["data"] = [args.dataset, args.subset, args.val_split,
                        [args.image_size, args.color] if folder else None]
        shape, classes = load_data.SHAPES[args.dataset]
        train, test = synthetic_cifar(20, 10, size=shape[0], channels=shape[2])
        return training.Data(train, test, test, "test set", tuple(f"class {i}" for i in range(classes)))

    def build_model(*args, **kwargs):
        seen["model"] = describe([args, kwargs])
        return FakeModel(seen)

    class Run:
        def __init__(self, args, data, name, **kwargs):
            self.args = args
            seen["run"] = describe(kwargs)

        def callbacks(self, *own):
            return list(own)

        def resume(self, model):
            return 0

        def training_data(self, batch_size):
            return {"batch_size": batch_size}

        def validation_data(self):
            return None

        def test_data(self):
            return {}

        def save(self, model, test_loss, test_accuracy):  # what training.Run records
            seen["record"] = {k: v for k, v in vars(self.args).items() if k != "multi_worker" and not k.startswith("_")}

    monkeypatch.setattr(training, "prepare_data", prepare_data)
    monkeypatch.setattr(training, "Run", Run)
    monkeypatch.setattr(vgg19_cifar, "load_imagenet_weights", lambda model, path: seen.update(weights=path) or [])

    def run_main(module, argv):
        monkeypatch.setattr(module, "build_model", build_model)
        seen.clear()
        try:
            module.main(argv + ["--verbose", "0", "--output-dir", str(tmp_path / "out")])
        except SystemExit as e:
            return e
        record = seen.pop("record")
        assert record["epochs"] == seen["train"]["epochs"] and record["batch_size"] == seen["train"]["batch_size"], \
            "the recorded epochs and batch size are not the ones trained with"
        return record, json.dumps(seen, sort_keys=True, default=str)
    return run_main


@pytest.mark.parametrize("module,mode", MODES, ids=[f"{m.__name__} {' '.join(f)}".strip() for m, f in MODES])
def test_every_flag_changes_the_run_or_is_refused(module, mode, run, capsys):
    base = run(module, mode)
    assert not isinstance(base, SystemExit), capsys.readouterr().err
    record, what = base
    cases = [(name, flags_for(name, another(name, record[name.lower()])))
             for name, _, _ in cli.hyperparameters(module.__file__)]
    cases += [(None, flags) for flags in OTHER_FLAGS["every script"] + OTHER_FLAGS.get(module.__name__, [])]
    capsys.readouterr()
    wrong = []
    for name, flags in cases:
        result = run(module, mode + flags)
        if isinstance(result, SystemExit):
            err = capsys.readouterr().err.strip()
            named = re.match(r"error: (--[\w-]+) is not used with ", err)  # this flag, or a flag of the mode
            argv = [f.replace("--no-", "--") for f in mode + flags]
            if not (result.code == 2 and named and named[1] in argv and "\n" not in err):
                wrong.append(f"{' '.join(flags)}: refused, but not as unused: {err!r}")
            continue
        new_record, new_what = result
        if name and new_record[name.lower()] == record[name.lower()]:
            wrong.append(f"{' '.join(flags)}: accepted, and the recorded value did not change")
        if new_what == what:
            wrong.append(f"{' '.join(flags)}: accepted, and ignored (the run is the same)")
    assert not wrong, "\n".join(wrong)


def test_the_recorded_values_are_the_recipes():
    for recipe, values in resnet_cifar.RECIPES.items():
        args = vars(resnet_cifar.parse_args(["--recipe", recipe]))
        assert {k: args[k] for k in values} == values
        assert all(args[k] is None for k in set().union(*resnet_cifar.RECIPES.values()) - set(values))
    args = resnet_cifar.parse_args(["--recipe", "fast", "--epochs", "5", "--shift", "0.1"])
    assert (args.epochs, args.shift, args.batch_size) == (5, 0.1, 128)


OLD_FLAGS = ["--fast-epochs", "--fast-batch-size", "--fast-learning-rate", "--fast-warmup-epochs", "--fast-momentum",
             "--fast-shift", "--fast-weight-decay", "--fast-bn-momentum", "--fast-fill-mode"]  # resnet_cifar.py's


@pytest.mark.parametrize("old", OLD_FLAGS)
def test_a_renamed_flag_names_its_replacement(old, capsys):
    with pytest.raises(SystemExit) as exit_:
        resnet_cifar.parse_args([old, "1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    new = "--" + old[len("--fast-"):]
    assert err.startswith(f"error: {old} is now {new} (with --recipe fast)") and "\n" not in err
    assert new in ["--" + name.lower().replace("_", "-") for name, _, _ in cli.hyperparameters(resnet_cifar)]
