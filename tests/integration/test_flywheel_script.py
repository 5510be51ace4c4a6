"""`make flywheel`'s outputs from a recorded run, without a stack: the HTML timeline is one self-contained page
(inline SVG, nothing fetched), every decision is numbered on the figures and in the table, the text timeline has
one line per event, and the same-window comparison's PR-AUC is the definition the drift service and the trainer use.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from flywheel import PANELS, average_precision, render_html, timeline  # noqa: E402

EVENTS = [
    {"wall_s": 0.0, "sim_days": 0.0, "kind": "world", "text": "live traffic begins: scenario concept, serving v1"},
    {"wall_s": 41.0, "sim_days": 8.9, "kind": "alert", "text": "v1: performance (performance) degraded"},
    {"wall_s": 112.0, "sim_days": 24.6, "kind": "policy", "text": "TrainingStarted: Performance: v1 PR-AUC 0.37 < 0.5"},
    {"wall_s": 190.0, "sim_days": 26.0, "kind": "published", "text": "v2 (candidate)"},
    {"wall_s": 190.0, "sim_days": 26.0, "kind": "gate", "text": "v2 pr_auc_gain pass: gain +0.05 <script>"},
    {"wall_s": 199.0, "sim_days": 26.2, "kind": "rollout", "text": "fraud-v2 SetWeight 25%: step 1"},
    {"wall_s": 240.0, "sim_days": 26.9, "kind": "promoted", "text": "v2 serves 100% of fraud (was v1)"},
]


def _sample(wall: float, days: float, shares: dict[str, float]) -> dict:
    return {"wall_s": wall, "sim_days": days, "sent": int(wall * 300), "errors": 0,
            "route": {"stable": "v1", "candidate": None, "weight": 0},
            "versions": {v: {"answered": int(300 * share), "decline_rate": 0.01 if v == "v1" else 0.02, "share": share,
                             "pr_auc": 0.4 if v == "v1" else None, "pr_auc_rows": 2000, "logged": 10, "labelled": 5,
                             "window": 3, "min_p": 1e-3, "drift": False} for v, share in shares.items()}}


SAMPLES = [_sample(w, d, s) for w, d, s in [(1, 0.2, {"v1": 1.0}), (100, 22.0, {"v1": 1.0}),
                                            (210, 26.5, {"v1": 0.75, "v2": 0.25}), (250, 27.0, {"v2": 1.0})]]
SUMMARY = {"scenario": "concept", "outcome": "PASS: v2 serves 100%", "transactions": 75000,
           "comparison": {"old": "v1", "new": "v2", "pr_auc_old": 0.33, "pr_auc_new": 0.38}}


def test_the_html_timeline_is_one_self_contained_page_with_a_figure_per_panel():
    page = render_html(SUMMARY, SAMPLES, EVENTS)

    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert page.count("<svg") == len(PANELS) == 4
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "an external asset"
    assert "<script" not in page and "&lt;script&gt;" in page  # event text is escaped, never markup


def test_every_decision_but_a_gate_is_a_numbered_line_on_each_figure_and_a_row_of_the_table():
    page = render_html(SUMMARY, SAMPLES, EVENTS)

    marked = [e for e in EVENTS if e["kind"] != "gate"]
    for n, event in enumerate(marked, 1):
        assert page.count(f"<title>{n}. {event['kind']}: ") == len(PANELS), event
        assert f"<tr><td>{n}</td><td>{event['sim_days']:.2f}</td>" in page
    assert "v2 pr_auc_gain pass" in page.split("<h2>Gates</h2>")[1]  # gates are listed apart


def test_each_version_gets_its_own_line_in_every_panel_it_has_values_for():
    page = render_html(SUMMARY, SAMPLES, EVENTS)

    assert page.count('<polyline points="') == 2 + 1 + 2 + 2  # declines, PR-AUC (v1 only), p-values, shares


def test_the_text_timeline_has_one_line_per_event_in_order():
    lines = timeline(EVENTS).splitlines()

    assert len(lines) == len(EVENTS)
    assert [line.split()[3] for line in lines] == [e["kind"] for e in EVENTS]


@pytest.mark.parametrize(("labels", "scores", "expected"), [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.8333333),  # scikit-learn's average_precision_score example
    ([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5], 0.5),  # one tie: one threshold, precision at it
    ([0, 0, 0], [0.1, 0.2, 0.3], None),  # no fraud: undefined
])
def test_pr_auc_is_average_precision_with_ties_as_one_threshold(labels, scores, expected):
    result = average_precision(labels, scores)

    assert result == pytest.approx(expected) if expected is not None else result is None
