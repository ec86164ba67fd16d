"""The anatomy of a backbone: per-block parameters add up to the model's, and what each strategy shows as frozen or
trainable (BatchNorm statistics too) is what the engine's freezing and training mode actually train."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tlcore import BackboneSpec, DatasetSpec, ExperimentConfig, make_strategy
from tlcore.engine import backbone as bb
from tlcore.engine.anatomy import BN_UPDATING, backbone_anatomy, strategy_view
from tlcore.engine.features import FeatureCache
from tlcore.engine.train import bn_statistics_frozen, set_train_mode
from tlcore.experiments.prepare import prepare
from tlcore.experiments.runner import Runner
from tlcore.records.store import default_store

# every offered family: timm's test models, MobileNetV2 and EfficientNet-Lite (architecture only, no weights needed)
FAMILIES = [("test_efficientnet", 32), ("test_resnet", 32), ("test_vit", 160), ("mobilenetv2_100", 32),
            ("tf_efficientnet_lite0", 32)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _views():
    return [make_strategy("feature-extraction"), make_strategy("fine-tune", stages=1, bn_policy="train"),
            make_strategy("fine-tune", stages=2), make_strategy("fine-tune", stages="all", bn_policy="train"),
            make_strategy("scratch")]


def _block_of(anatomy, groups, heads):
    owner = {n: i for i, b in enumerate(anatomy.blocks) if b.group is not None for n in groups[b.group].params}
    head_block = len(anatomy.blocks) - 1

    def block(name: str) -> int:
        if name in owner:
            return owner[name]
        assert any(name.startswith(h + ".") for h in heads), name
        return head_block
    return block


def _train_like_the_engine(model: torch.nn.Module, spec, size: int) -> tuple[dict, dict]:
    """Freeze with the engine's code, set the engine's training mode, take a few SGD steps on random images;
    returns the parameters and BatchNorm statistics before, to compare with the model after."""
    bb.freeze_for_strategy(model, spec.kind, spec.stages)
    set_train_mode(model, bn_statistics_frozen(spec))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = {n: b.detach().clone() for n, b in model.named_buffers() if "running_" in n}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    torch.manual_seed(0)
    for _ in range(3):  # more than one step: a zero-initialised last BatchNorm scale blocks the first step's grads
        loss = model(torch.randn(4, 3, size, size)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return params, stats


@pytest.mark.parametrize("name,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_blocks_add_up_and_each_view_is_what_the_engine_trains(name, size):
    anatomy, model = backbone_anatomy(BackboneSpec(name, "none"), size, num_classes=5)
    groups = bb.stage_groups(model)
    # the diagram: stem, every stage group, pooling, head; parameters and multiply-adds add up to the model's
    assert [b.kind for b in anatomy.blocks] == ["stem"] + ["stage"] * (len(groups) - 1) + ["pooling", "head"]
    assert [b.params for b in anatomy.blocks[:-2]] == [g.num_params for g in groups]
    assert sum(b.params for b in anatomy.blocks) == anatomy.total_params == bb.count_parameters(model)[1]
    assert sum(b.macs for b in anatomy.blocks) == anatomy.total_macs > 0
    assert all(b.macs > 0 for b in anatomy.blocks if b.kind != "pooling")
    assert anatomy.blocks[-1].output_shape == (5,)
    assert anatomy.blocks[-2].output_shape == (model.num_features,)
    with torch.no_grad():
        assert anatomy.blocks[-3].output_shape == tuple(model.eval().forward_features(
            torch.zeros(1, 3, size, size)).shape[1:])

    heads = bb.classifier_names(model)
    block_of = _block_of(anatomy, groups, heads)
    for spec in _views():
        view = strategy_view(model, anatomy, spec)
        k = {"feature-extraction": 0, "scratch": len(groups)}.get(spec.kind)
        k = bb.resolve_stages(spec.stages, len(groups)) if k is None else k
        shown = [i for i, s in enumerate(view.blocks) if s.trainable]
        # the top K groups and the head, nothing else
        assert shown == [i for i, b in enumerate(anatomy.blocks)
                         if b.kind == "head" or (b.group is not None and b.group >= len(groups) - k)], spec
        assert view.trainable_params == sum(s.trainable_params for s in view.blocks)
        if spec.kind == "feature-extraction":
            frozen = copy.deepcopy(model)
            bb.freeze_for_strategy(frozen, spec.kind)  # the runner's call; the network itself never trains
            assert view.trainable_params == bb.count_parameters(frozen)[0] == anatomy.blocks[-1].params
            assert all(s.bn != BN_UPDATING for s in view.blocks)
            continue
        trained = copy.deepcopy(model)
        params, stats = _train_like_the_engine(trained, spec, size)
        changed = {n: p.numel() for n, p in trained.named_parameters() if not torch.equal(p.detach(), params[n])}
        per_block = [0] * len(anatomy.blocks)
        for n, numel in changed.items():
            per_block[block_of(n)] += numel
        assert per_block == [s.trainable_params for s in view.blocks], spec
        modules, buffers = dict(trained.named_modules()), dict(trained.named_buffers())
        for block, state in zip(anatomy.blocks, view.blocks):
            moved = [n for n in stats if any(n.startswith(u + ".") for u in block.units)
                     and not torch.equal(stats[n], buffers[n])]
            assert bool(moved) == (state.bn == BN_UPDATING), (spec, block.label, state.bn)
            if state.bn == "none":
                assert not any("running_" in n for u in block.units for n, _ in modules[u].named_buffers())


def test_fine_tune_view_matches_a_real_fine_tune_run(image_folder, tiny_weights, tmp_path):
    """A fine-tune run through the Runner changes exactly the parameters (and BatchNorm statistics) the view shows."""
    for bn_policy in ("train", "frozen"):
        spec = make_strategy("fine-tune", stages=2, lp_ft=False, bn_policy=bn_policy, lr=1e-2, epochs=2,
                             batch_size=8, patience=2, min_steps=0)
        config = ExperimentConfig(dataset=DatasetSpec(str(image_folder)), backbone=BackboneSpec(
            "test_efficientnet", str(tiny_weights)), strategies=(spec,), image_size=32, seed=0)
        prepared = prepare(config)
        data = prepared.cell_data(prepared.subset(None, 0))
        runner = Runner(prepared, data, 0, cache=FeatureCache(tmp_path / bn_policy), keep_models=True)
        before = {k: v.clone() for k, v in prepared.reference.state_dict().items()}
        result = runner.run(spec)
        assert result.status == "completed", result.error
        model = runner.models["fine-tune"]
        anatomy, fresh = backbone_anatomy(config.backbone, 32, num_classes=data.dataset.num_classes)
        view = strategy_view(fresh, anatomy, spec)
        after = model.state_dict()
        changed = {k for k in before.keys() & after.keys() if "num_batches" not in k
                   and not torch.equal(before[k], after[k])}
        for block, state in zip(anatomy.blocks, view.blocks):
            if block.kind == "head":
                continue
            mine = {k for k in changed if any(k.startswith(u + ".") for u in block.units)}
            assert bool({k for k in mine if "running_" not in k}) == state.trainable, block.label
            assert bool({k for k in mine if "running_" in k}) == (state.bn == BN_UPDATING), block.label
        assert view.trainable_params == result.trainable_params


@pytest.mark.slow
def test_cli_prints_the_stage_table_and_the_probe_curve(image_folder, tiny_weights, tmp_path, capsys):
    import json

    from tlcore.cli import main

    out = tmp_path / "anatomy.json"
    assert main(["anatomy", "--backbone", "test_efficientnet", "--weights", str(tiny_weights), "--image-size", "32",
                 "--stages", "1", "--dataset", str(image_folder), "--per-class", "6", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "test_efficientnet at 32 px, 3 classes" in text and "blocks.4 + conv_head + bn2" in text
    assert "fine-tune, top 1 stage (BatchNorm frozen)" in text and "Layer-wise probe" in text
    saved = json.loads(out.read_text())
    assert len(saved["anatomy"]["blocks"]) == 8 and set(saved["probe"]["curves"]) == {"pretrained", "random"}
    assert main(["anatomy", "--backbone", "test_resnet", "--image-size", "48"]) == 0  # no data: the table only
    assert "layer4" in capsys.readouterr().out


@pytest.mark.slow
def test_anatomy_page_switching_strategy_changes_the_frozen_part():
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    page = Path(__file__).resolve().parents[1] / "pages" / "5_Anatomy.py"
    at = AppTest.from_file(str(page), default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    at.selectbox(key="an_backbone").set_value("test_efficientnet")
    at.number_input(key="an_image_size").set_value(32)
    at.run()

    def states():
        assert not at.exception, [e.message for e in at.exception]
        frame = at.dataframe[0].value  # the stage table (the probe table appears only after a probe)
        stages = frame[frame["kind"].isin(["stem", "stage"])]
        return [s.split(",")[0] for s in stages["under this strategy"]], list(stages["under this strategy"])

    shown, _ = states()
    assert shown == ["frozen"] * 6  # feature extraction: the whole backbone
    at.radio(key="an_strategy").set_value("fine-tune").run()
    shown, words = states()
    assert shown == ["frozen"] * 4 + ["trainable"] * 2 and words[-1] == "trainable, BN frozen"
    at.select_slider(key="an_stages").set_value(3).run()
    at.radio(key="an_bn").set_value("train").run()
    shown, words = states()
    assert shown == ["frozen"] * 3 + ["trainable"] * 3 and words[-1] == "trainable, BN updating"
    assert words[0] == "frozen, BN frozen"
    at.radio(key="an_strategy").set_value("scratch").run()
    shown, _ = states()
    assert shown == ["trainable"] * 6
    charts = at.get("plotly_chart")
    assert [c.key for c in charts] == ["an_diagram", "an_activations"]
    figure = json.loads(charts[1].proto.spec)  # what each stage sees: a test image, one column per stage
    titles = [a["text"] for a in figure["layout"]["annotations"] if a.get("text")]
    assert titles[0] == "input" and len(titles) == 1 + 6 and all(t.endswith("(trainable)") for t in titles[1:])
    assert sum(t["type"] == "heatmap" for t in figure["data"]) == 6 * 3  # the 3 strongest channels of each stage
    at.radio(key="an_strategy").set_value("fine-tune").run()
    titles = [a["text"] for a in json.loads(at.get("plotly_chart")[1].proto.spec)["layout"]["annotations"]
              if a.get("text")]
    assert [t.rsplit("(", 1)[-1] for t in titles[1:]] == ["frozen)"] * 4 + ["trainable)"] * 2  # K back at 2


@pytest.mark.slow
def test_anatomy_page_runs_the_probe_on_a_folder(image_folder):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    page = Path(__file__).resolve().parents[1] / "pages" / "5_Anatomy.py"
    at = AppTest.from_file(str(page), default_timeout=120).run()
    at.selectbox(key="an_backbone").set_value("test_resnet")
    at.radio(key="an_weights").set_value("none (random init)")
    at.number_input(key="an_image_size").set_value(32)
    at.radio(key="an_source_kind").set_value("Folder on this server").run()
    at.text_input(key="an_folder").set_value(str(image_folder))
    at.number_input(key="an_per_class").set_value(6)
    at.button(key="an_probe").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(at.dataframe) == 2 and len(at.dataframe[1].value) == 5  # a row per stage group of test_resnet
    assert any("only the random-weights curve" in m.value for m in at.markdown)  # no pretrained weights chosen
    assert [c.key for c in at.get("plotly_chart")] == ["an_diagram", "an_activations", "probe_chart_an_probe"]
    stored = default_store().records(kind="probe")  # the probe is a record: History, share link, report
    assert len(stored) == 1 and any(stored[0]["id"] in c.value for c in at.caption)
    shared = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    shared.query_params["run"] = stored[0]["id"]  # the share link: through app.py to History
    shared.run()
    assert not shared.exception, [e.message for e in shared.exception]
    assert shared.title[0].value == f"Layer-wise probe {stored[0]['id']}"
    assert any("only the random-weights curve" in m.value for m in shared.markdown)
    assert len(shared.dataframe[0].value) == 5 and [c.key for c in shared.get("plotly_chart")] == [
        f"probe_chart_hist_{stored[0]['id']}"]
    link = next(e.proto for e in shared.get("page_link") if "Open in Anatomy" in e.proto.label)
    assert link.page == "Anatomy" and f"probe={stored[0]['id']}" in link.query_string
    assert "backbone=test_resnet" in link.query_string and "image_size=32" in link.query_string
    shown = AppTest.from_file(str(page), default_timeout=60)  # where the link leads: the stored probe, not re-run
    for key, value in dict(p.split("=") for p in link.query_string.split("&")).items():
        shown.query_params[key] = value
    shown.run()
    assert not shown.exception and [c.key for c in shown.get("plotly_chart")][-1] == "probe_chart_an_stored"


def test_anatomy_page_link_with_hostile_choices_gets_a_message_not_a_crash():
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    page = Path(__file__).resolve().parents[1] / "pages" / "5_Anatomy.py"
    at = AppTest.from_file(str(page), default_timeout=120)
    for key, value in {"backbone": "test_resnet", "image_size": "99999999", "classes": "abc",
                       "strategy": "'; DROP TABLE records; --", "stages": "-3", "probe": "../../etc/passwd"}.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    warned = " ".join(w.value for w in at.warning)
    for param in ("image_size", "classes", "strategy", "stages"):
        assert f"The link's {param}=" in warned
    assert "No stored probe '../../etc/passwd' here." in warned
    assert at.number_input(key="an_image_size").value == 48 and at.radio(key="an_strategy").value == \
        "feature-extraction"


def test_anatomy_page_opens_from_a_link_with_the_choices_filled():
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from tlcore.records.store import default_store

    default_store().create_record("comparison", {}, backbone="test_resnet", status="completed")  # links may open it
    page = Path(__file__).resolve().parents[1] / "pages" / "5_Anatomy.py"
    at = AppTest.from_file(str(page), default_timeout=120)
    for key, value in {"backbone": "test_resnet", "image_size": "32", "strategy": "fine-tune", "stages": "1"}.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    stages = at.dataframe[0].value
    stages = list(stages[stages["kind"].isin(["stem", "stage"])]["under this strategy"])
    assert [s.split(",")[0] for s in stages] == ["frozen"] * 4 + ["trainable"]


def test_a_link_gets_the_bounds_of_a_read_only_demo_on_any_server():
    """A link is not a form: backbones with packaged weights or used by a stored record, sizes up to the
    pretrained size, at most 1,000 classes; everything else is named and defaulted."""
    from tlcore.server.limits import anatomy_link

    chosen, warnings = anatomy_link({"backbone": "tf_efficientnet_lite0", "image_size": "1008", "classes": "99999"})
    assert chosen == {"backbone": "tf_efficientnet_lite0"}
    assert warnings == ["The link's image_size='1008' is not served here (16 to 224 px, the backbone's pretrained "
                        "size); using the default, 48.", "The link's classes='99999' is not served here (2 to 1,000 "
                        "classes); using the default, 10."]
    chosen, warnings = anatomy_link({"backbone": "vit_huge_patch14_224", "image_size": "448", "stages": "1e9",
                                     "strategy": "<script>", "classes": "x" * 5000})
    assert chosen == {} and len(warnings) == 5 and all(len(w) < 400 for w in warnings)
    assert "backbone='vit_huge_patch14_224' is not served here" in warnings[0]
    assert anatomy_link({"backbone": "tf_efficientnet_lite2", "image_size": "260"})[0]["image_size"] == 260
    assert anatomy_link({"backbone": "test_vit", "image_size": "160"}, stored_backbones=["test_vit"]) == (
        {"backbone": "test_vit", "image_size": 160}, [])


def test_the_model_caches_are_bounded_by_memory_not_count():
    import torch

    from tlcore.engine.backbone import ModelCache, model_bytes

    small, big = torch.nn.Linear(10, 10), torch.nn.Linear(1000, 1000)
    cache = ModelCache(max_bytes=3 * model_bytes(small), size=model_bytes)
    for i in range(5):
        cache.get(i, lambda: torch.nn.Linear(10, 10))
    assert cache.bytes_held <= 3 * model_bytes(small)  # the oldest went
    built = []
    assert cache.get("big", lambda: built.append(1) or big) is big and cache.get("big", lambda: big) is big
    assert cache.bytes_held <= 3 * model_bytes(small)  # bigger than the whole cache: handed out, not kept
