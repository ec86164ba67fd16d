"""Panels for choosing a backbone, shared by the Backbones page and History's share view: a ranking (answer, chart,
table, what could not be measured) and a multi-backbone comparison (answer, chart, strategy x backbone table, the
prediction checked against what was confirmed). Layout only: every figure comes from tlcore."""

from __future__ import annotations

import json

import streamlit as st

from tlcore.advice.candidates import Ranking, check_confirmation
from tlcore.experiments.backbones import BackbonesResult
from tlcore.views.backbones import backbones_figure, checks_frame, ranking_figure, ranking_frame
from tlcore.views.report import backbones_report_html, ranking_report_html
from ui.results import page_link_to

BACKBONES_PAGE = "pages/6_Backbones.py"
COMPARE_PAGE = "pages/1_Compare.py"
PERCENT = st.column_config.NumberColumn(format="%.1f%%")


def _points(frame, columns: list[str]):
    """Accuracies as percentages with one decimal, as the statement writes them (a copy)."""
    frame = frame.copy()
    for name in columns:
        frame[name] = frame[name].astype(float) * 100
    return frame


def ranking_results(ranking: Ranking, key: str) -> None:
    st.success(ranking.statement, icon=":material/trophy:")
    st.plotly_chart(ranking_figure(ranking), key=f"{key}_chart")
    table = _points(ranking_frame(ranking), ["predicted accuracy", "from", "to", "5-fold", "k-NN"])
    st.dataframe(table, hide_index=True, key=f"{key}_table",
                 column_config={"predicted accuracy": PERCENT, "from": PERCENT, "to": PERCENT, "5-fold": PERCENT,
                                "k-NN": PERCENT,
                                "LogME": st.column_config.NumberColumn(format="%.3f"),
                                "H-score": st.column_config.NumberColumn(format="%.2f"),
                                "params (M)": st.column_config.NumberColumn(format="%.2f"),
                                "multiply-adds (M)": st.column_config.NumberColumn(format="%.0f"),
                                "ms / image": st.column_config.NumberColumn(format="%.2f"),
                                "peak MB": st.column_config.NumberColumn(format="%.0f")})
    for c in ranking.candidates:
        if not c.completed and c.reason:
            st.warning(f"{c.label} was not measured: {c.reason}", icon=":material/block:")
    st.caption(f"Predicted accuracy: the feature-extraction head's val accuracy on cached frozen features "
               f"({ranking.train_images} training and {ranking.val_images} val images, seed {ranking.seed}), the "
               f"number a comparison's feature extraction reports. 5-fold: the same head cross-validated over training "
               f"and val images together (it trains on more images, so it reads higher); k-NN, LogME and H-score on "
               f"the training images. Cost: {ranking.cost_basis}. "
               f"{ranking.timing_text()}.")
    if ranking.record_id:
        _share(ranking.record_id, "ranking", ranking_report_html(ranking), ranking.to_dict(), key)


def backbones_results(result: BackbonesResult, ranking: Ranking | None, key: str) -> None:
    st.success(result.statement(), icon=":material/trophy:")
    st.plotly_chart(backbones_figure(result), key=f"{key}_chart")
    frame = result.to_frame()
    columns = ["candidate", "strategy"] + (["images a class", "seed"] if result.config.is_sweep else []) + [
        "status", "accuracy", "accuracy_low", "accuracy_high", "best_val_accuracy", "train_seconds",
        "ms_per_image", "trainable_params"]
    accuracies = ["accuracy", "accuracy_low", "accuracy_high", "best_val_accuracy"]
    st.dataframe(_points(frame[columns], accuracies), hide_index=True, key=f"{key}_table",
                 column_config={"accuracy": st.column_config.NumberColumn("test accuracy", format="%.1f%%"),
                                "accuracy_low": st.column_config.NumberColumn("from", format="%.1f%%"),
                                "accuracy_high": st.column_config.NumberColumn("to", format="%.1f%%"),
                                "trainable_params": st.column_config.NumberColumn("trainable", format="%d"),
                                "best_val_accuracy": st.column_config.NumberColumn("val accuracy", format="%.1f%%"),
                                "train_seconds": st.column_config.NumberColumn("train s", format="%.1f"),
                                "ms_per_image": st.column_config.NumberColumn("ms / image", format="%.2f")})
    if ranking is not None:
        checks = check_confirmation(ranking, result)
        if checks:
            st.markdown("**Predicted against confirmed** (feature extraction: the same head on the same features, so "
                        "the confirmed val accuracy must equal the prediction; test accuracy is on other images)")
            percents = ["predicted", "from", "to", "confirmed val", "test", "test from", "test to"]
            st.dataframe(_points(checks_frame(checks), percents), hide_index=True, key=f"{key}_checks",
                         column_config={n: PERCENT for n in ("predicted", "from", "to", "confirmed val", "test",
                                                             "test from", "test to")})
    for member in result.members:
        if member.record_id and member.status not in ("deleted",):
            page_link_to(COMPARE_PAGE, f"{member.candidate.label}: its comparison ({member.status})", None,
                         {"job": member.record_id})
    if result.record_id:
        _share(result.record_id, "backbones", backbones_report_html(result), result.to_dict(), key)


def _share(record_id: str, kind: str, report: str, data: dict, key: str) -> None:
    st.caption(f"Share: add `?run={record_id}` to this dashboard's address (any page) to open it read-only.")
    c1, c2 = st.columns(2)
    c1.download_button("HTML report", report, f"tlcore-{kind}-{record_id}.html", "text/html", key=f"{key}_html")
    c2.download_button("JSON", json.dumps(data, indent=1, default=str), f"tlcore-{kind}-{record_id}.json",
                       "application/json", key=f"{key}_json")
