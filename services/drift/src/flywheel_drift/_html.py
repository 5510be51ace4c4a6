"""The report as one HTML page for a person: per feature, the reference and the current window side by
side, and the p-values over time. Plots are inline SVG drawn here (no plotting library, no JavaScript,
nothing fetched), so the page works from a port-forward on an air-gapped cluster.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

W, H, PAD = 260, 90, 4
STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}.drift{color:#b00020;font-weight:600}.ok{color:#1b5e20}
.grid{display:flex;flex-wrap:wrap;gap:16px}.card{border:1px solid #ddd;border-radius:6px;padding:8px}
.muted{color:#777;font-size:12px}
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return escape(str(value))


def histogram_svg(ref: list[float], cur: list[float] | None) -> str:
    """Reference proportions as grey bars, the current window as a red outline, on the same bins."""
    n = len(ref)
    top = max(ref + (cur or [])) or 1.0
    bw = (W - 2 * PAD) / max(n, 1)
    parts = [f'<svg width="{W}" height="{H}" role="img" aria-label="reference vs current histogram">']
    for i, r in enumerate(ref):
        h = (H - 2 * PAD) * r / top
        parts.append(f'<rect x="{PAD + i * bw:.1f}" y="{H - PAD - h:.1f}" width="{bw * 0.9:.1f}" '
                     f'height="{h:.1f}" fill="#bbb"/>')
    if cur:
        points = " ".join(f"{PAD + (i + 0.45) * bw:.1f},{H - PAD - (H - 2 * PAD) * c / top:.1f}"
                          for i, c in enumerate(cur))
        parts.append(f'<polyline points="{points}" fill="none" stroke="#c62828" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


def pvalue_svg(p_values: list[float | None], alpha: float) -> str:
    """-log10(p) per window with the alpha line: points above the dashed line are small p-values."""
    ys = [min(-math.log10(max(p, 1e-12)), 12.0) for p in p_values if p is not None]
    if not ys:
        return '<span class="muted">no windows yet</span>'
    top = max(max(ys), -math.log10(alpha) * 1.5)
    step = (W - 2 * PAD) / max(len(ys) - 1, 1)

    def y(v: float) -> float:
        return H - PAD - (H - 2 * PAD) * v / top

    points = " ".join(f"{PAD + i * step:.1f},{y(v):.1f}" for i, v in enumerate(ys))
    line = y(-math.log10(alpha))
    return (f'<svg width="{W}" height="{H}" role="img" aria-label="p-values over time">'
            f'<line x1="{PAD}" x2="{W - PAD}" y1="{line:.1f}" y2="{line:.1f}" stroke="#999" stroke-dasharray="4 3"/>'
            f'<polyline points="{points}" fill="none" stroke="#1565c0" stroke-width="1.5"/></svg>')


def render(report: dict[str, Any]) -> str:
    alpha = report.get("settings", {}).get("alpha", 0.05)
    body = [f"<h1>Flywheel drift report</h1><p class='muted'>ready: {_fmt(report['ready'])} · backlog rows: "
            f"{report['backlog']['rows']} · MMD: {escape(str(report['mmd']))}</p>"]
    if not report["versions"]:
        body.append("<p>No monitored version has received traffic yet.</p>")
    for v in report["versions"]:
        status = '<span class="drift">DRIFT</span>' if v["drift"] else '<span class="ok">no drift</span>'
        body.append(f"<h2>{escape(v['model'])} {escape(v['version'])}: {status}</h2>"
                    f"<p>{v['rows']} rows analysed in {v['windows']} windows ({v['open_window_rows']} in the open "
                    f"window); {v['predictions_labelled']} of {v['predictions_logged']} logged predictions "
                    "labelled.</p>")
        body.append(_alerts(v["alerts"]))
        body.append(_feature_table(v["features"]))
        body.append(_feature_plots(v, alpha))
        body.append(_online(v["online"]))
        body.append(_performance(v))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Flywheel drift</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def _alerts(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "<p class='muted'>No alerts.</p>"
    rows = "".join(f"<tr><td>{escape(a['category'])}</td><td>{escape(a['detector'])}</td>"
                   f"<td>{escape(', '.join(a.get('features') or []) or '-')}</td><td>{_fmt(a['at'], 0)}</td></tr>"
                   for a in alerts[-10:])
    head = "<tr><th>category</th><th>detector</th><th>features</th><th>at (epoch s)</th></tr>"
    return f"<h3>Alerts</h3><table>{head}{rows}</table>"


def _feature_table(features: list[dict[str, Any]]) -> str:
    rows = []
    for f in features:
        last = f.get("last") or {}
        cls = ' class="drift"' if last.get("drift") else ""
        rows.append(f"<tr{cls}><td>{escape(f['name'])}</td><td>{escape(f['kind'])}</td><td>{escape(f['test'])}</td>"
                    f"<td>{_fmt(last.get('p_value'))}</td><td>{_fmt(last.get('q_value'))}</td>"
                    f"<td>{_fmt(last.get('distance'))}</td><td>{_fmt(last.get('psi'))}</td>"
                    f"<td>{_fmt(last.get('drift'))}</td></tr>")
    return ("<h3>Last window, per feature</h3><table><tr><th>feature</th><th>kind</th><th>test</th><th>p</th>"
            "<th>q (BH)</th><th>distance</th><th>PSI</th><th>drift</th></tr>" + "".join(rows) + "</table>")


def _feature_plots(v: dict[str, Any], alpha: float) -> str:
    cards = []
    for f in v["features"]:
        if f["kind"] == "skipped":
            continue
        p_values = [h["p_values"].get(f["name"]) for h in v["history"]]
        hist = ""
        if f.get("reference_histogram"):
            hist = histogram_svg(f["reference_histogram"]["proportions"], f.get("current_histogram"))
        cards.append(f"<div class='card'><b>{escape(f['name'])}</b><br>{hist}<br>{pvalue_svg(p_values, alpha)}"
                     f"<div class='muted'>grey: reference · red: last window · blue: -log10 p per window, "
                     f"dashed: alpha</div></div>")
    return "<h3>Reference vs current, and p-values over time</h3><div class='grid'>" + "".join(cards) + "</div>"


def _online(online: dict[str, Any]) -> str:
    stats = online.get("statistics") or {}
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{_fmt(val)}</td></tr>" for k, val in stats.items())
    return (f"<h3>Online detector</h3><p class='muted'>rank CUSUM, h={_fmt(online.get('h'))}, "
            f"k={_fmt(online.get('k'))}, "
            f"ERT={_fmt(online.get('ert'), 0)} rows; threshold: {escape(str(online.get('method')))}, "
            f"{escape(str(online.get('source')))}; {len(online.get('alarms') or [])} alarms</p>"
            f"<table><tr><th>feature</th><th>CUSUM / threshold</th></tr>{rows}</table>")


def _performance(v: dict[str, Any]) -> str:
    p = v.get("performance")
    if not p:
        return "<h3>Delayed-label performance</h3><p class='muted'>No labels yet.</p>"
    base = p.get("baseline") or {}
    rows = "".join(f"<tr><td>{name}</td><td>{_fmt(p.get(name))}</td><td>{_fmt(base.get(name))}</td></tr>"
                   for name in ("roc_auc", "pr_auc", "ece"))
    return (f"<h3>Delayed-label performance</h3><p>{p['rows']} labelled rows, {p['positives']} positive, coverage "
            f"{_fmt(p.get('coverage'))}; status <b>{escape(p['status'])}</b></p>"
            f"<table><tr><th>metric</th><th>live</th><th>version's test</th></tr>{rows}</table>")
