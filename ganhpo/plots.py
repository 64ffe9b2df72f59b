"""The figures of a study's report: Optuna draws them, ganhpo restyles them and adds notes.

Every figure Optuna has comes from ``optuna.visualization`` (history, intermediate values,
importances, parallel coordinates, slices, contour, timeline). ganhpo names the objective (FID,
KID), draws pruned trials gray and dashed, adds what Optuna does not draw (pruned trials on the
history, the FID sampling std as error bars on the learning curves) and notes on what a figure
leaves out. :mod:`ganhpo.report` writes the pages and the index with the sample grids.

Every figure comes in two halves, as in ``optuna/visualization/_*.py``: a pure data function
(``_history_info(study)``, ...) returning a plain dataclass of ganhpo's part, and a drawing
function (``_draw_history(study, info)``, ...) that asks Optuna for the figure and restyles it.
The data is tested without plotly or a browser; the pages are tested in a real headless browser.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna import visualization as vis
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from ganhpo.chains import retry_history
from ganhpo.components import STD_ATTRS

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["PAGES", "Page"]

CONTOUR_PARAMS = ("lr_g", "lr_d")  # the pair whose interplay matters most for GANs
ROUGH_IMPORTANCES = 10  # fewer completed trials than this: importances carry a warning
LABELS = {"fid": "FID", "kid": "KID"}  # the objective's name, for studies without metric names
PRUNED = {"color": "#999999", "dash": "dash"}  # pruned trials, on every figure that shows them
STATE_COLORS = {"COMPLETE": "#1f77b4", "PRUNED": "#999999", "FAIL": "#d62728", "RUNNING": "#2ca02c"}
LOOK = {"template": "plotly_white", "font_family": "system-ui, sans-serif", "title_x": 0.02}


# ------------------------------------------------------------------------------------ helpers
def _objective(study: optuna.Study) -> str:
    """The objective's name (``fid``/``kid``) from the stored spec, else ``value``."""
    from ganhpo.storage import study_attr
    from ganhpo.study import SPEC_ATTR

    spec = study_attr(study, SPEC_ATTR)
    if isinstance(spec, dict):
        name = spec.get("study", {}).get("objective")
        if isinstance(name, list) and name:  # a metric and a cost: the metric
            name = name[0]
        if isinstance(name, str):
            return name
    return "value"


def _label(study: optuna.Study) -> str:
    """What figures call the objective: Optuna's metric name, else FID/KID from the spec."""
    names = study.metric_names
    return names[0] if names else LABELS.get(_objective(study), _objective(study))


def _direction(study: optuna.Study) -> str:
    """The direction of the (first) objective."""
    first = study.directions[0]
    return "maximize" if first == optuna.study.StudyDirection.MAXIMIZE else "minimize"


def _metric(t: FrozenTrial) -> float | None:
    """A trial's first objective (FID or KID; a multi-objective study's metric)."""
    return t.values[0] if t.values else None


def _target(study: optuna.Study) -> Callable[[FrozenTrial], float] | None:
    """What Optuna's figures plot: the objective; of a study that weighs a cost against the
    metric, the metric (Optuna's figures take one objective; the Pareto page shows both)."""
    if len(study.directions) == 1:
        return None
    return lambda t: t.values[0]


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials with a finite value, in number order."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted((t for t in trials if _finite(_metric(t))), key=lambda t: t.number)


def _param_distributions(trials: Sequence[FrozenTrial]) -> dict[str, BaseDistribution]:
    """Every parameter seen in ``trials`` with its distribution, in first-seen order."""
    dists: dict[str, BaseDistribution] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            dists.setdefault(name, dist)
    return dists


def _stds(trial: FrozenTrial, objective: str) -> dict[int, float]:
    """The objective's sampling std by step (``fid_std``: ``{"80": 3.2}``); unusable entries
    are skipped; no attribute, or an objective without one: empty."""
    raw = trial.user_attrs.get(STD_ATTRS.get(objective, ""))
    stds: dict[int, float] = {}
    for step, std in raw.items() if isinstance(raw, dict) else ():
        try:
            number = int(step)
        except (TypeError, ValueError):
            continue
        if isinstance(std, int | float) and math.isfinite(std) and std >= 0:
            stds[number] = float(std)
    return stds


