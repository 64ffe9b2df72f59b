"""Offline HTML reports of a study: history, FID curves, importances, parameters, sample grids.

Every figure comes in two halves, as in ``optuna/visualization/_*.py``: a pure data function
(``_history_info(study)``, ``_curves_info(study)``, ...) that returns a plain dataclass, and a
drawing function (``_draw_history(info)``, ...) that turns it into a plotly figure. The data is
tested without plotly or a browser; the pages are tested in a real headless browser.

The report is a folder of static pages that open offline: plotly.js is written into it once
(``plotly.min.js``) and every page loads it from there, never from a CDN.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from ganhpo._files import atomic_write_bytes
from ganhpo.errors import ConfigError

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["PAGES", "Page", "write_report"]

logger = logging.getLogger(__name__)

PLOTLY_JS = "plotly.min.js"  # written once into the report folder; every page loads it
CONTOUR_PARAMS = ("lr_g", "lr_d")  # the pair whose interplay matters most for GANs
GRID_POINTS = 50  # contour resolution per axis
BEST_ROWS = 10  # trials in the index page's table
ROUGH_IMPORTANCES = 10  # fewer completed trials than this: importances carry a warning


# ------------------------------------------------------------------------------------ helpers
def _write(path: Path, data: bytes) -> None:
    """Write atomically, readable by all like any file a browser or web server may serve."""
    atomic_write_bytes(path, data)
    path.chmod(0o644)  # the temporary file it was renamed from was private (0600)


def _objective(study: optuna.Study) -> str:
    """The objective's name (``fid``/``kid``) from the stored spec, else ``value``."""
    spec = study.user_attrs.get("ganhpo:spec")
    if isinstance(spec, dict):
        name = spec.get("study", {}).get("objective")
        if isinstance(name, str):
            return name
    return "value"


def _direction(study: optuna.Study) -> str:
    return "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with a finite value, in number order."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted((t for t in trials if _finite(t.value)), key=lambda t: t.number)


def _is_log(dist: BaseDistribution) -> bool:
    return isinstance(dist, FloatDistribution | IntDistribution) and dist.log


def _param_distributions(trials: Sequence[FrozenTrial]) -> dict[str, BaseDistribution]:
    """Every parameter seen in ``trials`` with its distribution, in first-seen order."""
    dists: dict[str, BaseDistribution] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            dists.setdefault(name, dist)
    return dists


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


# ------------------------------------------------------------------------ optimization history
@dataclass(frozen=True)
class HistoryInfo:
    """Objective value per completed trial, the best so far, and pruned trials' last values."""

    objective: str
    direction: str
    numbers: list[int]
    values: list[float]
    best_so_far: list[float]
    pruned_numbers: list[int]
    pruned_values: list[float]  # the last value a pruned trial reported
    notes: list[str] = field(default_factory=list)


def _history_info(study: optuna.Study) -> HistoryInfo:
    done = _completed(study)
    values = [float(t.value) for t in done]  # type: ignore[arg-type]
    pick = max if _direction(study) == "maximize" else min
    best: list[float] = []
    for v in values:
        best.append(v if not best else pick(best[-1], v))
    pruned = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        if t.intermediate_values
    ]
    pruned.sort(key=lambda t: t.number)
    notes = []
    if not done:
        notes.append("No trial has completed yet.")
    if pruned:
        notes.append(
            f"{len(pruned)} pruned trial(s) are shown in gray at the last value they reported; "
            "the best-so-far line uses completed trials only."
        )
    return HistoryInfo(
        objective=_objective(study),
        direction=_direction(study),
        numbers=[t.number for t in done],
        values=values,
        best_so_far=best,
        pruned_numbers=[t.number for t in pruned],
        pruned_values=[t.intermediate_values[max(t.intermediate_values)] for t in pruned],
        notes=notes,
    )


