"""What checking every image of a streamed folder before training costs.

A folder streamed from disk gets one decoding pass of every file before
training (`folders.decode_all(..., keep=False)`), so a broken image stops
the run at load time, not hours in. This writes two folders of synthetic
images (small PNGs like CIFAR's, and 500x375 JPEGs like phone photos scaled
down), times that pass (best of a few, page cache warm) and extrapolates to
100,000 files:

    python3 benchmarks/folder_check.py                 # 2,000 files of each kind
    python3 benchmarks/folder_check.py --files 500 --repeats 2

Writes benchmarks/results/folder_check.{json,md}.
"""

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

KINDS = {"32x32 PNG": (32, 32, ".png"), "500x375 JPEG": (375, 500, ".jpg")}


def make_folder(root, n, height, width, ext, seed=0):
    """`n` smooth random images in 10 class folders; their paths."""
    import cv2
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        folder = os.path.join(root, f"c{i % 10}")
        os.makedirs(folder, exist_ok=True)
        image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 2)
        paths.append(os.path.join(folder, f"{i}{ext}"))
        cv2.imwrite(paths[-1], image)
    return paths


def time_check(paths, repeats):
    """Seconds of the best of `repeats` passes of the pre-training check."""
    from cifarkit import folders
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        _, bad = folders.decode_all(paths, 32, 3, keep=False)
        best = min(best, time.perf_counter() - start)
        assert not bad
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="files of each kind")
    parser.add_argument("--repeats", type=int, default=3, help="passes timed; the best counts")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    from cifarkit import folders, hardware
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, (height, width, ext) in KINDS.items():
            paths = make_folder(os.path.join(tmp, ext[1:]), args.files, height, width, ext)
            seconds = time_check(paths, args.repeats)
            rows.append({"kind": kind, "files": len(paths), "seconds": seconds,
                         "ms_per_file": 1e3 * seconds / len(paths), "s_per_100k": 1e5 * seconds / len(paths)})
    machine = hardware.machine_description()
    threads = max(1, min(folders.CHECK_THREADS, os.cpu_count() or 1))
    lines = [f"Measured on {machine}; Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}: "
             f"best of {args.repeats} passes, {threads} threads, page cache warm.", "",
             "| images | files | pass | per file | per 100,000 files |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['kind']} | {r['files']:,} | {r['seconds']:.2f} s | {r['ms_per_file']:.2f} ms | "
              f"{r['s_per_100k']:.0f} s |" for r in rows]
    table = "\n".join(lines) + "\n"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from throughput import save_report
    save_report({"machine": machine, "date": time.strftime("%Y-%m-%d"), "threads": threads,
                 "repeats": args.repeats, "results": rows}, table, args.out, "folder_check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
