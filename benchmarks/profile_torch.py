"""Where a ResNet-20 training step spends its time under Keras's torch
backend, against the same network in plain PyTorch.

    python benchmarks/profile_torch.py                  # 20 batches each, into benchmarks/results/
    python benchmarks/profile_torch.py --batches 5 --out /tmp/profile

Both sides are throughput.py's: `model.fit` on ResNet-20 v1 (batch 128, the
recipe's augmentation) under KERAS_BACKEND=torch in each of --variants
(throughput.py's settings), and the plain PyTorch peer (channels-last, batch
128). Each runs a few warm-up batches, then --batches
batches under torch.profiler; the PyTorch operators' own CPU time (not that
of the operators they call) is summed per kind of operator and given in
milliseconds per batch, with the top operators beside. The profiler slows
both sides; its images/s are for the proportions, not for the Speed table
(throughput.py's figures are).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import throughput  # noqa: E402

# Kinds of operator, first match wins (names as torch.profiler reports them).
KINDS = [
    ("convolution, forward and backward", ("convolution",)),
    ("native batch norm", ("batch_norm",)),
    ("copies (layout changes, casts)", ("aten::copy_", "aten::_to_copy", "aten::contiguous", "aten::clone")),
    ("optimizer update (foreach kernels)", ("aten::_foreach",)),
    ("element-wise arithmetic and reductions",
     ("aten::add", "aten::mul", "aten::sub", "aten::div", "aten::pow", "aten::neg", "aten::rsqrt", "aten::sqrt",
      "aten::sum", "aten::mean", "aten::clamp", "aten::threshold", "aten::relu", "aten::fill_", "aten::where",
      "aten::square", "aten::exp", "aten::log", "aten::max", "aten::min")),
]
OTHER = "everything else (data, views, optimizer bookkeeping, Python)"


def kind_of(name):
    for kind, needles in KINDS:
        if any(n in name for n in needles):
            return kind
    return OTHER


def by_kind(ops, batches):
    """ops: {operator name: self CPU microseconds}. Milliseconds per batch per kind,
    every kind present (0 where none), and the total."""
    out = {kind: 0.0 for kind, _ in KINDS}
    out[OTHER] = 0.0
    for name, us in ops.items():
        out[kind_of(name)] += us / 1000 / batches
    out["total"] = sum(out.values())
    return out


def profile(run, batches, warmup=3):
    from torch.profiler import ProfilerActivity, profile as torch_profile
    run(warmup)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        images, seconds = run(batches)  # the runner's own clock (fit's batches after its first)
    ops = {event.key: event.self_cpu_time_total for event in prof.key_averages()}  # one row per operator
    return {"images_per_s_under_profiler": images / seconds, "ms_per_batch": by_kind(ops, batches),
            "top_ops_ms_per_batch": {k: v / 1000 / batches for k, v in
                                     sorted(ops.items(), key=lambda kv: -kv[1])[:12]}}


def markdown(report):
    sides = [(f"Keras, torch backend: {variant}", side) for variant, side in report["keras_torch"].items()]
    sides.append(("plain PyTorch", report["pytorch"]))
    lines = [f"Measured on {report['machine']}, {report['date']}: {report['batches']} batches of "
             f"{throughput.BATCH} per side under torch.profiler (self CPU time of each operator), "
             f"milliseconds per batch. Versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".", "",
             "| kind of operator | " + " | ".join(title for title, _ in sides) + " |",
             "|---|" + "---:|" * len(sides)]
    for kind in sides[0][1]["ms_per_batch"]:
        lines.append(f"| {kind} | " + " | ".join(f"{side['ms_per_batch'][kind]:,.1f}" for _, side in sides) + " |")
    lines += ["", "Images/s under the profiler: " + ", ".join(
        f"{title} {side['images_per_s_under_profiler']:,.0f}" for title, side in sides) + ".", ""]
    for title, side in sides:
        lines += [f"Top operators, {title} (ms per batch): "
                  + ", ".join(f"`{k}` {v:,.1f}" for k, v in side["top_ops_ms_per_batch"].items()), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None):
    os.environ["KERAS_BACKEND"] = "torch"  # before Keras is first imported (by throughput's runners)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="profiled batches per side")
    torch_variants = [v for v, setting in throughput.VARIANTS.items()
                      if "torch" in setting.get("backends", throughput.BACKENDS)
                      and setting.get("steps_per_execution", 1) == 1]  # torch runs one step per execution
    parser.add_argument("--variants", nargs="+", choices=torch_variants, metavar="SETTING",
                        default=["default (float32, augmentation on)", "channels-first layers (torch)"],
                        help="throughput.py's ResNet-20 settings to profile: " + "; ".join(torch_variants))
    parser.add_argument("--out", default=os.path.join(throughput.ROOT, "benchmarks", "results"),
                        help="folder for profile_torch.json and profile_torch.md")
    args = parser.parse_args(argv)
    if args.batches < 1:
        parser.error("--batches must be at least 1")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "torch":
        parser.error("Keras is already imported under another backend; run this script on its own")
    report = {"machine": throughput.machine(), "date": time.strftime("%Y-%m-%d"),
              "versions": throughput.versions(), "batches": args.batches}
    report["keras_torch"] = {v: profile(throughput.training_runner("ResNet-20 v1", v), args.batches)
                             for v in args.variants}
    report["pytorch"] = profile(throughput.pytorch_runner(), args.batches)
    throughput.save_report(report, markdown(report), args.out, "profile_torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