def _draw_history(info: HistoryInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=info.numbers,
            y=info.values,
            mode="markers",
            name=f"{info.objective} (completed)",
            marker={"size": 9, "color": "#1f77b4"},
            hovertemplate="trial %{x}<br>" + info.objective + " %{y:.4g}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=info.numbers,
            y=info.best_so_far,
            mode="lines",
            line={"shape": "hv", "color": "#d62728"},
            name="best so far",
        )
    )
    if info.pruned_numbers:
        fig.add_trace(
            go.Scatter(
                x=info.pruned_numbers,
                y=info.pruned_values,
                mode="markers",
                name="pruned (last value)",
                marker={"symbol": "x", "size": 9, "color": "#999999"},
                hovertemplate="trial %{x} pruned<br>last "
                + info.objective
                + " %{y:.4g}<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"Optimization history ({info.direction} {info.objective})",
        xaxis_title="trial",
        yaxis_title=info.objective,
    )
    return fig


# ----------------------------------------------------------------------------- learning curves
@dataclass(frozen=True)
class Curve:
    """The intermediate values one trial reported."""

    number: int
    state: str  # COMPLETE, PRUNED or RUNNING
    steps: list[int]
    values: list[float]
    pruned_at: int | None  # the step of the report after which the trial was pruned


@dataclass(frozen=True)
class CurvesInfo:
    """Learning curves of every trial that reported values; failed trials are only noted."""

    objective: str
    curves: list[Curve]
    failed: list[int]  # trial numbers left out
    notes: list[str] = field(default_factory=list)


def _curves_info(study: optuna.Study) -> CurvesInfo:
    curves: list[Curve] = []
    failed: list[int] = []
    reasons: list[str] = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state == TrialState.FAIL:
            failed.append(t.number)
            status = t.user_attrs.get("status")
            reasons.append(f"#{t.number}" + (f" ({status})" if status else ""))
            continue
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            continue
        points = sorted((s, v) for s, v in t.intermediate_values.items() if _finite(v))
        if not points:
            continue
        pruned_at = points[-1][0] if t.state == TrialState.PRUNED else None
        curves.append(
            Curve(
                number=t.number,
                state=t.state.name,
                steps=[s for s, _ in points],
                values=[v for _, v in points],
                pruned_at=pruned_at,
            )
        )
    notes = []
    if not curves:
        notes.append("No trial has reported a value yet.")
    if failed:
        notes.append(
            f"Failed trials are left out: {', '.join(reasons)}. A trial handed over by a dead "
            "or stopped worker appears here as failed and continues under a new number."
        )
    return CurvesInfo(objective=_objective(study), curves=curves, failed=failed, notes=notes)


def _draw_curves(info: CurvesInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    for c in info.curves:
        label = f"#{c.number} {c.state.lower()}"
        hover = f"trial {c.number}<br>step %{{x}}<br>{info.objective} %{{y:.4g}}<extra></extra>"
        if c.state == "PRUNED":
            fig.add_trace(
                go.Scatter(
                    x=c.steps,
                    y=c.values,
                    mode="lines",
                    name=label,
                    legendgroup=str(c.number),
                    line={"color": "#aaaaaa", "dash": "dash"},
                    hovertemplate=hover,
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=[c.pruned_at],
                    y=[c.values[-1]],
                    mode="markers",
                    name=f"#{c.number} pruned here",
                    legendgroup=str(c.number),
                    showlegend=False,
                    marker={"symbol": "x", "size": 10, "color": "#777777"},
                    hovertemplate=f"trial {c.number} pruned at step %{{x}}<extra></extra>",
                )
            )
        else:
            fig.add_trace(
                go.Scatter(
                    x=c.steps,
                    y=c.values,
                    mode="lines+markers",
                    name=label,
                    legendgroup=str(c.number),
                    line={"dash": "dot"} if c.state == "RUNNING" else {},
                    hovertemplate=hover,
                )
            )
    fig.update_layout(
        title=f"{info.objective.upper()} learning curves (gray dashed: pruned, x: where)",
        xaxis_title="training step",
        yaxis_title=info.objective,
    )
    return fig


# --------------------------------------------------------------------------- param importances
@dataclass(frozen=True)
class ImportanceInfo:
    """Parameter importances, most important first; empty with a note when not computable."""

    objective: str
    params: list[str]
    importances: list[float]
    notes: list[str] = field(default_factory=list)


def _importance_info(study: optuna.Study) -> ImportanceInfo:
    objective = _objective(study)
    done = _completed(study)
    if len(done) < 2:
        return ImportanceInfo(
            objective,
            [],
            [],
            [f"Importances need at least 2 completed trials; this study has {len(done)}."],
        )
    if not _param_distributions(done):
        return ImportanceInfo(objective, [], [], ["The completed trials have no parameters."])
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError) as e:  # too few distinct values, a degenerate fit
            return ImportanceInfo(objective, [], [], [f"Importances cannot be computed: {e}"])
    for w in caught:
        if issubclass(w.category, UserWarning) and not issubclass(
            w.category, optuna.exceptions.ExperimentalWarning
        ):
            notes.append(f"Optuna: {w.message}")
    if len(done) < ROUGH_IMPORTANCES:
        notes.append(
            f"Only {len(done)} completed trials: these importances are rough; they settle "
            f"after {ROUGH_IMPORTANCES} or more."
        )
    ranked = sorted(result.items(), key=lambda kv: kv[1], reverse=True)
    return ImportanceInfo(
        objective, [k for k, _ in ranked], [float(v) for _, v in ranked], list(dict.fromkeys(notes))
    )


def _draw_importances(info: ImportanceInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Bar(
            x=info.importances[::-1],
            y=info.params[::-1],
            orientation="h",
            text=[f"{v:.2f}" for v in info.importances[::-1]],
            textposition="outside",
            marker={"color": "#1f77b4"},
        )
    )
    fig.update_layout(
        title=f"Parameter importances for {info.objective} (Optuna's PED-ANOVA)",
        xaxis_title="importance",
        yaxis_title="parameter",
    )
    return fig


# ------------------------------------------------------------------------ parallel coordinates
@dataclass(frozen=True)
class Axis:
    """One parameter axis: numeric positions (log10 for log ranges, index for choices)."""

    name: str
    values: list[float]
    log: bool = False
    tickvals: list[float] | None = None
    ticktext: list[str] | None = None


def _axis(name: str, dist: BaseDistribution, raw: Sequence[Any]) -> Axis:
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        return Axis(
            name,
            [float(choices.index(v)) for v in raw],
            tickvals=[float(i) for i in range(len(choices))],
            ticktext=[str(c) for c in choices],
        )
    if _is_log(dist):
        assert isinstance(dist, FloatDistribution | IntDistribution)
        lo, hi = math.floor(math.log10(dist.low)), math.ceil(math.log10(dist.high))
        ticks = [float(e) for e in range(lo, hi + 1)]
        return Axis(
            name,
            [math.log10(v) for v in raw],
            log=True,
            tickvals=ticks,
            ticktext=[f"1e{int(e)}" for e in ticks],
        )
    return Axis(name, [float(v) for v in raw])


@dataclass(frozen=True)
class ParallelInfo:
    """Completed trials as lines through one axis per parameter and the objective."""

    objective: str
    direction: str
    numbers: list[int]
    values: list[float]
    axes: list[Axis]
    notes: list[str] = field(default_factory=list)


def _parallel_info(study: optuna.Study) -> ParallelInfo:
    done = _completed(study)
    dists = _param_distributions(done)
    # An axis needs a value on every line: conditional parameters go to the slice plot.
    shared = [n for n in dists if all(n in t.params for t in done)]
    partial = [n for n in dists if n not in shared]
    notes = []
    if not done:
        notes.append("No trial has completed yet.")
    if partial:
        notes.append(
            f"Set in only some trials, so left out here (see the slices): {', '.join(partial)}."
        )
    axes = [_axis(n, dists[n], [t.params[n] for t in done]) for n in shared]
    return ParallelInfo(
        objective=_objective(study),
        direction=_direction(study),
        numbers=[t.number for t in done],
        values=[float(t.value) for t in done],  # type: ignore[arg-type]
        axes=axes,
        notes=notes,
    )


def _draw_parallel(info: ParallelInfo) -> go.Figure:
    import plotly.graph_objects as go

    dims: list[dict[str, Any]] = []
    for a in info.axes:
        dim: dict[str, Any] = {"label": a.name + (" (log10)" if a.log else ""), "values": a.values}
        if a.tickvals is not None:
            dim |= {"tickvals": a.tickvals, "ticktext": a.ticktext}
        if a.ticktext is not None and not a.log:  # choices: give the end ones some room
            dim["range"] = [-0.2, len(a.ticktext) - 0.8]
        dims.append(dim)
    dims.append({"label": info.objective, "values": info.values})
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line={
                "color": info.values,
                "colorscale": "Viridis",
                "reversescale": info.direction == "minimize",  # the best trials stand out
                "showscale": True,
                "colorbar": {"title": {"text": info.objective}},
            },
        )
    )
    fig.update_layout(
        title=f"Parallel coordinates: completed trials, colored by {info.objective}",
        margin={"t": 130},  # room for the axis labels under the title
    )
    return fig


