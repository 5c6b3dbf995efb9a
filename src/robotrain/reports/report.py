"""Run-comparison reports: one `report.md` plus PNG plots for any number of runs.

What a reader needs to compare imitation-learning runs honestly:

1. throughput (step time split into update vs data time, samples/s, peak memory);
2. training curves against steps *and* against samples seen (runs with different batch
   sizes only line up on the second);
3. sample efficiency: the offline action error at matched sample counts. This is the fair
   ACT-vs-SmolVLA comparison: their training losses are different quantities (ACT: L1 +
   weighted KL; SmolVLA: flow-matching MSE on the velocity field) and cannot be compared;
4. closed-loop success in simulation with 95% Wilson intervals, and a paired test when two
   evaluations used the same episode seeds.

Inputs are read by `robotrain.reports.runs` (our run dirs, LeRobot logs/checkpoints, eval
dirs). Example:
    robotrain report outputs/act outputs/smolvla path/to/lerobot_train.log --out report/
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robotrain.constants import (
    EVAL_ACTION_ERROR,
    EVAL_ACTION_ERROR_PER_JOINT,
    EVAL_BASELINE_ACTION_ERROR,
    EVAL_FIRST_ACTION_ERROR,
    LOGGED_AT,
    SO101_JOINT_NAMES,
    TRAIN_DATA_S,
    TRAIN_GRAD_NORM,
    TRAIN_LOSS,
    TRAIN_LR,
    TRAIN_PEAK_MEM_MB,
    TRAIN_PREFIX,
    TRAIN_SAMPLES_PER_S,
    TRAIN_UPDT_S,
)
from robotrain.errors import RobotrainError
from robotrain.system.files import atomic_path, atomic_write_text
from robotrain.reports.runs import NON_LOSS_TRAIN_KEYS, RunData, SimEval, load_run
from robotrain.evaluation.statistics import mcnemar_exact_p

logger = logging.getLogger(__name__)

REPORT_MD = "report.md"
MAX_GRID_POINTS = 8
"""At most this many matched sample counts in the sample-efficiency table."""


# ------------------------------------------------------------------------ formatting
def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, float):
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** (-nd)):
            return f"{x:.{max(nd - 1, 1)}e}"
        return f"{x:.{nd}f}"
    return str(x)


def _fmt_count(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    for unit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= unit:
            return f"{x / unit:.3g}{suffix}"
    return f"{x:.0f}"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (cells already formatted or str()-able)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out)


def _unique_labels(runs: list[RunData]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        base = run.label
        if base in seen:
            seen[base] += 1
            run.label = f"{base}#{seen[base]}"
        else:
            seen[base] = 1


# ------------------------------------------------------------------------ throughput
def _median(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(vals)) if vals else None


def throughput_rows(runs: list[RunData]) -> list[list[str]]:
    """One row per run: medians over training lines (the first, warm-up line excluded); the
    wall time from the first to the last logged line (ours log a clock time; LeRobot's logs do not)."""
    rows = []
    for run in runs:
        recs = run.train[1:] if len(run.train) > 2 else run.train
        updt = _median([r.get(TRAIN_UPDT_S, math.nan) for r in recs])
        data = _median([r.get(TRAIN_DATA_S, math.nan) for r in recs])
        step_s = (updt or 0.0) + (data or 0.0) if (updt is not None or data is not None) else None
        sps = _median([r.get(TRAIN_SAMPLES_PER_S, math.nan) for r in recs])
        if sps is None and step_s and run.batch_size:
            sps = run.batch_size / step_s
        mem = [r[TRAIN_PEAK_MEM_MB] for r in run.train if TRAIN_PEAK_MEM_MB in r]
        data_share = f"{100 * data / step_s:.0f}%" if (data is not None and step_s) else "—"
        last_step = run.train[-1]["step"] if run.train else None
        times = [r[LOGGED_AT] for r in run.train if isinstance(r.get(LOGGED_AT), (int, float))]
        wall_min = (times[-1] - times[0]) / 60 if len(times) > 1 else None
        rows.append(
            [
                run.label,
                run.source,
                run.policy or "—",
                run.device or "—",
                _fmt(run.batch_size),
                _fmt_count(last_step),
                _fmt(step_s),
                _fmt(updt),
                _fmt(data),
                data_share,
                _fmt(sps, 1),
                _fmt(max(mem), 0) if mem else "—",
                _fmt(wall_min, 0),
            ]
        )
    return rows


THROUGHPUT_HEADERS = [
    "run", "source", "policy", "device", "batch size", "steps", "step time (s)",
    "updt_s", "data_s", "data share", "samples/s", "peak mem (MB)", "train wall (min)",
]


# ---------------------------------------------------------------------------- plots
def _plt():
    # matplotlib inside the plotting functions: the Agg backend is chosen just before pyplot
    # loads, so importing this module does not switch the backend of a user's session.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)


def _series(run: RunData, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r[x], r[y]) for r in run.train if x in r and y in r and math.isfinite(r[y])]
    if not pts:
        return np.array([]), np.array([])
    arr = np.array(sorted(pts))
    return arr[:, 0], arr[:, 1]


