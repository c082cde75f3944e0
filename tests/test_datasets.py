"""--dataset: every script on CIFAR-10, CIFAR-100 (fine or coarse) or
Fashion-MNIST, with the classes and image shape of the data set."""

import json

import numpy as np
import pytest

import allconv_cifar
import load_data
import predict
import resnet18_fashion_mnist
import resnet_cifar
import simple_cnn
from cifarkit import checkpoints
import vgg19_cifar


@pytest.mark.parametrize("module,flags,dataset,name", [
    (simple_cnn, ["--model", "simple"], "fashion_mnist", "fashion_mnist_simple"),
    (simple_cnn, ["--model", "deep_aug"], "cifar100", "cifar100_deep_aug"),
    (resnet_cifar, ["--depth", "8", "--recipe", "fast"], "cifar100_coarse",
     "cifar100_coarse_ResNet8v1"),
    (resnet_cifar, ["--depth", "8"], "fashion_mnist", "fashion_mnist_ResNet8v1"),  # 7x7 maps: no fixed 8x8 pool
    (allconv_cifar, [], "fashion_mnist", "fashion_mnist_allconv"),
    (vgg19_cifar, ["--config", "A"], "cifar100", "cifar100_VGG11"),
    (resnet18_fashion_mnist, ["--resize", "32"], "cifar100_coarse", "cifar100_coarse_resnet18"),
], ids=["simple-fmnist", "deep_aug-c100", "resnet-c100coarse", "resnet-fmnist", "allconv-fmnist", "vgg-c100", "resnet18-c100coarse"])
def test_each_script_trains_on_the_data_set_it_is_given(module, flags, dataset, name, small_sets, tmp_path):
    out = tmp_path / "out"
    module.main(flags + ["--dataset", dataset, "--epochs", "1", "--batch-size", "32", "--verbose", "0",
                         "--output-dir", str(out)])
    summary = json.loads((out / f"{name}_summary.json").read_text())
    shape, classes = load_data.SHAPES[dataset]
    final = summary["files"]["final"]
    names, run = checkpoints.read_run(final)
    assert len(names) == classes and run["dataset"] == dataset
    model, shown = predict.load_checkpoint(final)
    assert tuple(model.inputs[0].shape[1:]) == shape and model.outputs[0].shape[-1] == classes
    assert shown == names and predict.dataset_of(run, model) == dataset


def test_vgg_refuses_images_smaller_than_its_pools(small_sets, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        from cifarkit import cli
        cli.run(lambda: vgg19_cifar.main(["--dataset", "fashion_mnist", "--output-dir", str(tmp_path)]))
    assert exit_.value.code == 1
    assert "VGG needs images of at least 32x32" in capsys.readouterr().err


def test_load_gives_every_set_a_channel_axis_and_its_names(small_sets):
    (x, y), (xt, yt), names = load_data.load("fashion_mnist")
    assert x.shape[1:] == (28, 28, 1) and y.shape == (64, 1) and names == load_data.FASHION_MNIST_CLASSES
    (x, y), _, names = load_data.load("cifar100_coarse")
    assert x.shape[1:] == (32, 32, 3) and len(names) == 20 and np.max(y) < 20
    with pytest.raises(load_data.DataError, match="unknown data set 'svhn'"):
        load_data.load("svhn")