# ------------------------------------------------------------------------------------- slices
@dataclass(frozen=True)
class SliceParam:
    """The objective against one parameter, for the completed trials that set it."""

    name: str
    x: list[Any]  # parameter values (str for choices)
    y: list[float]
    numbers: list[int]
    log: bool = False
    categories: list[str] | None = None


@dataclass(frozen=True)
class SliceInfo:
    objective: str
    params: list[SliceParam]
    notes: list[str] = field(default_factory=list)


def _slice_info(study: optuna.Study) -> SliceInfo:
    done = _completed(study)
    params = []
    for name, dist in _param_distributions(done).items():
        having = [t for t in done if name in t.params]
        categories = None
        x: list[Any] = [t.params[name] for t in having]
        if isinstance(dist, CategoricalDistribution):
            categories = [str(c) for c in dist.choices]
            x = [str(v) for v in x]
        params.append(
            SliceParam(
                name=name,
                x=x,
                y=[float(t.value) for t in having],  # type: ignore[arg-type]
                numbers=[t.number for t in having],
                log=_is_log(dist),
                categories=categories,
            )
        )
    notes = [] if done else ["No trial has completed yet."]
    return SliceInfo(objective=_objective(study), params=params, notes=notes)


def _draw_slices(info: SliceInfo) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = max(1, len(info.params))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[p.name for p in info.params] or [""],
        shared_yaxes=True,
        horizontal_spacing=0.06,
        vertical_spacing=0.45 / rows,
    )
    for i, p in enumerate(info.params):
        row, col = divmod(i, cols)
        fig.add_trace(
            go.Scatter(
                x=p.x,
                y=p.y,
                mode="markers",
                name=p.name,
                showlegend=False,
                customdata=p.numbers,
                marker={
                    "color": p.numbers,
                    "colorscale": "Blues",
                    "size": 9,
                    "line": {"width": 1, "color": "#333333"},
                    "showscale": i == 0,
                    "colorbar": {"title": {"text": "trial"}},
                },
                hovertemplate="trial %{customdata}<br>"
                + p.name
                + " %{x}<br>"
                + info.objective
                + " %{y:.4g}<extra></extra>",
            ),
            row=row + 1,
            col=col + 1,
        )
        axis: dict[str, Any] = {"type": "log", "exponentformat": "e"} if p.log else {}
        if p.categories is not None:
            axis = {"type": "category", "categoryorder": "array", "categoryarray": p.categories}
        fig.update_xaxes(row=row + 1, col=col + 1, **axis)
        if col == 0:
            fig.update_yaxes(title_text=info.objective, row=row + 1, col=1)
    fig.update_layout(
        title=f"Slices: {info.objective} against each parameter (completed trials)",
        height=max(450, 330 * rows),
    )
    return fig


