"""The command line of every script: flags from its hyperparameters, checked.

- `hyperparameters`: a script's top block of `NAME = literal  # comment`
  lines, which `parse_args` turns into flags (`--name`, help from the comment)
  beside the flags every script has (`--data-dir`, `--subset`, `--seed`,
  `--output-dir`, `--resume`, `--fresh`, `--devices`, `--mixed-precision`,
  `--verbose`);
- every value is checked before any data is read or any model built (sizes
  and epochs positive, rates and factors in range, fractions in [0, 1), the
  data and output folders usable): a bad one is one line on stderr, exit 2;
- `run`: a script's main() with its errors (bad data, bad values, Keras's own
  ValueErrors from a bad combination) as one line on stderr, exit 1.
"""

import argparse
import ast
import io
import os
import sys
import tempfile
import tokenize

import load_data


class UsageError(Exception):
    """A bad value on the command line or in the hyperparameters."""


def hyperparameters(script_path):
    """The script's top-level `NAME = literal  # comment` lines, in order, as
    (name, default, comment). The comment is the flag's help."""
    with open(script_path, encoding="utf-8") as f:
        source = f.read()
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    found = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if not name.isupper() or node.end_lineno not in comments:
            continue
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            continue
        found.append((name, value, comments[node.end_lineno]))
    return found


def _parse_literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# --------------------------------------------------------------------------
# What a good value is, by the hyperparameter's name
# --------------------------------------------------------------------------

def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _steps(value):
    """[(epoch, factor), ...] with epochs >= 0 and factors > 0."""
    return isinstance(value, (list, tuple)) and all(
        isinstance(s, (list, tuple)) and len(s) == 2 and _number(s[0]) and s[0] >= 0 and _number(s[1]) and s[1] > 0
        for s in value)


# (does the rule apply to this NAME, is the value good, what a good value is); the first rule that applies decides
RULES = [
    (lambda n: n == "LR_STEPS", _steps, "a list of (epoch >= 0, factor > 0) pairs"),
    (lambda n: n.endswith("WARMUP_EPOCHS") or n == "LR_DROP_EPOCH", lambda v: v >= 0, "0 or more"),
    (lambda n: n.endswith(("EPOCHS", "BATCH_SIZE")) or n == "N", lambda v: v >= 1, "1 or more"),
    (lambda n: n.endswith(("MIN_LR", "WEIGHT_DECAY", "PATIENCE")) or n == "RESIZE", lambda v: v >= 0, "0 or more"),
    (lambda n: n.endswith("LEARNING_RATE"), lambda v: v > 0, "more than 0"),
    (lambda n: n.endswith("FACTOR"), lambda v: 0 < v <= 1, "in (0, 1]"),
    (lambda n: n.endswith(("SHIFT", "SHIFT_RANGE")), lambda v: 0 <= v < 1 or (v >= 1 and float(v).is_integer()),
     "a fraction in [0, 1) or a whole number of pixels (1 or more)"),
    (lambda n: n.endswith(("MOMENTUM", "DROPOUT", "SPLIT", "SMOOTHING", "ZOOM_RANGE")),
     lambda v: 0 <= v < 1, "in [0, 1)"),
    (lambda n: n == "ROTATION_RANGE", lambda v: 0 <= v <= 180, "in [0, 180] degrees"),
]


def check_value(name, value):
    """None if `value` is good for hyperparameter NAME, else what a good one is."""
    for applies, good, expected in RULES:
        if applies(name):
            if name != "LR_STEPS" and not _number(value):
                return f"a number {expected}"
            return None if good(value) else expected
    return None


