"""The command line of every script: flags from its hyperparameters, checked.

- Which constants are hyperparameters: the upper-case names assigned in the
  block that starts at the script's `# Hyperparameters` comment line and ends
  at the first blank line; constants after that blank line (NUM_CLASSES,
  MODELS, ...) are not. `hyperparameters` reads their VALUES from the script's
  module when the arguments are parsed, so whatever expression made a value
  (`EPOCHS = 2 * 10`), and whatever Python set it to since
  (`simple_cnn.EPOCHS = 3` before `simple_cnn.main()`), is the flag's default.
  Each is a flag (`BATCH_SIZE` -> `--batch-size`) whose help is its comment:
  the one ending its line (the first or the last line of a value written over
  several), else the comment line(s) directly above it. A value must be one
  the command line can give: a number, a string, True/False, None, or a list,
  tuple or dict of them; anything else (a lambda, an object) is one line
  naming it, exit 2.
- `parse_args` turns them into flags beside the flags every script has
  (`--data-dir`, `--subset`, `--seed`, `--output-dir`, `--resume`, `--fresh`,
  `--devices`, `--mixed-precision`, `--verbose`, ...). One meaning per flag:
  a flag the chosen model or recipe does not use is refused, never ignored
  (`only`: simple_cnn.py's deep_aug knobs); a recipe (`recipes`:
  resnet_cifar.py's RECIPES) is a named set of defaults for the
  hyperparameters left at None, which flags and edits override, so args holds
  the values the run uses; a flag that is gone (`renamed`) names its
  replacement;
- every value is checked before any data is read or any model built (sizes
  and epochs positive, rates and factors in range, fractions in [0, 1), the
  data and output folders usable): a bad one is one line on stderr, exit 2;
- `run`: a script's main() with its errors (bad data, bad values, Keras's own
  ValueErrors from a bad combination, with the line of ours they came from)
  as one line on stderr, exit 1.
"""

import argparse
import ast
import copy
import io
import os
import sys
import tempfile
import tokenize
import types

from cifarkit import archives
from cifarkit import datasets


class UsageError(Exception):
    """A bad value on the command line or in the hyperparameters."""


MARKER = "# Hyperparameters"


def script_module(script):
    """The module of a script: the module itself, or the path of an imported one."""
    if isinstance(script, types.ModuleType):
        return script
    path = os.path.realpath(script)
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and os.path.realpath(file) == path:
            return module
    raise ValueError(f"{script} is not imported; pass its module (sys.modules[__name__])")


def _assigned_names(node):
    """The upper-case names a top-level `NAME = ...` (or `A, B = ...`) sets."""
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets = [node.target]
    else:
        return []
    names = []
    for target in targets:
        for t in target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]:
            if isinstance(t, ast.Name) and t.id.isupper() and t.id not in names:
                names.append(t.id)
    return names


def hyperparameters(script):
    """The script's hyperparameters, in order, as (NAME, value, comment): the
    upper-case names assigned from its `# Hyperparameters` line to the first
    blank line, each value as the module holds it now. `script`: the module,
    or the path of an imported one."""
    module = script_module(script)
    with open(module.__file__, encoding="utf-8") as f:
        source = f.read()
    lines = source.splitlines()
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    whole_line = {n for n in comments if lines[n - 1].lstrip().startswith("#")}
    start = next((n for n in sorted(whole_line) if lines[n - 1].startswith(MARKER)), None)
    if start is None:
        raise ValueError(f"{module.__file__} has no '{MARKER}' line above its hyperparameters")
    found, end = [], start
    for node in ast.parse(source).body:
        if node.lineno <= start:
            continue
        if any(not line.strip() for line in lines[end:node.lineno - 1]):
            break  # the first blank line ends the block
        end = node.end_lineno
        comment = next((comments[n] for n in (node.end_lineno, node.lineno) if n in comments), None)
        if comment is None:  # the comment line(s) directly above
            above = node.lineno - 1
            while above > start and above in whole_line:
                above -= 1
            comment = " ".join(comments[n] for n in range(above + 1, node.lineno))
        for name in _assigned_names(node):
            found.append((name, getattr(module, name), comment))
    return found


