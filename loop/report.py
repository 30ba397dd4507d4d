"""Tables and plots from a store: the best trial, CSV/JSON export, and the PNG report."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from loop.config import Campaign, parse_campaign
from loop.store import CampaignRow, Store, export_records


def stored_campaign(row: CampaignRow) -> Campaign:
    """The campaign model from the YAML text kept in the store (no file needed)."""
    path = Path(row.config_path)
    return parse_campaign(row.config_text, path=path, base_dir=path.parent).campaign


def best_record(records: list[dict[str, Any]], objective: str, goal: str) -> dict[str, Any] | None:
    """The completed trial with the best finite objective value."""
    sign = 1.0 if goal == "maximize" else -1.0
    best: dict[str, Any] | None = None
    for r in records:
        value = r["outputs"].get(objective)
        if r["status"] != "completed" or value is None or not math.isfinite(value):
            continue
        if best is None or sign * (value - best["outputs"][objective]) > 0:
            best = r
    return best


def best_so_far(records: list[dict[str, Any]], objective: str, goal: str) -> list[float]:
    """Running best objective per trial (NaN until the first completed trial)."""
    sign = 1.0 if goal == "maximize" else -1.0
    trace, best = [], math.nan
    for r in records:
        value = r["outputs"].get(objective)
        if r["status"] == "completed" and value is not None and math.isfinite(value):
            if math.isnan(best) or sign * (value - best) > 0:
                best = value
        trace.append(best)
    return trace


def to_csv(records: list[dict[str, Any]]) -> str:
    """Flat CSV: parameters as columns, readbacks as ``readback.NAME``, outputs by name."""
    params = _keys(records, "parameters")
    readbacks = _keys(records, "readbacks")
    outputs = _keys(records, "outputs")
    header = (
        ["trial_id", "number", "kind", "status"]
        + params
        + [f"readback.{k}" for k in readbacks]
        + outputs
        + ["run_uid", "error", "started_at", "finished_at"]
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in records:
        writer.writerow(
            [r["trial_id"], r["number"], r["kind"], r["status"]]
            + [r["parameters"].get(k, "") for k in params]
            + [r["readbacks"].get(k, "") for k in readbacks]
            + [r["outputs"].get(k, "") for k in outputs]
            + [r["run_uid"] or "", r["error"] or "", r["started_at"] or "", r["finished_at"] or ""]
        )
    return buffer.getvalue()


def to_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, indent=2, default=str)


def _keys(records: list[dict[str, Any]], field: str) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        for k in r[field]:
            seen.setdefault(k, None)
    return list(seen)


def plot_report(store: Store, row: CampaignRow, out: Path) -> Path:
    """Best-so-far trace and every output per trial, one panel each, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    campaign = stored_campaign(row)
    objective = campaign.objectives[0]
    if row.id is None:  # pragma: no cover
        raise ValueError("campaign row without id")
    records = export_records(store, row.id)
    outputs = _keys(records, "outputs")
    numbers = [r["number"] for r in records]
    fig, axes = plt.subplots(
        1 + len(outputs), 1, figsize=(8, 2.6 * (1 + len(outputs))), sharex=True, squeeze=False
    )
    ax = axes[0, 0]
    ax.plot(
        numbers,
        best_so_far(records, objective.name, objective.goal),
        drawstyle="steps-post",
        color="C0",
        lw=2,
    )
    ax.set_ylabel(f"best {objective.name}")
    ax.set_title(f"{row.name}: best {objective.name} so far ({objective.goal})")
    for i, name in enumerate(outputs, start=1):
        ax = axes[i, 0]
        for status, color, marker in (("completed", "C0", "o"), ("failed", "C3", "x")):
            xs = [r["number"] for r in records if r["status"] == status]
            ys = [r["outputs"].get(name, math.nan) for r in records if r["status"] == status]
            if status == "failed":
                ys = [math.nan if y is None else y for y in ys]
            ax.scatter(xs, ys, s=16, color=color, marker=marker, label=status)
        initial = [r["number"] for r in records if r["kind"] in ("initial", "sobol", "random")]
        if initial and max(initial) < max(numbers, default=0):
            ax.axvline(max(initial) + 0.5, color="grey", ls=":", lw=1)
        ax.set_ylabel(name)
    axes[-1, 0].set_xlabel("trial")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
