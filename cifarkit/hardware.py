"""What a run computes on, for summaries and benchmarks: the host's CPU and
the backend's device. Imports no Keras at module level, so a benchmark's
driver can use it without loading a backend."""

import os
import platform


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # the CPU flags that say bfloat16 runs natively


def cpu_flags():
    """Which of BF16_FLAGS the CPU has (empty where /proc/cpuinfo is not to be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [flag for flag in BF16_FLAGS if flag in flags]


def machine_description():
    """The host: CPU model, core count and which bfloat16 flags it has and
    has not, e.g. "AMD EPYC, 2 cores, avx512_bf16, no amx_bf16" (the
    accelerator is `device_description`)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    missing = [f"no {flag}" for flag in BF16_FLAGS if flag not in flags]  # said too: AMX or not matters
    return f"{cpu}, {os.cpu_count()} cores, " + ", ".join(flags + missing)


# What a run's figures do not depend on: changes there leave a tree clean (reproduce.py rewrites the README).
NOT_CODE = (":(exclude)*.md", ":(exclude)results", ":(exclude)docs", ":(exclude)benchmarks/results")


def code_version(folder=None):
    """The git commit the code runs from and whether the work tree had
    uncommitted changes to code (not to NOT_CODE): {"commit": sha, "dirty":
    bool}, or None outside git."""
    import subprocess
    folder = folder or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository, above cifarkit/
    try:
        git = lambda *a: subprocess.run(["git", "-C", folder, *a], capture_output=True, text=True,  # noqa: E731
                                        timeout=20, check=True).stdout.strip()
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def device_description():
    """The accelerator (or CPU) the Keras backend computes on."""
    import keras
    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch
            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        devices = keras.distribution.list_devices()
        if backend == "jax":
            import jax
            devices = [d.device_kind for d in jax.devices()]
        return ", ".join(devices)
    except Exception as e:  # the summary must never fail the run
        return f"unknown ({e})"
