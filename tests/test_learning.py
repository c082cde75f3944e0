"""Every model learns with its script's own defaults: learning checks on real data.

Each check runs a script's main() with nothing changed but the number of
epochs, the training subset and, where a subset of a few thousand images would
give too few steps, the batch size; so it trains with the script's own
optimizer, learning rate, schedule, initialisation and augmentation. It then
asserts a test accuracy (on the first 2,000 real test images:
conftest.short_test_set) well above the 10% of chance. These are not timings.
Each would fail on a default that does not learn: All-CNN-C with Keras's
glorot_uniform initialisation or at SGD 0.1 stays at 10% (11.5% at most), and
VGG-19 and ResNet-18 with Keras's batch-norm momentum of 0.99 sat at chance on
the test set while their training accuracy climbed. The floors sit below what
each check gave on the CI-class CPU (from simple to ResNet-18: 42, 39, 31, 24,
34, 22, 24 and 72%; All-CNN-C on 3,000 images and ResNet-18 on 2,000 since
2026-11-24, to keep the suite short; VGG-19 on 1,500 images gave 19%, too near
its floor, and on 2,000 13.6% once the 'constant' fill matched
ImageDataGenerator's (2026-11-29), so it trains on 3,000: 22.8%), where
training with a fixed seed repeats itself.
"""

import json

import pytest

import allconv_cifar
import resnet18_fashion_mnist
import resnet_cifar
import simple_cnn
import vgg19_cifar

CHECKS = [  # (id, script module, its flags, summary file, test-accuracy floor)
    ("simple", simple_cnn, ["--model", "simple", "--subset", "4000", "--epochs", "2"],
     "cifar10_simple_summary.json", 0.30),
    ("deep", simple_cnn, ["--model", "deep", "--subset", "5000", "--epochs", "2"],
     "cifar10_deep_summary.json", 0.30),
    ("deep_aug", simple_cnn, ["--model", "deep_aug", "--subset", "5000", "--epochs", "2"],
     "cifar10_deep_aug_summary.json", 0.22),
    ("resnet20_seed", resnet_cifar, ["--recipe", "seed", "--subset", "3000", "--epochs", "2"],
     "cifar10_ResNet20v1_summary.json", 0.20),
    # The fast recipe's whole schedule (warm-up, cosine to 0) squeezed into 3 epochs, batch 64.
    ("resnet20_fast", resnet_cifar, ["--recipe", "fast", "--subset", "3000", "--epochs", "3",
                                     "--batch-size", "64"],
     "cifar10_ResNet20v1_summary.json", 0.25),
    ("vgg19", vgg19_cifar, ["--subset", "3000", "--epochs", "2", "--batch-size", "16"],
     "cifar10_VGG19_summary.json", 0.18),
    ("allconv", allconv_cifar, ["--subset", "3000", "--epochs", "2"], "cifar10_allconv_summary.json", 0.17),
    ("resnet18_fashion_mnist", resnet18_fashion_mnist, ["--subset", "2000", "--epochs", "1", "--batch-size", "32"],
     "fashion_mnist_resnet18_summary.json", 0.50),
]


@pytest.mark.parametrize("module,flags,summary_name,floor", [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_default_recipe_leaves_chance(module, flags, summary_name, floor, short_test_set, tmp_path):
    out = tmp_path / "out"
    assert module.main(flags + ["--data-dir", short_test_set, "--verbose", "0", "--output-dir", str(out)]) == 0
    summary = json.loads((out / summary_name).read_text())
    assert summary["test_accuracy"] > floor, summary