# ------------------------------------------------------------------------------------ contour
@dataclass(frozen=True)
class ContourInfo:
    """The objective over two parameters: trial points and an interpolated surface.

    ``x_grid``/``y_grid`` are in parameter units (evenly spaced in log10 for log ranges);
    ``z[i][j]`` is the surface at ``(x_grid[j], y_grid[i])``, empty when too few points.
    """

    objective: str
    x_name: str
    y_name: str
    x_log: bool
    y_log: bool
    x: list[float]
    y: list[float]
    values: list[float]
    numbers: list[int]
    x_grid: list[float]
    y_grid: list[float]
    z: list[list[float]]
    notes: list[str] = field(default_factory=list)


def _interpolate(
    px: np.ndarray, py: np.ndarray, pz: np.ndarray, gx: np.ndarray, gy: np.ndarray
) -> np.ndarray:
    """Inverse-distance-weighted surface (power 2) on the grid; exact at the points.

    Coordinates are already transformed and scaled to [0, 1]: the surface shows where trials
    were good without inventing structure a fitted model would.
    """
    gxx, gyy = np.meshgrid(gx, gy)  # [len(gy), len(gx)]
    d2 = (gxx[..., None] - px) ** 2 + (gyy[..., None] - py) ** 2
    w = 1.0 / np.maximum(d2, 1e-12)
    return np.asarray((w * pz).sum(-1) / w.sum(-1))


