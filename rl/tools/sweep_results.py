"""Sweep results: one row per trial (params, the metric's last and best values, steps, status), ranked
best first, written as results.csv / results.json, printed as a table, and drawn as sweep.png (the
metric per trial over steps). Rows come from the trials' own run dirs (metrics.jsonl, summary.json),
so they read the same whichever driver ran.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

from rl.run.logging import read_metrics


def trial_row(name: str, params: dict, run_dir: Path, metric: str, mode: str, started: float,
              error: str | None = None) -> dict:
    """One trial's outcome. status: DONE (the driver returned), STOPPED (ended early by the scheduler),
    ERROR (raised; `error` holds its first line)."""
    rows = read_metrics(run_dir / "metrics.jsonl")
    history = [(r["step"], r[metric]) for r in rows if isinstance(r.get(metric), (int, float))]
    values = [v for _, v in history]
    pick = max if mode == "max" else min
    summary_path = run_dir / "summary.json"
    done = summary_path.exists() and summary_path.stat().st_mtime >= started
    return {"trial": name, **{f"param:{k}": v for k, v in params.items()},
            "last": values[-1] if values else None, "best": pick(values) if values else None,
            "steps": len(rows), "status": "ERROR" if error else ("DONE" if done else "STOPPED"),
            "error": error or "", "history": history,
            "summary": json.loads(summary_path.read_text()) if done else {}}


def rank(rows: list[dict], mode: str, scope: str) -> list[dict]:
    """Best first by `scope` (last | best); trials without a value go last. Adds `rank`."""
    key = "last" if scope == "last" else "best"
    sign = -1.0 if mode == "max" else 1.0
    ordered = sorted(rows, key=lambda r: (r[key] is None or not math.isfinite(r[key]),
                                          sign * r[key] if r[key] is not None else 0.0, r["trial"]))
    return [{"rank": i + 1, **r} for i, r in enumerate(ordered)]


def collect_rows(spec, sweep_dir: Path, started: float, grid=None) -> list[dict]:
    """Rows of every trial that started in this sweep (run dirs written since `started`), ranked;
    errors come from Tune's ResultGrid when there is one (a sweep Tune gave up on still gets rows)."""
    import yaml
    errors, configs = {}, {}
    for result in grid or []:
        configs[Path(result.path).name] = result.config
        if result.error:
            errors[Path(result.path).name] = str(result.error).strip().splitlines()[-1][:300]
    rows = []
    for run_dir in sorted(sweep_dir.glob("trial_*")):
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.exists() or cfg_path.stat().st_mtime < started:
            continue
        cfg = yaml.safe_load(cfg_path.read_text())
        params = {k: _dotted(cfg, k) for k in spec.space}
        rows.append(trial_row(run_dir.name, params, run_dir, spec.metric, spec.mode, started,
                              errors.get(run_dir.name)))
    for name in sorted(set(errors) - {r["trial"] for r in rows}):  # failed before its run dir existed
        params = {k: configs[name].get(k) for k in spec.space}
        rows.append(trial_row(name, params, sweep_dir / name, spec.metric, spec.mode, started, errors[name]))
    return rank(rows, spec.mode, spec.scope)


def _dotted(data, key: str):
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data.get(part)
    return data


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def table(rows: list[dict], metric: str, scope: str) -> str:
    """A fixed-width table, best first."""
    params = [k for k in rows[0] if k.startswith("param:")] if rows else []
    head = ["rank", "trial", *[p.removeprefix("param:") for p in params], f"{metric} ({scope})",
            "last" if scope == "best" else "best", "steps", "status"]
    other = "last" if scope == "best" else "best"
    body = [[_fmt(r["rank"]), r["trial"], *[_fmt(r[p]) for p in params], _fmt(r[scope]), _fmt(r[other]),
             _fmt(r["steps"]), r["status"]] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [head, *body]]
    for r in rows:
        if r["error"]:
            lines.append(f"{r['trial']}: {r['error']}")
    return "\n".join(lines)


def print_table(rows: list[dict], spec) -> None:
    print(table(rows, spec.metric, spec.scope), flush=True)


def write_results(rows: list[dict], spec, sweep_dir: Path) -> dict[str, Path]:
    """results.json (spec + rows with histories), results.csv (no histories), sweep.png."""
    out = {"json": sweep_dir / "results.json", "csv": sweep_dir / "results.csv"}
    out["json"].write_text(json.dumps({"spec": dataclasses.asdict(spec), "rows": rows}, indent=1, default=str))
    cols = [k for k in (rows[0] if rows else {}) if k not in ("history", "summary")]
    with open(out["csv"], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    png = plot_sweep(rows, spec.metric, sweep_dir / "sweep.png")
    if png is not None:
        out["png"] = png
    return out


def plot_sweep(rows: list[dict], metric: str, png_path: Path) -> Path | None:
    """The metric per trial over steps, one line per trial, labelled with its params."""
    drawn = [r for r in rows if r["history"]]
    if not drawn:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for r in drawn:
        label = r["trial"] + " " + " ".join(f"{k.removeprefix('param:').split('.')[-1]}={_fmt(v)}"
                                             for k, v in r.items() if k.startswith("param:"))
        steps, values = zip(*r["history"])
        ax.plot(steps, values, marker="." if len(steps) < 40 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return png_path