def _expressible(value):
    """Can the command line give this value: a number, a string, True/False,
    None, or a list, tuple or dict of them?"""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_expressible(v) for v in value)
    if isinstance(value, dict):
        return all(_expressible(k) and _expressible(v) for k, v in value.items())
    return False


def _shown(value):
    text = repr(value)
    return text if "\n" not in text and len(text) <= 60 else f"a {type(value).__name__}"


def number(text):
    """A whole number if the text is one, else a decimal one."""
    try:
        return int(text)
    except ValueError:
        return float(text)


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
FILL_MODES = ("constant", "nearest", "reflect", "wrap")  # how augment.RandomAffine fills what it shifts in


def is_shift(value):
    """A shift range: a fraction of the size below 1, or a whole number of pixels."""
    return 0 <= value < 1 or (value >= 1 and float(value).is_integer())


RULES = [
    (lambda n: n == "LR_STEPS", _steps, "a list of (epoch >= 0, factor > 0) pairs"),
    (lambda n: n.endswith("WARMUP_EPOCHS") or n == "LR_DROP_EPOCH", lambda v: v >= 0, "0 or more"),
    (lambda n: n.endswith(("EPOCHS", "BATCH_SIZE")) or n == "N", lambda v: v >= 1, "1 or more"),
    (lambda n: n.endswith(("MIN_LR", "WEIGHT_DECAY", "PATIENCE")) or n == "RESIZE", lambda v: v >= 0, "0 or more"),
    (lambda n: n.endswith("LEARNING_RATE"), lambda v: v > 0, "more than 0"),
    (lambda n: n == "PLATEAU_FACTOR", lambda v: 0 < v < 1, "in (0, 1) (1 would cut nothing)"),
    (lambda n: n.endswith("FACTOR"), lambda v: 0 < v <= 1, "in (0, 1]"),
    (lambda n: n.endswith(("SHIFT", "SHIFT_RANGE")), is_shift,
     "a fraction in [0, 1) or a whole number of pixels (1 or more)"),
    (lambda n: n.endswith(("MOMENTUM", "DROPOUT", "SPLIT", "SMOOTHING", "ZOOM_RANGE")),
     lambda v: 0 <= v < 1, "in [0, 1)"),
    (lambda n: n == "ROTATION_RANGE", lambda v: 0 <= v <= 180, "in [0, 180] degrees"),
    (lambda n: n == "CVAL", lambda v: True, "(the fill value)"),
    (lambda n: n == "FILL_MODE", lambda v: v in FILL_MODES, "one of " + ", ".join(FILL_MODES)),
    (lambda n: n == "CHANNEL_MEAN", lambda v: isinstance(v, (list, tuple)) and len(v) in (1, 3) and all(
        _number(m) and 0 <= m <= 255 for m in v), "a list of 3 (RGB) or 1 (gray) numbers in [0, 255]"),
]
NOT_NUMBERS = {"LR_STEPS", "FILL_MODE", "CHANNEL_MEAN"}  # the values whose rule says what they are


def _whole(name):
    """Hyperparameters that count something: whole numbers."""
    return name.endswith(("EPOCHS", "EPOCH", "BATCH_SIZE", "PATIENCE")) or name in ("N", "VERSION", "RESIZE")


def check_value(name, value):
    """None if `value` is good for hyperparameter NAME, else what a good one is."""
    for applies, good, expected in RULES:
        if applies(name):
            if name not in NOT_NUMBERS and not _number(value):
                return f"a number {expected}"
            if _whole(name) and not float(value).is_integer():
                return f"a whole number, {expected}"
            return None if good(value) else expected
    return None


def _check_folders(args):
    """An explicit --data-dir must exist; the output folder must be creatable
    and writable. Nothing is left behind by the check."""
    if args.data_dir is not None:
        try:
            archives.search_dirs(args.data_dir)  # the reader's own check: the folder must exist
        except archives.DataError as e:
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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, except None (its help says what then)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def _flag(name):
    return "--" + name.lower().replace("_", "-")


