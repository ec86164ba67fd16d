"""Stored records side by side, whatever their kinds. Comparisons and sweeps hold strategy runs, which compare on
test accuracy; layer-wise probes compare with probes (accuracy by depth); recommendations with recommendations
(what each recommended and expected). Records of different families are not drawn together: the result says which
were left out and why, instead of a chart that mixes what does not compare."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from tlcore.advice.probe import ProbeResult, probe_from_record
from tlcore.advice.records import recommendation_from_record
from tlcore.advice.rules import Recommendation
from tlcore.records.store import Store
from tlcore.views.charts import ACCURACY_RANGE, COLORS
from tlcore.views.text import dataset_display, run_size_text

FAMILIES = {"comparison": "runs", "sweep": "runs", "probe": "probes", "recommendation": "recommendations"}
FAMILY_WORDS = {"runs": "comparisons and sweeps (their strategy runs)", "probes": "layer-wise probes",
                "recommendations": "recommendations"}
RUN_COLUMNS = ["record", "kind", "dataset", "images a class", "strategy", "status", "accuracy", "accuracy_low",
               "accuracy_high", "train_seconds", "trainable_params", "seed"]


@dataclass
class SideBySide:
    runs: pd.DataFrame  # RUN_COLUMNS, one row per stored run of the selected comparisons and sweeps
    probes: dict[str, ProbeResult] = field(default_factory=dict)  # by record id
    recommendations: dict[str, Recommendation] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was left out, and why

    @property
    def empty(self) -> bool:
        return self.runs.empty and not self.probes and not self.recommendations


def _run_rows(record: dict, store: Store) -> list[dict]:
    rows = []
    for stored in store.runs(record["id"]):
        run = stored["run"]
        row = {k: v for k, v in run.to_row().items() if k in RUN_COLUMNS}
        row.update({"record": record["id"], "kind": record["kind"],
                    "dataset": dataset_display((run.dataset or {}).get("source", "") or record["dataset"]),
                    "images a class": run_size_text(run)})
        rows.append(row)
    return rows


def side_by_side(records: list[dict], store: Store) -> SideBySide:
    """The selected records (`Store.record` dicts), grouped by family; a family with one record is not drawn."""
    families: dict[str, list[dict]] = {}
    for record in records:
        families.setdefault(FAMILIES.get(record["kind"], record["kind"]), []).append(record)
    result = SideBySide(runs=pd.DataFrame(columns=RUN_COLUMNS))
    for family, members in families.items():
        if len(members) < 2:
            others = ", ".join(FAMILY_WORDS.get(f, f) for f in families if f != family)
            result.notes.append(f"{members[0]['kind'].capitalize()} {members[0]['id']} is not shown: it is the only "
                                f"one of the {FAMILY_WORDS.get(family, family)} selected, and it does not compare "
                                f"with {others or 'anything else selected'}. Select another of its kind, or open it "
                                "on its own.")
        elif family == "runs":
            rows = [row for record in members for row in _run_rows(record, store)]
            result.runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
            if result.runs.empty:
                result.notes.append("The selected comparisons and sweeps have no finished runs yet.")
        elif family == "probes":
            result.probes = {r["id"]: probe_from_record(r) for r in members}
        elif family == "recommendations":
            result.recommendations = {r["id"]: recommendation_from_record(r) for r in members if r.get("summary")}
        else:
            result.notes.append(f"Records of kind '{family}' have no side-by-side view.")
    return result


def runs_figure(runs: pd.DataFrame) -> go.Figure:
    """Test accuracy (95% interval) of every finished run, labelled by record, strategy and size."""
    done = runs[runs["accuracy"].notna()].copy()
    done["run"] = done["record"] + " · " + done["strategy"] + " · " + done["images a class"].astype(str) + "/class"
    fig = px.bar(done, x="run", y="accuracy", color="strategy", error_y=done["accuracy_high"] - done["accuracy"],
                 error_y_minus=done["accuracy"] - done["accuracy_low"], color_discrete_map=COLORS,
                 title="Test accuracy (95% interval) of the selected records")
    fig.update_layout(yaxis=dict(range=ACCURACY_RANGE), xaxis_title=None)
    return fig


def probes_figure(probes: dict[str, ProbeResult]) -> go.Figure:
    """Each probe's pretrained (else random) test accuracy by stage, depth as a share of the network so backbones of
    different depths line up."""
    fig = go.Figure()
    for record_id, probe in probes.items():
        kind = "pretrained" if "pretrained" in probe.curves else next(iter(probe.curves))
        points = probe.curves[kind].points
        depth = [p.stage / max(1, len(points) - 1) for p in points]
        fig.add_trace(go.Scatter(x=depth, y=[p.test_accuracy for p in points], mode="lines+markers",
                                 text=[p.label for p in points], name=f"{record_id} · {dataset_display(probe.dataset)}"
                                 f" · {probe.backbone} ({kind})"))
    fig.update_layout(title="Linear probe test accuracy by depth", xaxis_title="depth (0 = stem, 1 = last stage)",
                      yaxis=dict(title="accuracy", range=ACCURACY_RANGE), height=400)
    return fig


def recommendations_frame(recommendations: dict[str, Recommendation]) -> pd.DataFrame:
    """One row per recommendation: what it recommended, how sure, and each strategy's expected accuracy."""
    rows = []
    for record_id, rec in recommendations.items():
        row = {"record": record_id, "recommended": rec.choice.label, "confidence": rec.confidence,
               "based on": rec.based_on}
        for outlook in rec.outlooks:
            row[f"{outlook.kind} expected"] = f"{outlook.accuracy_low:.2f}-{outlook.accuracy_high:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)