# ------------------------------------------------------------------------ the figures' data
@dataclass(frozen=True)
class HistoryInfo:
    """What ganhpo adds to Optuna's history: pruned trials at the last value they reported."""

    label: str
    direction: str
    completed: list[int]
    pruned_numbers: list[int]
    pruned_values: list[float]
    notes: list[str] = field(default_factory=list)

    @property
    def drawable(self) -> bool:
        return bool(self.completed or self.pruned_numbers)


def _history_info(study: optuna.Study) -> HistoryInfo:
    done = _completed(study)
    pruned = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        if t.intermediate_values
    ]
    pruned.sort(key=lambda t: t.number)
    notes = [] if done else ["No trial has completed yet."]
    if pruned:
        notes.append(
            f"{len(pruned)} pruned trial(s) are shown in gray at the last value they reported; "
            "the best-so-far line uses completed trials only."
        )
    return HistoryInfo(
        label=_label(study),
        direction=_direction(study),
        completed=[t.number for t in done],
        pruned_numbers=[t.number for t in pruned],
        pruned_values=[t.intermediate_values[max(t.intermediate_values)] for t in pruned],
        notes=notes,
    )


@dataclass(frozen=True)
class Curve:
    """The intermediate values one trial reported, with their sampling std where recorded."""

    number: int
    state: str  # COMPLETE, PRUNED or RUNNING
    steps: list[int]
    values: list[float]
    stds: list[float | None]  # per step; None where the trial recorded none
    pruned_at: int | None  # the step of the report after which the trial was pruned
    lineage: str | None = None  # a PBT member's: whose state its curve continues


@dataclass(frozen=True)
class CurvesInfo:
    """Learning curves of every trial that reported values; failed trials are only noted."""

    label: str
    curves: list[Curve]
    failed: list[int]  # trial numbers left out
    notes: list[str] = field(default_factory=list)

    @property
    def drawable(self) -> bool:
        return bool(self.curves)


def _curves_info(study: optuna.Study) -> CurvesInfo:
    objective, label = _objective(study), _label(study)
    curves: list[Curve] = []
    reasons: dict[int, str] = {}
    shown = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    # A trial that goes on as another (a PBT interval, a handed-over trial) is drawn as that
    # one, whose curve starts with it: one line per chain, as it ended or runs now.
    continued = {history[-1] for t in trials for history in [retry_history(t)] if history}
    members = 0
    for t in trials:
        if t.state == TrialState.FAIL:
            status = t.user_attrs.get("status")
            reasons[t.number] = f"#{t.number}" + (f" ({status})" if status else "")
        points = sorted((s, v) for s, v in t.intermediate_values.items() if _finite(v))
        if t.state not in shown or not points or t.number in continued:
            continue
        pbt = t.user_attrs.get("pbt")
        lineage = None
        if isinstance(pbt, dict):
            members += 1
            parent = pbt.get("parent")
            lineage = f"member {pbt.get('member')}" + (
                f"; state of trial {parent['trial']} at step {parent['step']}"
                if isinstance(parent, dict)
                else ""
            )
        stds = _stds(t, objective)
        curves.append(
            Curve(
                number=t.number,
                state=t.state.name,
                steps=[s for s, _ in points],
                values=[v for _, v in points],
                stds=[stds.get(s) for s, _ in points],
                pruned_at=points[-1][0] if t.state == TrialState.PRUNED else None,
                lineage=lineage,
            )
        )
    notes = [] if curves else ["No trial has reported a value yet."]
    if members:
        notes.append(
            "Population-based training: one line per member, its latest trial. A member that "
            "took a better member's state continues that member's curve from then on (hover: "
            "whose state, at which step); its own earlier curve is in its predecessors' trials."
        )
    if any(s is not None for c in curves for s in c.stds):
        notes.append(
            f"Error bars: ± one standard deviation of {label} over the sample draws it was "
            "measured on, where the trial recorded it."
        )
    if reasons:
        notes.append(
            f"Failed trials are left out: {', '.join(reasons.values())}. A trial handed over by "
            "a dead or stopped worker appears here as failed and continues under a new number."
        )
    return CurvesInfo(label, curves, failed=list(reasons), notes=notes)


@dataclass(frozen=True)
class ImportanceInfo:
    """Parameter importances, most important first; empty with a note when not computable."""

    label: str
    params: list[str]
    importances: list[float]
    notes: list[str] = field(default_factory=list)

    @property
    def drawable(self) -> bool:
        return bool(self.params)


