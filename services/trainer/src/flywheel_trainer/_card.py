"""MODEL_CARD.md: what the model is for, what it was trained on, how well it does and where it falls short."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _metric_row(name: str, m: dict[str, Any]) -> str:
    return (
        f"| {name} | {m['rows']} | {m['positives']} | {_fmt(m['roc_auc'])} | {_fmt(m['pr_auc'])} | {_fmt(m['ece'])} |"
    )


def _slice_section(slices: dict[str, Any], title: str) -> list[str]:
    lines = [f"### {title}", ""]
    for column, block in slices.items():
        lines += [
            f"**{column}**",
            "",
            "| value | rows | frauds | ROC-AUC | PR-AUC | ECE |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [_metric_row(value, m) for value, m in block["values"].items()]
        if block["skipped"]:
            skipped = ", ".join(f"{value} ({why})" for value, why in block["skipped"].items())
            lines += ["", f"Skipped as too small to measure: {skipped}."]
        lines.append("")
    return lines


def _gates_section(gates: dict[str, Any] | None) -> list[str]:
    """Whether the version may be given traffic, and why (metadata `gates`); nothing for a version from before gates."""
    if gates is None:
        return []
    stable = gates.get("stable_version")
    if gates["status"] == "rejected":
        head = (f"**REJECTED: never to be rolled out.** This version failed its gates against the stable version "
                f"{stable} on the newest labelled window (the test split); it is published so the reasons can be read.")
    elif stable:
        head = f"Every gate passed against the stable version {stable} on the newest labelled window (the test split)."
    else:
        head = ("No stable version was named to compare with (FLYWHEEL_TRAINER_STABLE_VERSION unset): only the "
                "variants gate ran.")
    lines = ["## Gates before any traffic", "", head, "",
             "| gate | passed | value | bound | reason |", "| --- | --- | --- | --- | --- |"]
    for check in gates["checks"]:
        lines.append(f"| {check['name']} | {'yes' if check['passed'] else '**no**'} | {_fmt(check.get('value'))} | "
                     f"{_fmt(check.get('threshold'))} | {check['reason']} |")
    return [*lines, ""]


def render_model_card(metadata: dict[str, Any]) -> str:
    """The model card of a version, from the metadata that is published with it."""
    metrics, lineage, variants = metadata["metrics"], metadata["lineage"], metadata["variants"]
    torch_m, base_m = metrics["torch"]["test"], metrics["baseline"]["test"]
    split = lineage["split"]
    selected = metrics.get("selected", "torch")  # versions from before selection always served the torch model
    values = metrics.get("selection", {}).get("values", {})
    baseline_gate = metrics.get("baseline_gate")
    other = "baseline" if selected == "torch" else "torch"
    names = {"torch": "torch model", "baseline": "logistic-regression baseline"}
    verdict = (
        f"This version serves the **{names[selected]}**, chosen on validation PR-AUC "
        f"({_fmt(values.get(selected))} vs {_fmt(values.get(other))} for the {names[other]}; "
        "a tie goes to the baseline). "
        f"On test PR-AUC the torch model scores {_fmt(torch_m['pr_auc'])} and the baseline {_fmt(base_m['pr_auc'])}."
    )
    if baseline_gate is not None:
        verdict += (" The choice held on test." if baseline_gate["passed"] else
                    f" **Baseline gate failed**: {baseline_gate['reason']}.")
    model_section = (
        "An MLP over standardised numerics (log1p for heavy-tailed counts and amounts) and hashed embeddings of "
        "card, merchant, country, category, channel and currency; loss weighted for the class imbalance; early "
        "stopping on validation PR-AUC "
        f"(best epoch {lineage['training']['best_epoch']} of {lineage['training']['epochs_run']}); "
        "Platt scaling fitted on validation and baked into the graph."
    )
    warm = lineage["training"].get("warm_start")
    if warm:  # stateful retraining: say where the weights came from before anything else about the model
        model_section = (
            f"Fine-tuned from {warm['version']}'s torch weights (warm start, `{warm['file']}`: validation PR-AUC "
            f"{_fmt(warm.get('validation_pr_auc_before'))} before the first step; epoch 0 below is those weights), "
            "with its numeric standardisation kept. " + model_section
        )
    if selected == "baseline":
        model_section = (
            "Logistic regression (scikit-learn, unweighted) over the same model input: numerics log1p'd where "
            "heavy-tailed and standardised, each hashed column one-hot by bucket (a bucket unseen in training "
            "adds nothing), exported to ONNX as one graph with the same input and output as the torch model. "
            "The torch model trained in the same run (" + model_section[0].lower() + model_section[1:-1] +
            ") lost to it on validation and is not served."
        )
    lines = [
        f"# Model card: {metadata['model']} (created {metadata['created_at']})",
        "",
        *_gates_section(metadata.get("gates")),
        "## Intended use",
        "",
        "Scores card transactions for fraud at authorisation time: the transformer sends the features of "
        f"feature service `{metadata['feature_service']}` plus the raw categoricals, and gets a calibrated "
        "probability of fraud to threshold into a decision. Not for credit decisions, for judging card "
        "holders, or for data that did not come from the Flywheel simulator without retraining and re-evaluating.",
        "",
        "## Data",
        "",
        f"- Transactions: {lineage['rows']['transactions']} "
        f"({lineage['transactions']['start']} to {lineage['transactions']['end']}); "
        f"training cut-off {lineage['cutoff']}.",
        f"- Rows with a label known at the cut-off: {lineage['rows']['labelled_at_cutoff']} "
        f"({lineage['rows']['frauds']} frauds). "
        f"Left out: {lineage['rows']['excluded_within_label_window']} transactions "
        f"younger than the label window ({lineage['label_window']}, the longest label delay seen), whose labels were "
        "still arriving at the cut-off (only frauds get labelled early, so keeping them would inflate the fraud rate), "
        f"and {lineage['rows']['excluded_label_unknown']} older ones whose label was still unknown.",
        "- Features: point-in-time join through Feast, each row stamped 1 µs before its transaction.",
        f"- Time split, oldest to newest, no shuffling across boundaries: train {split['train']['rows']} rows "
        f"({split['train']['start']} to {split['train']['end']}), validation {split['validation']['rows']} "
        f"(from {split['validation_start']}), test {split['test']['rows']} (from {split['test_start']}).",
        "- Missing numeric features take the training medians (`defaults` in metadata.json), "
        "in training and serving alike.",
        "",
        "## Model",
        "",
        model_section,
        "",
        "## Metrics (test split)",
        "",
        f"PR-AUC is average precision; ECE uses {metrics['ece_bins']} equal-width probability bins weighted by rows.",
        "",
        "| model | rows | frauds | ROC-AUC | PR-AUC | ECE |",
        "| --- | --- | --- | --- | --- | --- |",
        _metric_row("baseline (logistic regression)", base_m),
        _metric_row("torch (calibrated)", torch_m),
        "",
        verdict,
        "",
        "## Metrics by slice (test split)",
        "",
        *_slice_section(metadata["slices"][selected], f"{selected} (served)"),
        *_slice_section(metadata["slices"][other], other),
        "## Variants",
        "",
        "| variant | published | gate | batch 1 (us) | batch 256 (us) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, v in variants.items():
        latency = v.get("cpu_latency", {})
        lines.append(
            f"| {name} | {'yes' if v['published'] else 'no'} | {v['gate'].get('reason', '')} | "
            f"{latency.get('batch_1_us', 'n/a')} | {latency.get('batch_256_us', 'n/a')} |"
        )
    int8 = variants.get("int8", {})
    for attempt in int8.get("gate", {}).get("attempts", []):
        kept = ", ".join(attempt["float_nodes"]) or "none"
        lines.append(f"\nint8 attempt with dense layers kept in float: {kept} -> {attempt['reason']}.")
    gate = variants["fp32"]["gate"]
    lines += [
        "",
        f"fp32 must match the trained model ({selected}) within {gate.get('atol')} "
        "(max abs probability difference) on the test split. "
        + (
            f"Other variants are published only if, against fp32 on the test split, |ROC-AUC difference| <= "
            f"{variants['fp16']['gate'].get('max_auc_diff')} and max abs probability difference <= "
            f"{variants['fp16']['gate'].get('max_probability_diff')}."
            if "fp16" in variants
            else "Only fp32 is built for a linear model: reduced precision would save nothing."
        )
        + " Latency: median of onnxruntime CPU runs after warm-up.",
        "",
        "## Limits",
        "",
        "- Trained on simulated data; fraud patterns, base rates and label delays are the simulator's.",
        f"- Labels arrive late: transactions of the last {lineage['label_window']} before the cut-off are not in "
        "training or evaluation, so the newest behaviour is unseen until a later retrain.",
        "- The predictor serves the fastest published variant by the CPU latency above; a variant slower than "
        "fp32 (quantisation does not pay on a network this small) is published but not chosen.",
        "- Card and merchant ids are hashed into fixed buckets; "
        "collisions and ids unseen in training fall back on shared embeddings.",
        "- Slices with few rows or frauds are not measured (listed above).",
        "",
    ]
    return "\n".join(lines)
