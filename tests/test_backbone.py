"""Backbones and weights: stage groups from timm, freezing with BatchNorm statistics, parameter counts, weight
sources and their messages."""

from __future__ import annotations

import pytest
import timm
import torch

from tlcore.engine.backbone import BackboneSpec, count_parameters, for_run, freeze_groups, resolve_stages, stage_groups
from tlcore.core.errors import ConfigError, WeightsUnavailable
from tlcore.engine.weights import load_pretrained


@pytest.mark.parametrize("name,expected", [("test_efficientnet", 6), ("test_resnet", 5), ("test_vit", 7)])
def test_stage_groups_follow_timm_and_exclude_classifier(name, expected):
    model = timm.create_model(name, num_classes=4)
    groups = stage_groups(model)
    assert len(groups) == expected
    head = model.get_classifier()
    grouped = {n for g in groups for n in g.modules}
    assert not any(dict(model.named_modules())[n] is head for n in grouped)
    # every parameter outside the classifier belongs to exactly one group
    head_params = sum(p.numel() for p in head.parameters())
    assert sum(g.num_params for g in groups) + head_params == sum(p.numel() for p in model.parameters())


def test_freeze_keeps_weights_and_bn_statistics_in_train_mode():
    model = timm.create_model("test_efficientnet", num_classes=3)
    groups = stage_groups(model)
    freeze_groups(model, groups[:-1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        loss = model(torch.randn(8, 3, 32, 32) * 3 + 1).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    frozen_names = {n for g in groups[:-1] for n in g.modules}
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed, "the trainable part did not train"
    assert not any(k.rsplit(".", 1)[0] in frozen_names for k in changed), "a frozen weight or BN statistic changed"
    trainable, total = count_parameters(model)
    changed_params = sum(after[k].numel() for k in changed if "running" not in k and "num_batches" not in k)
    assert trainable == changed_params
    assert trainable == groups[-1].num_params + sum(p.numel() for p in model.get_classifier().parameters())


def test_resolve_stages_bounds():
    assert resolve_stages("all", 6) == 6 and resolve_stages(2, 6) == 2
    for bad in (0, 7, "two"):
        with pytest.raises(ConfigError):
            resolve_stages(bad, 6)


def test_unknown_model_name_message():
    with pytest.raises(ConfigError, match="not a timm model name"):
        for_run(BackboneSpec("resnet_does_not_exist", "none"), 3, pretrained=False)


def test_weights_from_local_file_are_recorded(tiny_weights):
    model, info = for_run(BackboneSpec("test_efficientnet", str(tiny_weights)), 3)
    reference = torch.load(tiny_weights, weights_only=True)
    assert info.source == "file" and len(info.sha256) == 64
    assert torch.equal(model.state_dict()["conv_stem.weight"], reference["conv_stem.weight"])
    assert model.get_classifier().out_features == 3


def test_weights_by_position_with_other_key_names(tmp_path):
    source = timm.create_model("test_resnet")
    renamed = {f"layer_{i}": v for i, v in enumerate(source.state_dict().values())}
    path = tmp_path / "renamed.pth"
    torch.save(renamed, path)
    target = timm.create_model("test_resnet")
    info = load_pretrained(target, "test_resnet", str(path))
    assert "by position" in info.detail
    assert torch.equal(target.fc.weight, source.fc.weight)


def test_wrong_architecture_file_is_refused(tmp_path, tiny_weights):
    target = timm.create_model("test_resnet")
    with pytest.raises(WeightsUnavailable, match="another architecture|do not fit"):
        load_pretrained(target, "test_resnet", str(tiny_weights))


def test_missing_file_message(tmp_path):
    with pytest.raises(WeightsUnavailable, match="does not exist"):
        load_pretrained(timm.create_model("test_resnet"), "test_resnet", str(tmp_path / "nope.pth"))


def test_pretrained_unavailable_lists_ways_and_never_falls_back():
    with pytest.raises(WeightsUnavailable) as err:
        for_run(BackboneSpec("test_resnet", "pretrained"), 3)
    message = str(err.value)
    assert "--weights /path/to" in message and "--weights none" in message and "offline" in message


def test_frozen_batchnorm_is_the_fused_kernel_with_timms_numbers_and_state_dict():
    """Freezing swaps BatchNorm for timm's frozen layers computed by one eval-mode batch_norm kernel: the same logits
    as timm's own FrozenBatchNormAct2d / torchvision's FrozenBatchNorm2d, the same state_dict keys, still isinstance
    of them (what anatomy and the frozen-prefix cache look for)."""
    import copy

    import timm
    from timm.layers import FrozenBatchNormAct2d
    from timm.utils.model import freeze
    from torchvision.ops.misc import FrozenBatchNorm2d

    from tlcore.engine.backbone import FrozenBatchNorm2dFused, FrozenBatchNormAct2dFused, freeze_for_strategy

    for name, fused, plain in (("test_efficientnet", FrozenBatchNormAct2dFused, FrozenBatchNormAct2d),
                               ("test_resnet", FrozenBatchNorm2dFused, FrozenBatchNorm2d)):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=3)
        for m in model.modules():  # statistics that are not the identity, so a wrong formula would show
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        reference = copy.deepcopy(model).eval()
        freeze(reference, submodules=[n for n, _ in reference.named_children()
                                      if n != reference.default_cfg["classifier"]], include_bn_running_stats=True)
        freeze_for_strategy(model, "feature-extraction")
        kinds = {type(m) for m in model.modules() if isinstance(m, plain)}
        assert kinds == {fused}, (name, kinds)
        x = torch.randn(4, 3, 32, 32)
        with torch.inference_mode():
            torch.testing.assert_close(model.eval()(x), reference(x), rtol=1e-5, atol=1e-5)
        assert model.state_dict().keys() == reference.state_dict().keys()
