#!/usr/bin/env bash
# One GPU lease, several calls: how the GPU figures in results/ and docs/speed.md
# were made. The lent machine has Python, JAX and PyTorch but no Keras and no
# network, and a call carries at most 64 MiB, so the data travels in parts
# (../shared/tools/split-for-device writes them into .gpu-data/ and the Keras
# wheels into .whl/), one call each, back to back, while the machine stays warm:
#
#   benchmarks/gpu_lease.sh fmnist   # carry .whl .gitcopy .gpu-data/fashion-mnist .gpu-data/SHA256SUMS
#   benchmarks/gpu_lease.sh bench    # carry .gpu-data/cifar-part-00
#   benchmarks/gpu_lease.sh park     # carry .gpu-data/cifar-part-01
#   benchmarks/gpu_lease.sh cifar E  # carry .gpu-data/cifar-part-02; ResNet-20 fast, E epochs, seeds 1 and 2
#
# Every call stores what it carried under /tmp (kept while the machine stays
# warm); `fmnist` and `cifar` train under KERAS_BACKEND=jax, several runs side
# by side on the one GPU, and copy each run's summary, history and curve (never
# checkpoints) back as $OUT/runs-<step>.tgz; `bench` writes the throughput
# table into $OUT. A copy of .git travels (`rm -rf .gitcopy && cp -r .git .gitcopy`
# after the last commit; a call cannot carry .git itself) and is used through
# GIT_DIR, so that each summary names the commit it ran from.
set -uo pipefail
step=${1:?"usage: gpu_lease.sh fmnist|bench|park|cifar EPOCHS"}
mkdir -p /tmp/parts /tmp/data/fashion-mnist /tmp/runs
[ -d .gpu-data ] && cp -r .gpu-data/. /tmp/parts/
if [ -d .whl ] && [ ! -d /tmp/site/keras ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site CIFAR_DATA_DIR=/tmp/data KERAS_BACKEND=jax PYTHONUNBUFFERED=1
# The lease's own .git there is the session's first commit: summaries read ours (a copy) instead.
[ -d .gitcopy ] && export GIT_DIR="$PWD/.gitcopy" GIT_WORK_TREE="$PWD"
# The copied tree may belong to another user; this call's git accepts it (no global setting changed).
export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # runs side by side: each takes the GPU memory it needs, not 75%
OUT=${OUT:-/tmp/out}

check() {  # the files named, against the shared data's own checksums
  (cd /tmp/data && grep -F "$1" /tmp/parts/SHA256SUMS | sha256sum -c -) || { echo "checksum failed: $1"; exit 1; }
}

train() {  # name, seconds allowed, script and flags: in the background, output to a log
  local name=$1 seconds=$2; shift 2
  timeout "$seconds" python3 "$@" --output-dir "/tmp/runs/$name" --verbose 2 > "/tmp/runs/$name.log" 2>&1 &
}

bring_back() {  # everything but checkpoints and backups, as one file
  wait
  tar czf "$OUT/runs-$step.tgz" -C /tmp/runs --exclude='*.h5' --exclude='.*_resume' --exclude=logs .
  tail -n 3 /tmp/runs/*.log
}

case $step in
  fmnist)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    git --version && git status --short | head -5
    cp /tmp/parts/fashion-mnist/* /tmp/data/fashion-mnist/ || exit 1
    check fashion-mnist/
    for seed in 0 1 2; do train "fmnist_seed$seed" 240 resnet18_fashion_mnist.py --seed "$seed"; done
    bring_back ;;
  bench)
    python3 benchmarks/throughput.py --backends jax torch --no-augmentation --windows 3 --seconds 2 \
      --variants "default (float32, augmentation on)" "mixed precision (bfloat16)" --out "$OUT" ;;
  park)
    ls -l /tmp/parts ;;
  cifar)
    cat /tmp/parts/cifar-part-0[012] > /tmp/data/cifar-10-python.tar.gz || exit 1
    check cifar-10-python.tar.gz
    python3 -c "from cifarkit import archives; archives.find_cifar10('/tmp/data')" || exit 1  # once, not per run
    for seed in 1 2; do
      train "resnet20_fast_${2}_seed$seed" 420 resnet_cifar.py --recipe fast --epochs "$2" --seed "$seed"
    done
    bring_back ;;
esac
