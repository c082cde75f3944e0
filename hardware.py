"""What a run computes on, for summaries and benchmarks: the host's CPU and
the backend's device. Imports no Keras at module level, so a benchmark's
driver can use it without loading a backend."""

import os
import platform


def machine_description():
    """The host: CPU model and core count (the accelerator is `device_description`)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


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