def _given(parser, argv):
    """The dests of the flags given on the command line, whatever their values."""
    unset = object()
    probe = argparse.Namespace(**{a.dest: unset for a in parser._actions if a.dest != argparse.SUPPRESS})
    parser.parse_known_args(argv, probe)
    return {dest for dest, value in vars(probe).items() if value is not unset}


def parse_args(script, description, argv=None, choices=None, extra=None, only=None, recipes=None, renamed=None):
    """Flags for every hyperparameter of `script` (its module, or the path of
    an imported one), plus the common ones, all checked. Returns argparse's
    Namespace, holding the values the run uses.

    choices:  {NAME: allowed values}
    extra:    extra(parser) adds script-specific flags that are not hyperparameters
    only:     {NAME: {OTHER: values}}: NAME is used only while OTHER has one of
              those values; given on the command line otherwise, it is refused
    recipes:  (NAME, {value of NAME: {name: default}}), e.g. ("RECIPE", RECIPES):
              a hyperparameter left at None takes the chosen recipe's value; one
              the chosen recipe does not list is refused when given (on the
              command line, or set to anything but None at the top of the script)
    renamed:  {old flag: what replaced it}: an old flag is one line naming it
    """
    module = script_module(script)
    script_name = os.path.basename(module.__file__)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = OneLineParser(description=description, formatter_class=_HelpFormatter)
    for token in argv:
        old = token.split("=", 1)[0]
        if old in (renamed or {}):
            parser.error(f"{old} is now {renamed[old]}")

    found = hyperparameters(module)
    defaults = {name: value for name, value, _ in found}
    selector, book = recipes or (None, {})
    in_recipes = {key for values in book.values() for key in values}  # lower case, as the flags' dests
    for name, value in defaults.items():
        if not _expressible(value):
            parser.error(f"{name} = {_shown(value)} at the top of {script_name}: the command line cannot give "
                         f"such a value; make it a number, a string, True/False, None, or a list, tuple or "
                         f"dict of them")
    for choice, values in book.items():
        for key, value in values.items():
            if key.upper() not in defaults:
                parser.error(f"recipe {choice!r} in {script_name} sets {key!r}, not one of its hyperparameters")
            if not _expressible(value):
                parser.error(f"recipe {choice!r} in {script_name} sets {key} = {_shown(value)}: the command line "
                             f"cannot give such a value")

    choices = dict(choices or {})
    only = {name: dict(when) for name, when in (only or {}).items()}
    if book:
        choices.setdefault(selector, tuple(book))
        for key in sorted(in_recipes):
            users = tuple(c for c, values in book.items() if key in values)
            if len(users) < len(book):  # a hyperparameter only some recipes use
                only.setdefault(key.upper(), {})[selector] = users
    for name, when in only.items():
        for other in (name, *when):
            if other not in defaults:
                raise ValueError(f"{script_name}: {other} in `only` is not one of its hyperparameters")

    group = parser.add_argument_group(f"hyperparameters (edit them at the top of {script_name})")
    for name, value, comment in found:
        key = name.lower()
        by_recipe = {c: values[key] for c, values in book.items() if key in values}
        help = comment or name
        if by_recipe and value is None:
            help += " (default by recipe: " + ", ".join(f"{c} {v!r}" for c, v in by_recipe.items()) + ")"
        kwargs = dict(default=value, help=help.replace("%", "%%"), dest=key)  # argparse formats help with %
        known = [v for v in (value, *by_recipe.values()) if v is not None]  # what its values look like
        if known and all(isinstance(v, bool) for v in known):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif known and all(_number(v) for v in known):
            kinds = {type(v) for v in known}
            shift = name.endswith(("SHIFT", "SHIFT_RANGE"))  # a fraction or whole pixels, whatever the default
            kwargs["type"] = kinds.pop() if len(kinds) == 1 and not shift else number
            kwargs["metavar"] = "N" if kwargs["type"] is int else "X"
        elif not (known and all(isinstance(v, str) for v in known)):
            kwargs["type"] = _parse_literal
        if name in choices:
            kwargs["choices"] = choices[name]
        group.add_argument(_flag(name), **kwargs)
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
    common.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None,
                        help="compute in float16 on GPUs, bfloat16 elsewhere; weights and the output layer "
                             "stay float32 (default: on where the CPU runs bfloat16 natively, AVX512-BF16 "
                             "or AMX, and no GPU trains; off elsewhere)")
    if "IMAGE_SIZE" not in defaults:  # a script may set its own default
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
    given = _given(parser, argv)

    # A recipe's values for the hyperparameters left at None
    recipe = book.get(getattr(args, selector.lower()), {}) if book else {}
    for name in defaults:
        if getattr(args, name.lower()) is None and name.lower() in recipe:
            setattr(args, name.lower(), copy.deepcopy(recipe[name.lower()]))

    # One meaning per flag: what the chosen model or recipe does not use is refused
    unused = set()
    for name, when in only.items():
        for other, allowed in when.items():
            now = getattr(args, other.lower())
            if now in allowed:
                continue
            unused.add(name)
            why = (f"not used with {_flag(other)} {now} (only with {_flag(other)} "
                   f"{' or '.join(str(a) for a in allowed)})")
            if name.lower() in given:
                parser.error(f"{_flag(name)} is {why}")
            if name.lower() in in_recipes and defaults[name] is not None:
                parser.error(f"{name} = {defaults[name]!r} at the top of {script_name} is {why}; "
                             f"set it to None there")
            break
    for name in defaults:
        if name in unused:
            continue
        value = getattr(args, name.lower())
        if name in choices and value not in choices[name]:  # argparse checks the command line, not the top of the file
            parser.error(f"{_flag(name)} must be one of {', '.join(map(str, choices[name]))}, got {value!r}")
        if _whole(name) and _number(value) and float(value).is_integer():
            setattr(args, name.lower(), int(value))  # EPOCHS = 40 / 2 is 20.0: 20
        expected = check_value(name, getattr(args, name.lower()))
        if expected:
            parser.error(f"{_flag(name)} must be {expected}, got {getattr(args, name.lower())!r}")
    dataset = getattr(args, "dataset", None)
    if dataset is not None and dataset not in datasets.DATASETS and not os.path.isdir(dataset):
        parser.error(f"--dataset {dataset}: neither one of {', '.join(datasets.DATASETS)} nor a folder of images")
    if args.stream and (dataset is None or dataset in datasets.DATASETS):
        parser.error(f"--stream reads a folder of images (--dataset FOLDER); {dataset or 'this data set'} "
                     f"is read into memory")
    for dest in ("image_size", "color"):  # a named data set has its own image size and colours
        if dest in given and (dataset is None or dataset in datasets.DATASETS):
            parser.error(f"{_flag(dest)} is not used with --dataset {dataset} (only with --dataset FOLDER)")
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
    if args.data_dir is not None:  # recorded in checkpoints: the tools find it from any working folder
        args.data_dir = os.path.abspath(args.data_dir)
    args._script, args._argv = script_name, argv  # what the run records as its command (not hyperparameters)
    return args


def run(main):
    """Run a script's main(); a bad input, or a ValueError from Keras about a
    bad combination of values, is one line on stderr, exit 1."""
    try:
        sys.exit(main())
    except (archives.DataError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\nInterrupted. Finished epochs, if any, are kept: the same command with --resume continues "
              "after the last one (without, a run that finished none starts afresh).", file=sys.stderr)
        sys.exit(130)
    except ValueError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {first}{_where(e)}", file=sys.stderr)
        sys.exit(1)


def _where(error):
    """Where in the collection's own code an error arose (the innermost line
    of it in the traceback): an edited model's bad line, named."""
    import traceback
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours = [f for f in traceback.extract_tb(error.__traceback__)
            if os.path.abspath(f.filename).startswith(root + os.sep) and "site-packages" not in f.filename]
    if not ours:
        return ""
    frame = ours[-1]
    return f" (at {os.path.relpath(frame.filename, root)} line {frame.lineno}, in {frame.name})"
