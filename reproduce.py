"""Every full-length recipe of the collection, one after another, into results/.

For a machine with an accelerator (or a lot of patience): each run trains with
its script's own defaults, writes its checkpoints under `runs/<run>/`, and, when
it has finished, copies its summary JSON, history CSV and curve PNG into
`results/<run>/` and regenerates the README's results table.

Resumable run by run: a run whose summary is already in `results/` is skipped,
and an interrupted one continues from its last finished epoch (every run is
started with `--resume`, which starts afresh when there is nothing to resume).
A figure in results/ names the commit it trained from, so a run from a tree
with uncommitted changes is not collected (commit first, or `--allow-dirty`,
which the table then marks "+ changes").

    python3 reproduce.py --list                           # the runs and their state
    python3 reproduce.py --data-dir /data                 # all of them, in order
    KERAS_BACKEND=jax python3 reproduce.py --only resnet20_fast_60_epochs simple_cnn_deep
    python3 reproduce.py --only allconv -- --mixed-precision   # extra flags for the scripts
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

import results_table

ROOT = os.path.dirname(os.path.abspath(__file__))
RUNS = [  # (name, script and its flags): the published-length recipes, the flagship first
    ("airbench94_seed0", ["airbench_cifar.py"]),  # held to 94% as the mean of three seeds
    ("airbench94_seed1", ["airbench_cifar.py", "--seed", "1"]),
    ("airbench94_seed2", ["airbench_cifar.py", "--seed", "2"]),
    ("resnet20_fast_60_epochs", ["resnet_cifar.py", "--recipe", "fast"]),  # results/resnet20_fast: its old 40
    ("simple_cnn_deep", ["simple_cnn.py", "--model", "deep"]),
    ("simple_cnn_deep_aug", ["simple_cnn.py", "--model", "deep_aug"]),
    ("simple_cnn_simple", ["simple_cnn.py", "--model", "simple"]),
    ("resnet18_fashion_mnist", ["resnet18_fashion_mnist.py"]),
    ("allconv", ["allconv_cifar.py"]),
    ("vgg19", ["vgg19_cifar.py"]),
    ("resnet20_seed", ["resnet_cifar.py", "--recipe", "seed"]),
]
OUTPUTS = ("*_summary.json", "*history.csv", "*_history.png")  # allconv's history is history.csv


def done(name, results=results_table.RESULTS):
    return bool(glob.glob(os.path.join(results, name, "*_summary.json")))


def collect(run_dir, name, results=results_table.RESULTS, allow_dirty=False):
    """Copy a finished run's small files (never checkpoints) into results/<name>/;
    a run from a tree with uncommitted changes only with `allow_dirty`."""
    for path in glob.glob(os.path.join(run_dir, "*_summary.json")):
        with open(path) as f:
            summary = json.load(f)
        codes = [s["code"] for s in summary.get("code_sessions", [])] or [summary.get("code")]
        code = next((c for c in codes if not c or c.get("dirty")), codes[-1])  # any session's unknown or dirty
        if not allow_dirty and (not code or code.get("dirty")):
            said = "from a tree with uncommitted changes" if code else "without its git commit"
            raise SystemExit(f"error: {path} was trained {said}; results/ holds runs of committed code. "
                             f"Commit and run it again, or collect it with --allow-dirty (marked in the table)")
    target = os.path.join(results, name)
    os.makedirs(target, exist_ok=True)
    copied = []
    for pattern in OUTPUTS[::-1]:  # the summary last, whole: its presence says the run is collected
        for path in glob.glob(os.path.join(run_dir, pattern)):
            kept = os.path.join(target, os.path.basename(path))
            shutil.copy2(path, kept + ".partial")
            os.replace(kept + ".partial", kept)
            copied.append(kept)
    if not any(p.endswith("_summary.json") for p in copied):
        raise SystemExit(f"error: {run_dir} holds no *_summary.json: the run did not finish")
    return sorted(set(copied))


def finished_in(run_dir):
    """A run that wrote its summary after its last backed-up epoch."""
    for path in glob.glob(os.path.join(run_dir, "*_summary.json")):
        with open(path) as f:
            epochs = json.load(f).get("epochs_run")
        states = glob.glob(os.path.join(run_dir, ".*_resume", "state.json"))
        if all(backup_epochs(state) == epochs for state in states):
            return True
    return False


def backup_epochs(state_path):
    with open(state_path) as f:
        return json.load(f).get("epoch")


def train(name, command, run_dir, data_dir, extra):
    """Run one recipe, resuming it if it was interrupted; its exit status."""
    full = [sys.executable, os.path.join(ROOT, command[0])] + command[1:] + \
        ["--output-dir", run_dir, "--resume", "--verbose", "2"] + \
        (["--data-dir", data_dir] if data_dir else []) + extra
    print(f"== {name}: {' '.join(full[1:])}", flush=True)
    result = subprocess.run(full, cwd=ROOT)
    if result.returncode != 0:
        print(f"error: {name} stopped with exit status {result.returncode}; run the same command "
              f"again to continue it from its last finished epoch", file=sys.stderr)
    return result.returncode




def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Flags after -- go to every script.")
    parser.add_argument("--only", nargs="+", metavar="RUN", help="these runs only (default: all)")
    parser.add_argument("--list", action="store_true", help="list the runs and whether each is done")
    parser.add_argument("--data-dir", help="passed to every script")
    parser.add_argument("--runs-dir", default=os.path.join(ROOT, "runs"),
                        help="where checkpoints and logs go (one folder a run)")
    parser.add_argument("--results", default=results_table.RESULTS, help="where the small files go")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md's table alone")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="collect runs trained from a tree with uncommitted changes (marked in the table)")
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    names = [name for name, _ in RUNS]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    selected = [(n, cmd) for n, cmd in RUNS if not args.only or n in args.only]

    if args.list:
        for name, command in selected:
            state = "done" if done(name, args.results) else "to do"
            print(f"{name:24s} {state:6s} python3 {' '.join(command)}")
        return 0

    for name, command in selected:
        if done(name, args.results):
            print(f"== {name}: done (results/{name}), skipped")
            continue
        run_dir = os.path.join(args.runs_dir, name)
        if finished_in(run_dir):  # trained to its end, but not yet copied into results/
            print(f"== {name}: finished in {run_dir}; collecting it")
        else:
            status = train(name, command, run_dir, args.data_dir, extra)
            if status:
                return status
        for path in collect(run_dir, name, args.results, args.allow_dirty):
            print(f"   {os.path.relpath(path, ROOT)}")
        if not args.no_readme:
            results_table.main(["--results", args.results, "--write"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