def _check_folders(args):
    """An explicit --data-dir must exist; the output folder must be creatable
    and writable. Nothing is left behind by the check."""
    if args.data_dir is not None:
        try:
            load_data.search_dirs(args.data_dir)  # the reader's own check: the folder must exist
        except load_data.DataError as e:
            raise UsageError(f"--data-dir {e}") from None
    folder = os.path.abspath(args.output_dir)
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"--output-dir {args.output_dir}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UsageError(f"--output-dir {args.output_dir}: cannot write in {existing} "
                         f"({e.strerror or e}); choose another folder") from None


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad value is one line (`error: ...`), exit status 2."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def parse_args(script_path, description, argv=None, choices=None, extra=None):
    """Flags for every hyperparameter of the script, plus the common ones, all
    checked. `choices` maps a hyperparameter name to its allowed values;
    `extra(parser)` adds script-specific flags that are not hyperparameters."""
    choices = choices or {}
    parser = OneLineParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    group = parser.add_argument_group("hyperparameters (edit them at the top of the script)")
    names = []
    for name, value, comment in hyperparameters(script_path):
        flag = "--" + name.lower().replace("_", "-")
        kwargs = dict(default=value, help=comment.replace("%", "%%"), dest=name.lower())  # argparse formats help with %
        if isinstance(value, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(value, (int, float)):
            kwargs["type"] = type(value)
            kwargs["metavar"] = "N" if isinstance(value, int) else "X"
        elif isinstance(value, (list, tuple, dict)) or value is None:
            kwargs["type"] = _parse_literal
        if name in choices:
            kwargs["choices"] = choices[name]
        group.add_argument(flag, **kwargs)
        names.append((name, flag))
    common = parser.add_argument_group("every script")
    common.add_argument("--data-dir", default=None,
                        help="folder holding the data (default: $CIFAR_DATA_DIR, then ~/.keras/datasets)")
    common.add_argument("--subset", type=int, default=0, metavar="N",
                        help="train on the first N training images only (quick runs)")
    common.add_argument("--seed", type=int, default=0, help="random seed for weights, shuffling and augmentation")
    common.add_argument("--output-dir", default="saved_models",
                        help="where checkpoints, history, plot, logs and summary go")
    common.add_argument("--resume", action="store_true",
                        help="continue an interrupted run after its last finished epoch (same values)")
    common.add_argument("--fresh", action="store_true",
                        help="start afresh where this run's history and resume backup already are, deleting them")
    common.add_argument("--devices", type=int, default=0, metavar="N",
                        help="data-parallel devices: 0 all visible accelerators, 1 one device, N that many")
    common.add_argument("--mixed-precision", action="store_true",
                        help="compute in float16 on GPUs, bfloat16 elsewhere; weights and the "
                             "output layer stay float32")
    if "IMAGE_SIZE" not in [name for name, _ in names]:  # a script may set its own default
        common.add_argument("--image-size", type=int, default=32, metavar="N",
                            help="--dataset FOLDER: images are resized to N x N")
    common.add_argument("--color", choices=("rgb", "grayscale"), default="rgb",
                        help="--dataset FOLDER: read the images in colour or grayscale")
    common.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                        help="--dataset FOLDER: read images from disk batch by batch instead of into memory "
                             "(default: only when they would take more than half the memory free)")
    common.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                        help="Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch")
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    for name, flag in names:
        expected = check_value(name, getattr(args, name.lower()))
        if expected:
            parser.error(f"{flag} must be {expected}, got {getattr(args, name.lower())!r}")
    dataset = getattr(args, "dataset", None)
    if dataset is not None and dataset not in load_data.DATASETS and not os.path.isdir(dataset):
        parser.error(f"--dataset {dataset}: neither one of {', '.join(load_data.DATASETS)} nor a folder of images")
    if args.stream and (dataset is None or dataset in load_data.DATASETS):
        parser.error(f"--stream reads a folder of images (--dataset FOLDER); {dataset or 'this data set'} "
                     f"is read into memory")
    if args.image_size < 8:
        parser.error(f"--image-size must be 8 or more, got {args.image_size}")
    if args.resume and args.fresh:
        parser.error("--resume continues a run and --fresh deletes it: give one of them")
    if args.subset < 0:
        parser.error(f"--subset must be 0 (all) or a positive number, got {args.subset}")
    if args.devices < 0:
        parser.error(f"--devices must be 0 (all accelerators) or more, got {args.devices}")
    try:
        _check_folders(args)
    except UsageError as e:
        parser.error(str(e))
    return args


def run(main):
    """Run a script's main(); a bad input, or a ValueError from Keras about a
    bad combination of values, is one line on stderr, exit 1."""
    try:
        sys.exit(main())
    except (load_data.DataError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except ValueError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {first}", file=sys.stderr)
        sys.exit(1)