def train_metric_keys(runs: list[RunData]) -> list[str]:
    """train/loss, then every loss component any run logged, then grad norm and lr."""
    components = sorted(
        {k for run in runs for r in run.train for k in r if k.startswith(TRAIN_PREFIX)}
        - NON_LOSS_TRAIN_KEYS
        - {TRAIN_LOSS}
    )
    present = {k for run in runs for r in run.train for k in r}
    return [k for k in [TRAIN_LOSS, *components, TRAIN_GRAD_NORM, TRAIN_LR] if k in present]


_Y_LABELS = {
    TRAIN_LOSS: "training loss (policy-specific, see note)",
    TRAIN_GRAD_NORM: "gradient norm (before clipping)",
    TRAIN_LR: "learning rate",
}


def _ema(ys: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average (bias-corrected from the first point)."""
    alpha = 2.0 / (span + 1)
    out = np.empty_like(ys)
    acc = ys[0]
    for i, y in enumerate(ys):
        acc = alpha * y + (1 - alpha) * acc
        out[i] = acc
    return out


def _style_axes(ax: Any, xlabel: str, ylabel: str | None, log_y: bool) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_count(v)))
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot_train_metric(runs: list[RunData], key: str, path: Path) -> None:
    """One PNG: `key` against optimizer steps (left) and samples seen (right), runs overlaid.

    Long noisy curves are drawn faintly with an exponential moving average on top.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    all_y: list[float] = []
    for k, run in enumerate(runs):
        colour = f"C{k % 10}"
        for ax, x in zip(axes, ("step", "samples")):
            xs, ys = _series(run, x, key)
            if not len(xs):
                continue
            all_y.extend(ys.tolist())
            if len(xs) > 50 and key != TRAIN_LR:
                ax.plot(xs, ys, color=colour, lw=0.8, alpha=0.25)
                ax.plot(xs, _ema(ys, max(5, len(xs) // 30)), color=colour, lw=1.6, label=f"{run.label} (EMA)")
            else:
                ax.plot(xs, ys, color=colour, lw=1.4, marker="o" if len(xs) < 30 else None, ms=3, label=run.label)
    pos = [v for v in all_y if v > 0]
    log_y = key != TRAIN_LR and len(pos) == len(all_y) and bool(pos) and max(pos) / min(pos) > 20
    ylabel = _Y_LABELS.get(key, key.removeprefix(TRAIN_PREFIX))
    _style_axes(axes[0], "optimizer step", ylabel, log_y)
    _style_axes(axes[1], "samples seen", None, log_y)
    fig.suptitle(f"{key} against optimizer steps (left) and samples seen (right)")
    _save(fig, path)


def plot_sample_efficiency(runs: list[RunData], grid: np.ndarray, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in runs:
        xs = [e["samples"] for e in run.offline_evals if "samples" in e]
        ys = [e[EVAL_ACTION_ERROR] for e in run.offline_evals if "samples" in e]
        if xs:
            ax.plot(xs, ys, marker="o", ms=4, label=run.label)
    if len(grid):
        ax.axvspan(grid[0], grid[-1], color="grey", alpha=0.12, label="matched range")
    ax.set_title("Sample efficiency: held-out action error vs samples seen")
    _style_axes(ax, "samples seen", "offline action error (joint units; lower is better)", False)
    _save(fig, path)


def plot_success(evals: list[tuple[str, SimEval]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(evals) + 1.6))
    ys = np.arange(len(evals))
    pcs = np.array([ev.pc_success for _, ev in evals])
    lo = pcs - np.array([100 * ev.ci95[0] for _, ev in evals])
    hi = np.array([100 * ev.ci95[1] for _, ev in evals]) - pcs
    ax.barh(ys, pcs, xerr=[lo, hi], capsize=4, color="tab:blue", alpha=0.75)
    for y, (_, ev) in zip(ys, evals):
        ax.text(101, y, f"{ev.successes}/{ev.n_episodes}", va="center", fontsize=8)
    ax.set_yticks(ys, [label for label, _ in evals], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 112)
    ax.set_xlabel("success rate (%) with 95% Wilson interval")
    ax.set_title("Closed-loop success in simulation")
    ax.grid(True, axis="x", alpha=0.3)
    _save(fig, path)


# ----------------------------------------------------------------- sample efficiency
def matched_grid(runs: list[RunData]) -> np.ndarray:
    """Sample counts every run has been evaluated across (inside each run's eval range).

    Beyond a run's last evaluation we do not extrapolate: the grid lies in the overlap.
    """
    ranges = []
    for run in runs:
        xs = [e["samples"] for e in run.offline_evals if "samples" in e]
        if xs:
            ranges.append((min(xs), max(xs)))
    if not ranges:
        return np.array([])
    lo, hi = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if lo > hi:
        return np.array([])
    pts = sorted({e["samples"] for run in runs for e in run.offline_evals if lo <= e.get("samples", -1) <= hi})
    if len(pts) > MAX_GRID_POINTS:
        idx = np.linspace(0, len(pts) - 1, MAX_GRID_POINTS).round().astype(int)
        pts = [pts[i] for i in idx]
    return np.array(pts, dtype=float)


def interp_at(run: RunData, key: str, grid: np.ndarray) -> np.ndarray:
    pts = sorted((e["samples"], e[key]) for e in run.offline_evals if "samples" in e and key in e)
    if not pts or not len(grid):
        return np.full(len(grid), np.nan)
    xs, ys = np.array(pts, dtype=float).T
    return np.interp(grid, xs, ys)


# ------------------------------------------------------------------------- success
def paired_rows(evals: list[tuple[str, SimEval]]) -> list[list[str]]:
    """For every pair of evaluations on identical seed lists: discordant counts + McNemar."""
    rows = []
    for i in range(len(evals)):
        for j in range(i + 1, len(evals)):
            (la, a), (lb, b) = evals[i], evals[j]
            if not a.seeds or a.seeds != b.seeds or None in a.seeds:
                continue
            sa, sb = a.per_episode_success, b.per_episode_success
            both = sum(x and y for x, y in zip(sa, sb))
            only_a = sum(x and not y for x, y in zip(sa, sb))
            only_b = sum(y and not x for x, y in zip(sa, sb))
            neither = len(sa) - both - only_a - only_b
            p = mcnemar_exact_p(only_a, only_b)
            rows.append([la, lb, str(len(sa)), str(both), str(only_a), str(only_b), str(neither), f"{p:.3g}"])
    return rows


# -------------------------------------------------------------------------- report
@dataclass
class ReportResult:
    markdown: Path
    plots: list[Path]


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def write_report(run_paths: Sequence[str | Path], out_dir: str | Path) -> ReportResult:
    """Load every run, write `out_dir/report.md` and its PNGs; return their paths."""
    if not run_paths:
        raise RobotrainError("no runs given")
    runs = [load_run(p) for p in run_paths]
    _unique_labels(runs)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RobotrainError("--out must be a directory", out)
    out.mkdir(parents=True, exist_ok=True)
    plots: list[Path] = []
    md: list[str] = ["# robotrain report", ""]

    md += ["## Runs", ""]
    md.append(md_table(
        ["run", "source", "path", "training lines", "offline evals", "sim evals", "starts from"],
        [[r.label, r.source, str(r.path), len(r.train), len(r.offline_evals), len(r.sim_evals),
          r.init_from or "random init"] for r in runs],
    ))
    if any(r.init_from for r in runs):
        md += ["", "A run that starts from another checkpoint (`--init-from`) counts its samples from its "
               "own start: add what that checkpoint had seen before comparing sample counts."]

    # 1. throughput
    trained = [r for r in runs if r.train]
    md += ["", "## Throughput", ""]
    if trained:
        md.append(
            "Medians over logged training lines (the first, warm-up line excluded). "
            "`updt_s` = forward + backward + optimizer step, `data_s` = time waiting for the batch "
            "(LeRobot's definitions); step time = updt_s + data_s; train wall = first to last logged "
            "line (in-training offline evaluations included)."
        )
        md += ["", md_table(THROUGHPUT_HEADERS, throughput_rows(trained))]
    else:
        md.append("No training lines found in any run.")

    # 2. training curves
    md += ["", "## Training curves", ""]
    if trained:
        md.append(
            "Each plot shows a metric against optimizer steps (left) and samples seen (right); runs "
            "with different batch sizes are comparable only on the right. **Losses of different "
            "policies are different quantities** (ACT: L1 + KL-weighted; SmolVLA: flow-matching MSE) "
            "and must not be compared across policies; use the sample-efficiency section instead."
        )
        for key in train_metric_keys(trained):
            name = key.replace("/", "_") + ".png"
            plot_train_metric(trained, key, out / name)
            plots.append(out / name)
            md += ["", f"### {key}", "", f"![{key}]({name})"]
    else:
        md.append("No training curves to plot.")

    # 3. sample efficiency
    evaluated = [r for r in runs if r.offline_evals]
    md += ["", "## Sample efficiency (offline action error at matched samples)", ""]
    if evaluated:
        md.append(
            "`eval/action_error` is the same held-out metric for every policy (predicted vs recorded "
            "actions, joint units), so unlike the training losses it compares ACT with SmolVLA fairly. "
            "Values are linearly interpolated onto sample counts inside every run's evaluated range "
            "(no extrapolation)."
        )
        grid = matched_grid(evaluated)
        if len(grid):
            rows = []
            for g_i, g in enumerate(grid):
                vals = [interp_at(r, EVAL_ACTION_ERROR, grid)[g_i] for r in evaluated]
                finite = [v for v in vals if np.isfinite(v)]
                best = int(np.nanargmin(vals)) if finite and finite.count(min(finite)) == 1 else -1
                rows.append([_fmt_count(g)] + [
                    (f"**{_fmt(v)}**" if k == best and len(evaluated) > 1 else _fmt(v)) for k, v in enumerate(vals)
                ])
            md += ["", md_table(["samples seen", *[r.label for r in evaluated]], rows)]
        else:
            md += ["", "The runs' evaluated sample ranges do not overlap: no matched comparison is possible."]
        plot_sample_efficiency(evaluated, grid, out / "sample_efficiency.png")
        plots.append(out / "sample_efficiency.png")
        md += ["", "![sample efficiency](sample_efficiency.png)", "", "Last offline evaluation of each run:", ""]
        joint_short = [n.removesuffix(".pos") for n in SO101_JOINT_NAMES]
        last_rows = []
        for r in evaluated:
            e = r.offline_evals[-1]
            per_joint = e.get(EVAL_ACTION_ERROR_PER_JOINT) or []
            cells = [_fmt(float(v)) for v in per_joint][:6] if isinstance(per_joint, list) else []
            last_rows.append([
                r.label, _fmt_count(e.get("step")), _fmt_count(e.get("samples")),
                _fmt(e.get(EVAL_ACTION_ERROR)), _fmt(e.get(EVAL_FIRST_ACTION_ERROR)),
                _fmt(e.get(EVAL_BASELINE_ACTION_ERROR)),
                *(cells + ["—"] * (6 - len(cells))),
            ])
        md.append(md_table(["run", "step", "samples", "action error", "first-action error",
                            "mean-action baseline", *joint_short], last_rows))
        md += ["", "The mean-action baseline always predicts the training set's mean action: a policy "
               "must beat it by a wide margin before its action error means anything."]
    else:
        md.append("No `eval/action_error` lines in any run's metrics.jsonl.")

    # 4. success in simulation
    evals = [(f"{r.label}: {_rel(ev.path, r.path if r.path.is_dir() else r.path.parent)}", ev, r)
             for r in runs for ev in r.sim_evals]
    md += ["", "## Success in simulation", ""]
    md.append(
        "From every `eval_info.json` found anywhere below each run directory (e.g. "
        "`RUN/eval/<step>/eval_info.json`, where `evaluate_checkpoint_in_sim` writes). Intervals are "
        "95% Wilson score intervals; with a few dozen episodes they are wide, so overlapping intervals mean *no demonstrated difference*."
    )
    if evals:
        rows = [[r.label, _rel(ev.path, r.path if r.path.is_dir() else r.path.parent), ev.n_episodes,
                 ev.successes, f"{ev.pc_success:.1f}", f"[{100 * ev.ci95[0]:.1f}, {100 * ev.ci95[1]:.1f}]",
                 _fmt(ev.avg_sum_reward), _fmt(ev.mean_time_to_success_s, 2),
                 "—" if ev.n_cube_lifted is None else ev.n_cube_lifted,
                 _fmt(ev.median_abs_grasp_offset_across_mm, 2),
                 _fmt(ev.median_abs_grasp_yaw_error_deg, 1)] for _, ev, r in evals]
        md += ["", md_table(["run", "file", "episodes", "successes", "success %", "95% CI (%)",
                             "avg sum reward", "mean time to success (s)", "cube lifted",
                             "median grasp offset across jaws (mm)", "median jaw yaw error (deg)"], rows)]
        if any(ev.n_cube_lifted is not None for _, ev, _ in evals):
            md += ["", "`cube lifted`, the grasp offset and the jaw yaw error come from our simulation's "
                   "diagnostics: the cube's centre relative to the jaws, and the angle between the jaws "
                   "and the cube's nearest faces, at the first close command; a grasp fails beyond about "
                   "5 mm across the jaws (docs/sim.md). Evaluations older than the yaw diagnostic show —."]
        plot_success([(label, ev) for label, ev, _ in evals], out / "success.png")
        plots.append(out / "success.png")
        md += ["", "![success](success.png)"]
        paired = paired_rows([(label, ev) for label, ev, _ in evals])
        if paired:
            md += ["", "Paired comparisons (same episode seeds): only the discordant episodes (one "
                   "succeeds, the other fails) carry evidence; p is the exact two-sided McNemar test.", ""]
            md.append(md_table(["A", "B", "episodes", "both", "only A", "only B", "neither", "p"], paired))
    else:
        md += ["", "No `eval_info.json` found."]

    atomic_write_text(out / REPORT_MD, "\n".join(md) + "\n")
    logger.info("wrote %s and %d plots", out / REPORT_MD, len(plots))
    return ReportResult(markdown=out / REPORT_MD, plots=plots)