def _importance_info(study: optuna.Study) -> ImportanceInfo:
    label, done = _label(study), _completed(study)
    if len(done) < 2:
        note = f"Importances need at least 2 completed trials; this study has {len(done)}."
        return ImportanceInfo(label, [], [], [note])
    if not _param_distributions(done):
        return ImportanceInfo(label, [], [], ["The completed trials have no parameters."])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = optuna.importance.get_param_importances(study, target=_target(study))
        except (ValueError, RuntimeError) as e:  # too few distinct values, a degenerate fit
            return ImportanceInfo(label, [], [], [f"Importances cannot be computed: {e}"])
    experimental = optuna.exceptions.ExperimentalWarning
    notes = [
        f"Optuna: {w.message}"
        for w in caught
        if issubclass(w.category, UserWarning) and not issubclass(w.category, experimental)
    ]
    if len(done) < ROUGH_IMPORTANCES:
        notes.append(
            f"Only {len(done)} completed trials: these importances are rough; they settle "
            f"after {ROUGH_IMPORTANCES} or more."
        )
    ranked = sorted(result.items(), key=lambda kv: kv[1], reverse=True)
    return ImportanceInfo(
        label, [k for k, _ in ranked], [float(v) for _, v in ranked], list(dict.fromkeys(notes))
    )


@dataclass(frozen=True)
class SearchInfo:
    """Completed trials over the searched parameters (parallel coordinates, slices).

    ``params`` maps each parameter, in first-seen order, to the completed trials that set it.
    """

    label: str
    numbers: list[int]
    params: dict[str, list[int]]
    notes: list[str] = field(default_factory=list)

    @property
    def conditional(self) -> list[str]:
        """Parameters set in only some completed trials."""
        return [n for n, having in self.params.items() if len(having) < len(self.numbers)]

    @property
    def drawable(self) -> bool:
        return bool(self.numbers and self.params)


def _slice_info(study: optuna.Study) -> SearchInfo:
    done = _completed(study)
    params = {n: [t.number for t in done if n in t.params] for n in _param_distributions(done)}
    notes = [] if done else ["No trial has completed yet."]
    return SearchInfo(_label(study), [t.number for t in done], params, notes)


def _parallel_info(study: optuna.Study) -> SearchInfo:
    info = _slice_info(study)
    if info.conditional:
        info.notes.append(
            f"Set in only some trials: {', '.join(info.conditional)}; the other trials cross "
            "that axis at its lowest mark, None."
        )
    return info


@dataclass(frozen=True)
class ContourInfo:
    """The completed trials that set both parameters of the contour."""

    label: str
    x_name: str
    y_name: str
    numbers: list[int]
    distinct: tuple[int, int]  # how many distinct values of x and of y they have
    notes: list[str] = field(default_factory=list)

    @property
    def drawable(self) -> bool:
        return min(self.distinct) >= 2


def _contour_info(
    study: optuna.Study, params: tuple[str, str] = CONTOUR_PARAMS
) -> ContourInfo | None:
    """``None`` when the two parameters were not both searched in this study."""
    x_name, y_name = params
    dists = _param_distributions(study.get_trials(deepcopy=False))
    if not all(isinstance(dists.get(n), FloatDistribution | IntDistribution) for n in params):
        return None
    done = [t for t in _completed(study) if x_name in t.params and y_name in t.params]
    distinct = (len({t.params[x_name] for t in done}), len({t.params[y_name] for t in done}))
    info = ContourInfo(_label(study), x_name, y_name, [t.number for t in done], distinct)
    info.notes.append(
        "The surface interpolates the completed trials (black dots); trust it only near them."
        if info.drawable
        else f"The surface needs completed trials at 2 or more values of both {x_name} and "
        f"{y_name}; there are {distinct[0]} and {distinct[1]}."
    )
    return info


@dataclass(frozen=True)
class TimelineInfo:
    """How many trials are in each state."""

    states: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def drawable(self) -> bool:
        return bool(self.states)


def _timeline_info(study: optuna.Study) -> TimelineInfo:
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    notes = [] if states else ["The study has no trials yet."]
    if states.get("FAIL"):
        notes.append(
            "A failed trial may be one handed over by a dead or stopped worker: it continues "
            "under a new number."
        )
    return TimelineInfo(states, notes)