def _contour_info(
    study: optuna.Study, params: tuple[str, str] = CONTOUR_PARAMS
) -> ContourInfo | None:
    """``None`` when the two parameters were not both searched in this study."""
    x_name, y_name = params
    dists = _param_distributions(study.get_trials(deepcopy=False))
    xd, yd = dists.get(x_name), dists.get(y_name)
    numeric = (FloatDistribution, IntDistribution)
    if not (isinstance(xd, numeric) and isinstance(yd, numeric)):
        return None
    done = [t for t in _completed(study) if x_name in t.params and y_name in t.params]
    xs = [float(t.params[x_name]) for t in done]
    ys = [float(t.params[y_name]) for t in done]
    vs = [float(t.value) for t in done]  # type: ignore[arg-type]

    def scale(dist: FloatDistribution | IntDistribution) -> Callable[[np.ndarray], np.ndarray]:
        lo, hi = float(dist.low), float(dist.high)
        if dist.log:
            lo, hi = math.log10(lo), math.log10(hi)
        width = (hi - lo) or 1.0
        return lambda v: ((np.log10(v) if dist.log else v) - lo) / width

    def grid(dist: FloatDistribution | IntDistribution) -> np.ndarray:
        if dist.log:
            return np.logspace(math.log10(dist.low), math.log10(dist.high), GRID_POINTS)
        return np.linspace(float(dist.low), float(dist.high), GRID_POINTS)

    notes = []
    x_grid: list[float] = []
    y_grid: list[float] = []
    z: list[list[float]] = []
    distinct = {(x, y) for x, y in zip(xs, ys, strict=True)}
    if len(distinct) < 2:
        notes.append(
            f"The surface needs completed trials at 2 or more ({x_name}, {y_name}) points; "
            f"there are {len(distinct)}."
        )
    else:
        gx, gy = grid(xd), grid(yd)
        sx, sy = scale(xd), scale(yd)
        surface = _interpolate(sx(np.array(xs)), sy(np.array(ys)), np.array(vs), sx(gx), sy(gy))
        x_grid, y_grid, z = gx.tolist(), gy.tolist(), surface.tolist()
        notes.append(
            "The surface interpolates the completed trials (inverse distance weighting); "
            "trust it only near the points."
        )
    return ContourInfo(
        objective=_objective(study),
        x_name=x_name,
        y_name=y_name,
        x_log=xd.log,
        y_log=yd.log,
        x=xs,
        y=ys,
        values=vs,
        numbers=[t.number for t in done],
        x_grid=x_grid,
        y_grid=y_grid,
        z=z,
        notes=notes,
    )


