"""What each stage sees: one map set per stage group, in the anatomy's shapes, strongest channels first, with the
model left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from tlcore.core.errors import ConfigError
from tlcore.deploy.load import Preprocessing
from tlcore.engine.activations import stage_activations, strongest_channels
from tlcore.engine.anatomy import describe
from tlcore.engine.backbone import data_config, load_template, BackboneSpec

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("name,size", [("test_efficientnet", 32), ("test_resnet", 32), ("test_vit", 160),
                                       ("tf_efficientnet_lite0", 64)])
def test_one_entry_per_stage_in_the_anatomys_shapes(name, size):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stages = stage_activations(model, torch.randn(1, 3, size, size))
    anatomy = describe(model, size, name)
    blocks = [b for b in anatomy.blocks if b.group is not None]
    assert [s.stage for s in stages] == [b.group for b in blocks]
    assert [s.shape for s in stages] == [b.output_shape for b in blocks]
    assert [s.label for s in stages] == [b.label for b in blocks]
    for s in stages:
        assert len(s.channels) == 3
        strengths = [c.strength for c in s.channels]
        assert strengths == sorted(strengths, reverse=True) and strengths[0] > 0
        for c in s.channels:
            assert c.values.min() >= 0 and np.isclose(c.values.max(), 1.0)
            assert c.values.shape == ((s.shape[1], s.shape[2]) if len(s.shape) == 3 and name != "test_vit"
                                      else (10, 10))  # a ViT's 100 patch tokens on their 10 x 10 grid
    assert model.training  # the mode it came in
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing trained, no BN update


def test_strongest_channels_are_the_largest_positive_means():
    grid = torch.zeros(4, 2, 2)
    grid[1] = torch.tensor([[2.0, 0.0], [0.0, 0.0]])  # mean 0.5
    grid[2] = torch.tensor([[-9.0, 1.0], [1.0, 1.0]])  # positive part mean 0.75: the negative value does not count
    grid[3] = -5.0
    maps = strongest_channels(grid, top=2)
    assert [m.channel for m in maps] == [2, 1]
    assert maps[0].strength == pytest.approx(0.75) and maps[1].strength == pytest.approx(0.5)
    assert maps[0].values.tolist() == [[0.0, 1.0], [1.0, 1.0]]


def test_one_image_only():
    with pytest.raises(ConfigError, match="one image"):
        stage_activations(timm.create_model("test_resnet"), torch.randn(2, 3, 32, 32))


@pytest.mark.integration
def test_pretrained_stem_sees_the_images_layout_and_late_stages_are_coarse():
    """Packaged Lite0 weights on a black square on white: the stem's strongest maps follow the square (their response
    inside and outside it differs by most of their range), on a 64 x 64 grid; the last stage's is 4 x 4."""
    from PIL import Image

    model, _ = load_template(BackboneSpec("tf_efficientnet_lite0", "pretrained"))
    img = np.full((128, 128, 3), 255, np.uint8)
    img[32:96, 32:96] = 0
    prep = Preprocessing(data_config(model, 128))
    stages = stage_activations(model, prep(Image.fromarray(img)))
    stem = stages[0]
    assert stem.shape[1:] == (64, 64) and stages[-1].shape[1:] == (4, 4)
    inside = np.zeros((64, 64), bool)
    inside[20:44, 20:44] = True
    outside = np.ones((64, 64), bool)
    outside[10:54, 10:54] = False
    gaps = [abs(c.values[inside].mean() - c.values[outside].mean()) for c in stem.channels]
    assert max(gaps) > 0.5, gaps
    # a blank image gives the same channels flat maps: the structure above comes from the image
    blank = stage_activations(model, prep(Image.fromarray(np.full((128, 128, 3), 255, np.uint8))))[0]
    assert all(c.values[8:56, 8:56].std() < 0.05 for c in blank.channels)