# ---------------------------------------------------------------- Optuna's figures, restyled
def _style(
    fig: go.Figure, title: str, x: str | None = None, y: str | None = None, **layout: Any
) -> go.Figure:
    """Lay ganhpo's look, a title and the axes' titles over one of Optuna's figures."""
    fig.update_layout(LOOK, title_text=title, **layout)
    if x is not None:
        fig.update_layout(xaxis_title=x, yaxis_title=y)
    return fig


def _draw_history(study: optuna.Study, info: HistoryInfo) -> go.Figure:
    import plotly.graph_objects as go

    label = info.label
    fig = vis.plot_optimization_history(study, target=_target(study), target_name=label)
    names = {label: f"{label} (completed)", "Best Value": "best so far"}
    fig.for_each_trace(lambda t: t.update(name=names.get(t.name, t.name)))
    if info.pruned_numbers:
        fig.add_trace(
            go.Scatter(
                x=info.pruned_numbers,
                y=info.pruned_values,
                mode="markers",
                name="pruned (last value)",
                marker={"symbol": "x", "size": 9, "color": PRUNED["color"]},
                hovertemplate=f"trial %{{x}} pruned<br>last {label} %{{y:.4g}}<extra></extra>",
            )
        )
    return _style(fig, f"Optimization history ({info.direction} {label})", "trial", label)


def _draw_curves(study: optuna.Study, info: CurvesInfo) -> go.Figure:
    import plotly.graph_objects as go

    label = info.label
    fig = vis.plot_intermediate_values(study)
    curves = {f"Trial{c.number}": c for c in info.curves}
    fig.data = tuple(t for t in fig.data if t.name in curves)  # failed, non-finite: left out
    for trace in fig.data:
        c = curves[trace.name]
        bars = [dict(zip(c.steps, c.stds, strict=True)).get(s) for s in trace.x]
        trace.update(
            name=f"#{c.number} {c.state.lower()}",
            legendgroup=str(c.number),
            text=["" if s is None else f" ± {s:.3g}" for s in bars],
            hovertemplate=f"trial {c.number}"
            + (f" ({c.lineage})" if c.lineage else "")
            + f"<br>step %{{x}}<br>{label} %{{y:.4g}}%{{text}}<extra></extra>",
        )
        if any(s is not None for s in bars):
            trace.update(error_y={"type": "data", "array": bars, "visible": True, "width": 3})
        if c.state == "PRUNED":
            trace.update(line=PRUNED, marker_color=PRUNED["color"], error_y_color=PRUNED["color"])
            fig.add_trace(
                go.Scatter(
                    x=[c.pruned_at],
                    y=[c.values[-1]],
                    mode="markers",
                    legendgroup=str(c.number),
                    showlegend=False,
                    marker={"symbol": "x", "size": 10, "color": "#777777"},
                    hovertemplate=f"trial {c.number} pruned at step %{{x}}<extra></extra>",
                )
            )
        elif c.state == "RUNNING":
            trace.update(line_dash="dot")
    title = f"{label} learning curves (gray dashed: pruned, x: where)"
    return _style(fig, title, "training step", label, showlegend=True)


class _Computed(optuna.importance.BaseImportanceEvaluator):
    """Hands Optuna's plot the importances already computed, instead of fitting them again."""

    def __init__(self, info: ImportanceInfo) -> None:
        self.importances = dict(zip(info.params, info.importances, strict=True))

    def evaluate(self, study: optuna.Study, params: Any = None, *, target: Any = None) -> Any:
        return self.importances


def _draw_importances(study: optuna.Study, info: ImportanceInfo) -> go.Figure:
    fig = vis.plot_param_importances(
        study, evaluator=_Computed(info), target=_target(study), target_name=info.label
    )
    fig.update_traces(marker_color=STATE_COLORS["COMPLETE"])
    title = f"Parameter importances for {info.label} (Optuna's PED-ANOVA)"
    return _style(fig, title, "importance", "parameter")


def _draw_parallel(study: optuna.Study, info: SearchInfo) -> go.Figure:
    fig = vis.plot_parallel_coordinate(study, target=_target(study), target_name=info.label)
    title = f"Parallel coordinates: completed trials, colored by {info.label}"
    # Optuna colours lines from white (worst) to dark blue (best): the worst trial vanished on
    # a white page. Darken every colour, the colour bar's scale alike, so each line shows.
    for trace in fig.data:
        if trace.mode == "lines" and isinstance(trace.line.color, str):
            trace.line.update(color=_darker(trace.line.color), width=2)
        elif trace.mode == "markers" and trace.marker.colorscale:
            trace.marker.colorscale = [(at, _darker(c)) for at, c in trace.marker.colorscale]
    return _style(fig, title)