def _draw_contour(info: ContourInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure()
    if info.z:
        fig.add_trace(
            go.Contour(
                x=info.x_grid,
                y=info.y_grid,
                z=info.z,
                colorscale="Viridis",
                reversescale=True,
                colorbar={"title": {"text": info.objective}},
                contours={"coloring": "heatmap"},
                hoverinfo="skip",
                name="interpolated",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=info.x,
            y=info.y,
            mode="markers+text",
            text=[f"#{n}" for n in info.numbers],
            textposition="top center",
            customdata=info.values,
            marker={"color": "white", "size": 10, "line": {"width": 2, "color": "black"}},
            name="completed trials",
            hovertemplate=info.x_name
            + " %{x:.3g}<br>"
            + info.y_name
            + " %{y:.3g}<br>"
            + info.objective
            + " %{customdata:.4g}<extra></extra>",
        )
    )
    for update, name, log in (
        (fig.update_xaxes, info.x_name, info.x_log),
        (fig.update_yaxes, info.y_name, info.y_log),
    ):
        update(title_text=name, type="log" if log else "linear", exponentformat="e")
    fig.update_layout(title=f"{info.objective} over {info.x_name} × {info.y_name}")
    return fig


# ------------------------------------------------------------------------------- index page
@dataclass(frozen=True)
class TrialRow:
    """One row of the best-trials table."""

    number: int
    state: str
    value: float
    fid: float | None
    kid: float | None
    params: dict[str, Any]
    status: str
    grid: str | None = None  # the sample grid's path inside the report


@dataclass(frozen=True)
class IndexInfo:
    """What the index page says about the study."""

    name: str
    objective: str
    direction: str
    states: dict[str, int]
    best: list[TrialRow]
    notes: list[str] = field(default_factory=list)


def _index_info(study: optuna.Study, top: int = BEST_ROWS) -> IndexInfo:
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    reverse = _direction(study) == "maximize"
    ranked = sorted(_completed(study), key=lambda t: (t.value, t.number), reverse=reverse)[:top]

    objective = _objective(study)

    def metric(t: FrozenTrial, key: str) -> float | None:
        """The worker's last ``fid``/``kid``; the objective value when it is that metric."""
        v = t.user_attrs.get(key)
        if isinstance(v, int | float):
            return float(v)
        return float(t.value) if objective == key and t.value is not None else None

    rows = [
        TrialRow(
            number=t.number,
            state=t.state.name,
            value=float(t.value),  # type: ignore[arg-type]
            fid=metric(t, "fid"),
            kid=metric(t, "kid"),
            params=dict(t.params),
            status=str(t.user_attrs.get("status", "")),
        )
        for t in ranked
    ]
    notes = [] if rows else ["No trial has completed yet: the table fills as trials finish."]
    return IndexInfo(
        name=study.study_name,
        objective=objective,
        direction=_direction(study),
        states=states,
        best=rows,
        notes=notes,
    )


def _grid_order(meta: optuna.artifacts.ArtifactMeta) -> tuple[int, str]:
    """Sort key of sample grids: ``grid_step_<zero-padded step>.png``, then ``grid_final.png``."""
    name = (meta.filename or "").lower()
    return (1 if "final" in name else 0, name)


def _latest_grid(
    trial: FrozenTrial, storage: optuna.storages.BaseStorage
) -> optuna.artifacts.ArtifactMeta | None:
    """The trial's latest sample grid: the one its ``grid`` attribute names, else its last PNG."""
    metas = optuna.artifacts.get_all_artifact_meta(trial, storage=storage)
    pngs = [
        m for m in metas if m.mimetype == "image/png" or (m.filename or "").lower().endswith(".png")
    ]
    named = [m for m in pngs if m.artifact_id == trial.user_attrs.get("grid")]
    if named:
        return named[0]
    return max(pngs, key=_grid_order) if pngs else None


def _attach_grids(
    info: IndexInfo,
    study: optuna.Study,
    out: Path,
    storage: optuna.storages.BaseStorage,
    artifacts: str,
) -> IndexInfo:
    """Copy each best trial's latest sample grid into ``out/grids``; missing ones are skipped."""
    from ganhpo.artifacts import open_artifact_store, read_artifact

    if not artifacts.startswith("s3://") and not Path(artifacts).is_dir():
        logger.warning(
            "artifact store %s not found: the report has no sample grids (pass --artifacts DIR)",
            artifacts,
        )
        return info
    store = open_artifact_store(artifacts)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows = []
    for row in info.best:
        meta = _latest_grid(by_number[row.number], storage)
        if meta is None:
            rows.append(row)
            continue
        rel = f"grids/trial-{row.number:05d}.png"
        try:
            _write(out / rel, read_artifact(store, meta.artifact_id))
        except (OSError, optuna.artifacts.exceptions.ArtifactNotFound) as e:
            logger.warning("trial %d: sample grid %s unreadable (%s)", row.number, meta.filename, e)
            rows.append(row)
            continue
        rows.append(dataclasses.replace(row, grid=rel))
    return dataclasses.replace(info, best=rows)


# ----------------------------------------------------------------------------------- the pages
@dataclass(frozen=True)
class Page:
    """One report page: its file, title, data function and drawing function."""

    filename: str
    title: str
    info: Callable[[optuna.Study], Any]  # returns None when the page does not apply
    draw: Callable[[Any], go.Figure]

    def drawable(self, info: Any) -> bool:
        """Whether ``info`` has anything to draw (else the page shows its notes only)."""
        if isinstance(info, HistoryInfo):
            return bool(info.numbers or info.pruned_numbers)
        if isinstance(info, CurvesInfo):
            return bool(info.curves)
        if isinstance(info, ImportanceInfo):
            return bool(info.params)
        if isinstance(info, ParallelInfo | ContourInfo):
            return bool(info.values)
        if isinstance(info, SliceInfo):
            return bool(info.params)
        return True


PAGES: tuple[Page, ...] = (
    Page("history.html", "Optimization history", _history_info, _draw_history),
    Page("curves.html", "Learning curves", _curves_info, _draw_curves),
    Page("importances.html", "Parameter importances", _importance_info, _draw_importances),
    Page("parallel.html", "Parallel coordinates", _parallel_info, _draw_parallel),
    Page("slices.html", "Slices", _slice_info, _draw_slices),
    Page("contour.html", "lr_g × lr_d contour", _contour_info, _draw_contour),
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin-top: 1em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; background: #fafafa; border-left: 3px solid #bbb; padding: 4px 8px; }
img.grid { width: 160px; image-rendering: pixelated; }
"""


def _html_page(title: str, study_name: str, body: str, *, plotly: bool) -> str:
    script = f'<script src="{PLOTLY_JS}" charset="utf-8"></script>\n' if plotly else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)} · {html.escape(study_name)}</title>\n"
        f"<style>{_CSS}</style>\n{script}</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _notes_html(notes: Sequence[str]) -> str:
    return "".join(f"<p class='note'>{html.escape(n)}</p>\n" for n in notes)


def _nav(pages: Sequence[tuple[str, str]]) -> str:
    links = "".join(f"<a href='{f}'>{html.escape(t)}</a>" for f, t in pages)
    return f"<nav><a href='index.html'>Index</a>{links}</nav>\n"


def _index_html(info: IndexInfo, pages: Sequence[tuple[str, str]]) -> str:
    states = ", ".join(f"{v} {k.lower()}" for k, v in sorted(info.states.items())) or "no trials"
    params = sorted({k for r in info.best for k in r.params})
    # FID and KID are always shown; another objective gets a column of its own.
    own = info.objective not in ("fid", "kid")
    # KID as stored: the MMD² itself, not ×10³ as papers print it.
    columns = ["trial", *([info.objective] if own else []), "FID", "KID (unscaled)", *params]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in [*columns, "status", "sample grid"])
    body_rows = []
    for r in info.best:
        cells = [
            f"<td class='num'>{r.number}</td>",
            *([f"<td class='num'>{_fmt(r.value)}</td>"] if own else []),
            f"<td class='num'>{'' if r.fid is None else _fmt(r.fid)}</td>",
            f"<td class='num'>{'' if r.kid is None else _fmt(r.kid)}</td>",
            *(
                f"<td>{html.escape(_fmt(r.params[p])) if p in r.params else ''}</td>"
                for p in params
            ),
            f"<td>{html.escape(r.status)}</td>",
            (
                f"<td><a href='{r.grid}'><img class='grid' src='{r.grid}' "
                f"alt='samples of trial {r.number}'></a></td>"
                if r.grid
                else "<td class='note'>no sample grid</td>"
            ),
        ]
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    links = "".join(f"<li><a href='{f}'>{html.escape(t)}</a></li>" for f, t in pages)
    table = (
        f"<table id='best'><thead><tr>{head}</tr></thead><tbody>\n"
        + "\n".join(body_rows)
        + "\n</tbody></table>"
        if info.best
        else ""
    )
    return _html_page(
        "Report",
        info.name,
        f"<h1>Study {html.escape(info.name)}</h1>\n"
        f"<p>{html.escape(info.direction)} {html.escape(info.objective)} · trials: "
        f"{html.escape(states)}</p>\n<ul>{links}</ul>\n"
        f"<h2>Best trials</h2>\n{_notes_html(info.notes)}{table}",
        plotly=False,
    )


def write_report(
    study: optuna.Study,
    out: str | Path,
    *,
    storage: optuna.storages.BaseStorage | None = None,
    artifacts: str | None = None,
    top: int = BEST_ROWS,
) -> Path:
    """Write the report pages into ``out`` and return the path of ``index.html``.

    Sample grids are copied from the artifact store ``artifacts`` (a location from
    :func:`ganhpo.artifacts.resolve_artifacts`) when ``storage`` and ``artifacts`` are given.
    """
    import plotly.offline

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write(out / PLOTLY_JS, plotly.offline.get_plotlyjs().encode())
    except OSError as e:
        raise ConfigError(
            f"cannot write the report to {out} ({e.strerror or e}); pass --out with a "
            "writable directory"
        ) from e

    written: list[tuple[str, str]] = []
    pages: list[tuple[Page, Any]] = []
    for page in PAGES:
        info = page.info(study)
        if info is not None:
            pages.append((page, info))
            written.append((page.filename, page.title))
    nav = _nav(written)
    for page, info in pages:
        body = f"{nav}<h1>{html.escape(page.title)}</h1>\n{_notes_html(info.notes)}"
        if page.drawable(info):
            fig = page.draw(info)
            fig.update_layout(template="plotly_white")
            body += fig.to_html(full_html=False, include_plotlyjs=False, div_id="plot")
        page_html = _html_page(page.title, study.study_name, body, plotly=True)
        _write(out / page.filename, page_html.encode())
        logger.info("wrote %s", out / page.filename)

    index = _index_info(study, top)
    if storage is not None and artifacts is not None:
        index = _attach_grids(index, study, out, storage, artifacts)
    path = out / "index.html"
    _write(path, _index_html(index, written).encode())
    logger.info("wrote %s", path)
    return path
