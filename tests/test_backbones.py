"""Several backbones side by side (tlcore.experiments.backbones) and confirming a ranking's top candidates with them:
configs checked and round-tripped, one stored comparison a candidate listed in one record, the front and the answer,
a cancel that keeps what finished, the predicted FE accuracy equal to the confirmed run's, jobs for rankings and
confirmations, the CLI's --confirm and --candidates, and the validation's scores on constructed cases."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tlcore.advice.backbone_validation import RankingCase, RankingValidation
from tlcore.advice.candidates import RankingConfig, confirmation
from tlcore.core.errors import ConfigError
from tlcore.core.progress import CancelToken
from tlcore.experiments.backbones import (MAX_CANDIDATES, BackbonesConfig, Candidate, compare_backbones,
                                          load_backbones)
from tlcore.experiments.config import SweepConfig, build_config
from tlcore.records.store import default_store


def _candidates(weights) -> tuple[Candidate, ...]:
    return (Candidate("test_efficientnet", 32, str(weights)), Candidate("test_efficientnet", 48, str(weights)))


def _base(folder, strategies=("feature-extraction",)):
    return build_config("quick", dataset=str(folder), per_class="all", strategies=list(strategies))


def test_config_is_checked_and_round_trips(image_folder, tiny_weights):
    base = _base(image_folder)
    with pytest.raises(ConfigError, match="at least one candidate"):
        BackbonesConfig(base, ())
    with pytest.raises(ConfigError, match="must differ"):
        BackbonesConfig(base, (Candidate("a", 32), Candidate("a", 32)))
    with pytest.raises(ConfigError, match=f"at most {MAX_CANDIDATES}"):
        BackbonesConfig(base, tuple(Candidate("a", 32 + i) for i in range(MAX_CANDIDATES + 1)))
    with pytest.raises(ConfigError, match="between 16 and 1024"):
        Candidate("a", 4096)
    config = BackbonesConfig(base, _candidates(tiny_weights), ranking="abc")
    assert BackbonesConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    member = config.member(config.candidates[1])
    assert (member.backbone.weights, member.image_size, member.dataset) == (str(tiny_weights), 48, base.dataset)
    sweep = BackbonesConfig(SweepConfig(experiment=base, sizes=(2, 4), repeats=1), _candidates(tiny_weights))
    assert sweep.is_sweep and sweep.cells_total == 4
    assert BackbonesConfig.from_dict(json.loads(json.dumps(sweep.to_dict()))) == sweep
    assert sweep.member(sweep.candidates[0]).experiment.image_size == 32


@pytest.mark.slow
def test_each_candidate_is_a_stored_comparison_listed_in_one_record(image_folder, tiny_weights, one_thread):
    config = BackbonesConfig(_base(image_folder), _candidates(tiny_weights))
    events = []
    result = compare_backbones(config, callbacks=[events.append], label="two sizes")
    store = default_store()
    assert result.status == "completed" and store.record(result.record_id)["kind"] == "backbones"
    assert [store.record(m.record_id)["kind"] for m in result.members] == ["comparison", "comparison"]
    frame = result.to_frame()
    assert list(frame["image_size"]) == [32, 48] and set(frame["strategy"]) == {"feature-extraction"}
    assert frame["accuracy"].notna().all() and frame["ms_per_image"].gt(0).all()
    assert {e.cell.split(" · ")[0] for e in events} == {"test_efficientnet at 32 px (test_efficientnet.pth)",
                                                        "test_efficientnet at 48 px (test_efficientnet.pth)"}
    front = result.front()
    assert not front.empty and front["ms_per_image"].is_monotonic_increasing
    assert front["accuracy"].is_monotonic_increasing  # each point on the front buys accuracy with time
    best = result.best()
    assert best.accuracy == frame["accuracy"].max()
    assert result.statement().startswith(f"Most accurate: feature-extraction on {best.candidate} ")
    loaded = load_backbones(result.record_id, store)
    pd.testing.assert_frame_equal(loaded.to_frame(), frame)


@pytest.mark.slow
def test_a_cancel_keeps_what_finished_and_lists_the_rest(image_folder, tiny_weights, one_thread):
    cancel = CancelToken()
    config = BackbonesConfig(_base(image_folder), _candidates(tiny_weights))
    result = compare_backbones(config, cancel=cancel, on_member=lambda m: cancel.cancel())
    assert result.status == "cancelled"
    assert [m.status for m in result.members] == ["completed", "cancelled"]
    assert len(result.to_frame()) == 1 and not result.members[1].record_id
    assert load_backbones(result.record_id).members[1].status == "not started"


def test_confirmation_takes_the_measured_candidates_best_first_on_the_rankings_data():
    from tlcore.advice.candidates import CandidateResult, Ranking

    done = [CandidateResult("b", 48, fe_val_accuracy=0.8, rank=1),
            CandidateResult("a", 32, fe_val_accuracy=0.7, rank=2)]
    ranking = Ranking(dataset="digits", data_fingerprint="", per_class=5, seed=3, device="cpu", classes=10,
                      train_images=50, val_images=179, record_id="r1", source={"source": "digits", "classes": None},
                      candidates=done + [CandidateResult("nosuchnet", 32, status="failed", reason="unknown")])
    config = confirmation(ranking, top=5, preset="quick", strategies=["feature-extraction"])
    assert [c.label for c in config.candidates] == ["b at 48 px", "a at 32 px"]  # the failed one is not confirmed
    assert (config.ranking, config.experiment.seed, config.experiment.dataset.per_class) == ("r1", 3, 5)
    assert config.experiment.dataset.source == "digits" and config.member(config.candidates[0]).image_size == 48
    with pytest.raises(ConfigError, match="at least 1"):
        confirmation(ranking, top=0)
    with pytest.raises(ConfigError, match="no candidate"):
        confirmation(Ranking(dataset="d", data_fingerprint="", per_class=5, seed=0, device="cpu", classes=2,
                             train_images=0, val_images=0, candidates=[], source={"source": "digits"}))


@pytest.mark.slow
def test_jobs_rank_and_confirm_in_the_background(image_folder, tiny_weights, one_thread):
    from tlcore.server.jobs import JobQueue, stored_snapshot

    queue = JobQueue()
    ranking_id = queue.submit(RankingConfig(__import__("tlcore.data.load", fromlist=["x"]).parse_dataset(
        str(image_folder)), _candidates(tiny_weights), per_class=None), label="rank")
    snap = queue.wait(ranking_id, 300)
    assert snap["kind"] == "ranking" and snap["status"] == "completed", snap["error"]
    ranking = snap["result"]
    assert ranking.record_id == ranking_id and len(ranking.completed) == 2
    assert stored_snapshot(ranking_id, queue.store)["result"].statement == ranking.statement
    confirm_id = queue.submit(confirmation(ranking, 2, "quick", ["feature-extraction"]), label="confirm")
    snap = queue.wait(confirm_id, 300)
    assert snap["kind"] == "backbones" and snap["status"] == "completed", snap["error"]
    assert len(snap["runs"]) == 2 and snap["cells_total"] == 2
    assert default_store().record(confirm_id)["status"] == "completed"


@pytest.mark.slow
def test_cli_ranks_confirms_and_writes_both(image_folder, tiny_weights, tmp_path, capsys, one_thread):
    from tlcore.cli import main

    out = tmp_path / "ranking.json"
    spec = ",".join(f"test_efficientnet@{s}@{tiny_weights}" for s in (32, 48))
    code = main(["backbones", "--dataset", str(image_folder), "--per-class", "all", "--candidates", spec + ",nosuch@32",
                 "--confirm", "2", "--preset", "quick", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "Most accurate:" in text and text.count("confirmed val the same (inside it)") == 2
    data = json.loads(out.read_text())
    assert [c["rank"] for c in data["candidates"]] == [1, 2, 0] and data["candidates"][2]["status"] == "failed"
    assert [m["candidate"]["image_size"] for m in data["confirmed"]["members"]] == \
        [c["image_size"] for c in data["candidates"][:2]]  # best first, the failed one left out
    assert len(data["confirmed"]["runs"]) == 6 and all(c["same_head"] for c in data["confirmed"]["checks"])
    code = main(["compare", "--dataset", str(image_folder), "--per-class", "all", "--preset", "quick",
                 "--strategies", "feature-extraction", "--candidates", spec])
    assert code == 0 and "stored as backbones" in capsys.readouterr().out


def test_validation_scores_on_constructed_cases():
    perfect = RankingCase("d", 20, [{"label": f"c{i}", "fe_val_accuracy": a, "knn_accuracy": 1 - a, "logme": a,
                                     "h_score": None, "measured:feature-extraction": a + 0.01,
                                     "measured:fine-tune": 0.5} for i, a in enumerate([0.6, 0.7, 0.8, 0.9])],
                          ranking_seconds=10, extract_seconds=6, measure_seconds=34)
    assert perfect.tau("fe_val_accuracy", "feature-extraction") == pytest.approx(1.0)
    assert perfect.tau("knn_accuracy", "feature-extraction") == pytest.approx(-1.0)
    assert perfect.tau("h_score", "feature-extraction") is None  # no values
    assert perfect.tau("fe_val_accuracy", "fine-tune") is None  # constant measured accuracy
    assert perfect.top_within("fe_val_accuracy", "feature-extraction") is True
    assert perfect.top_within("knn_accuracy", "feature-extraction") is False
    report = RankingValidation([perfect])
    table = report.table().set_index(["score", "measured"])
    assert table.loc[("FE head val accuracy (the ranking)", "feature extraction"), "mean weighted tau"] == 1.0
    assert table.loc[("LogME", "feature extraction"), "published tau"] == 0.665
    assert report.timing() == {"ranking_seconds": 10, "measurement_seconds": 40, "ratio": 0.25}
    assert np.isnan(table.loc[("H-score", "fine-tune"), "mean weighted tau"])


def test_the_recorded_validations_give_the_tables_in_the_docs():
    """docs/benchmarks.md's figures are these files' numbers: on the large-split suite the ranking meets the issue's
    targets (mean weighted tau >= 0.7 for FE accuracy, its top within a point in >= 80% of cases); on the small
    built-in subsets no score does."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "docs" / "validation"

    def report(*names):
        cases = [RankingCase(**c) for n in names for c in json.loads((folder / n).read_text())["cases"]]
        return RankingValidation(cases).table().set_index(["score", "measured"])

    ranking = ("FE head val accuracy (the ranking)", "feature extraction")
    large = report("ranking-validate-fashion-mnist-full.json", "ranking-validate-fashion-mnist-full-subtasks.json")
    assert large.loc[ranking, "cases"] == 6
    assert large.loc[ranking, "mean weighted tau"] == 0.827 and large.loc[ranking, "top within 1 point"] == 1.0
    assert large["mean weighted tau"].max() == 0.827  # the ranking's own score ranked best of the five
    small = report("ranking-validate-suite.json")
    assert small.loc[ranking, "cases"] == 10 and small.loc[ranking, "mean weighted tau"] == 0.265
    assert small["mean weighted tau"].max() < 0.7 and small["top within 1 point"].max() <= 0.5
    first = json.loads((folder / "ranking-validate-suite-first-run.json").read_text())["timing"]
    assert (first["ranking_seconds"], first["measurement_seconds"]) == (206.6, 561.5)


@pytest.mark.slow
def test_a_sweep_runs_for_several_backbones_too(image_folder, tiny_weights, one_thread):
    base = SweepConfig(experiment=_base(image_folder), sizes=(2, 4), repeats=1)
    result = compare_backbones(BackbonesConfig(base, _candidates(tiny_weights)), label="sweep two sizes")
    store = default_store()
    assert result.status == "completed"
    assert [store.record(m.record_id)["kind"] for m in result.members] == ["sweep", "sweep"]
    frame = result.to_frame()
    assert list(zip(frame["image_size"], frame["images a class"])) == [(32, "2"), (32, "4"), (48, "2"), (48, "4")]
    assert load_backbones(result.record_id).to_frame()["accuracy"].tolist() == frame["accuracy"].tolist()