def _darker(rgb: str, factor: float = 0.72) -> str:
    """``rgb(r, g, b)`` scaled toward black by ``factor`` (white becomes a mid gray-blue)."""
    values = [float(v) for v in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")]
    r, g, b = (round(v * factor) for v in values)
    return f"rgb({r},{g},{b})"


def _draw_slices(study: optuna.Study, info: SearchInfo) -> go.Figure:
    fig = vis.plot_slice(study, target=_target(study), target_name=info.label)
    fig.update_traces(marker_size=9)
    fig.update_xaxes(selector={"type": "log"}, dtick="D2", tickformat=".0e")  # short, apart
    return _style(fig, f"Slices: {info.label} against each parameter (completed trials)")


def _draw_contour(study: optuna.Study, info: ContourInfo) -> go.Figure:
    fig = vis.plot_contour(
        study, params=[info.x_name, info.y_name], target=_target(study), target_name=info.label
    )
    fig.update_traces(selector={"type": "scatter"}, marker_size=10)
    title = f"{info.label} over {info.x_name} × {info.y_name}"
    return _style(fig, title)


def _draw_timeline(study: optuna.Study, info: TimelineInfo) -> go.Figure:
    fig = vis.plot_timeline(study)
    fig.for_each_trace(
        lambda t: t.update(
            marker_color=STATE_COLORS.get(t.name, t.marker.color), name=t.name.lower()
        )
    )
    return _style(fig, "Timeline: when each trial ran, by state", "time", "trial")


@dataclass(frozen=True)
class ParetoInfo:
    """A study that weighs a cost against its metric: the trade-offs no trial beats."""

    labels: list[str]  # the metric's and the cost's
    front: list[int]  # trial numbers on the Pareto front, best metric first
    completed: int
    notes: list[str] = field(default_factory=list)

    @property
    def drawable(self) -> bool:
        return bool(self.front)


def _pareto_info(study: optuna.Study) -> ParetoInfo | None:
    if len(study.directions) == 1:
        return None  # one objective: no trade-off to show
    names = study.metric_names or [_label(study), "cost"]
    done = _completed(study)
    from ganhpo.study import pareto_front

    front = pareto_front(study)
    notes = [] if done else ["No trial has completed yet."]
    if front:
        notes.append(
            f"{len(front)} of {len(done)} completed trials are on the front: no other trial "
            f"is better on both {names[0]} and {names[1]}. 'ganhpo study best --fid-within "
            "PCT' takes the cheapest within PCT % of the best."
        )
    return ParetoInfo(list(names), [t.number for t in front], len(done), notes)


def _draw_pareto(study: optuna.Study, info: ParetoInfo) -> go.Figure:
    fig = vis.plot_pareto_front(study, target_names=info.labels)
    fig.update_traces(marker_size=10)
    x, y = info.labels
    return _style(fig, f"Pareto front: {x} against {y} (red: the front)", x, y)


# ----------------------------------------------------------------------------------- the pages
@dataclass(frozen=True)
class Page:
    """One report page: its file, title, data function and drawing function.

    ``info(study)`` returns None when the page does not apply; an info that is not ``drawable``
    gives a page of notes only.
    """

    filename: str
    title: str
    info: Callable[[optuna.Study], Any]
    draw: Callable[[optuna.Study, Any], go.Figure]


PAGES: tuple[Page, ...] = (
    Page("history.html", "Optimization history", _history_info, _draw_history),
    Page("pareto.html", "Pareto front", _pareto_info, _draw_pareto),
    Page("curves.html", "Learning curves", _curves_info, _draw_curves),
    Page("importances.html", "Parameter importances", _importance_info, _draw_importances),
    Page("parallel.html", "Parallel coordinates", _parallel_info, _draw_parallel),
    Page("slices.html", "Slices", _slice_info, _draw_slices),
    Page("contour.html", "lr_g × lr_d contour", _contour_info, _draw_contour),
    Page("timeline.html", "Timeline", _timeline_info, _draw_timeline),
)
