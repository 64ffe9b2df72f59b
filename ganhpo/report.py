"""The offline HTML report of a study: one page per figure of :mod:`ganhpo.plots`, and an index.

The index is ganhpo's own page (Optuna has none like it): the study's states, the best trials
with their FID, KID and parameters, and each one's latest sample grid copied from the artifact
store. The report is a folder of static pages that open offline: plotly.js is written into it
once (``plotly.min.js``) and every page loads it from there, never from a CDN.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from ganhpo._files import atomic_write_bytes
from ganhpo.errors import ConfigError
from ganhpo.plots import PAGES, _completed, _direction, _metric, _objective, _timeline_info
from ganhpo.study import ensembles_of

__all__ = ["write_report"]

logger = logging.getLogger(__name__)

PLOTLY_JS = "plotly.min.js"  # written once into the report folder; every page loads it
BEST_ROWS = 10  # trials in the index page's table


def _write(path: Path, data: bytes) -> None:
    """Write atomically, readable by all like any file a browser or web server may serve."""
    atomic_write_bytes(path, data)
    path.chmod(0o644)  # the temporary file it was renamed from was private (0600)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


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
    test_fid: float | None = None  # 'ganhpo study test': on the test split, fresh latents
    test_fid_std: float | None = None


@dataclass(frozen=True)
class IndexInfo:
    """What the index page says about the study."""

    name: str
    objective: str
    direction: str
    states: dict[str, int]
    best: list[TrialRow]
    notes: list[str] = field(default_factory=list)
    ensembles: list[dict[str, Any]] = field(default_factory=list)  # 'ganhpo ensemble's


def _index_info(study: optuna.Study, top: int = BEST_ROWS) -> IndexInfo:
    reverse = _direction(study) == "maximize"
    ranked = sorted(_completed(study), key=lambda t: (_metric(t), t.number), reverse=reverse)[:top]

    objective = _objective(study)

    def metric(t: FrozenTrial, key: str) -> float | None:
        """The worker's last ``fid``/``kid``; the objective value when it is that metric."""
        v = t.user_attrs.get(key)
        if isinstance(v, int | float):
            return float(v)
        value = _metric(t)
        return float(value) if objective == key and value is not None else None

    rows = [
        TrialRow(
            number=t.number,
            state=t.state.name,
            value=float(_metric(t)),  # type: ignore[arg-type]
            fid=metric(t, "fid"),
            kid=metric(t, "kid"),
            params=dict(t.params),
            status=str(t.user_attrs.get("status", "")),
            test_fid=_number(t.user_attrs.get("test_fid")),
            test_fid_std=_number(t.user_attrs.get("test_fid_std")),
        )
        for t in ranked
    ]
    notes = [] if rows else ["No trial has completed yet: the table fills as trials finish."]
    return IndexInfo(
        name=study.study_name,
        objective=objective,
        direction=_direction(study),
        states=_timeline_info(study).states,
        best=rows,
        notes=notes,
        ensembles=ensembles_of(study),
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _fid_cell(fid: float | None, std: float | None) -> str:
    text = "" if fid is None else _fmt(fid) + ("" if std is None else f" ± {std:.2g}")
    return f"<td class='num'>{html.escape(text)}</td>"


def _ensembles_html(ensembles: Sequence[dict[str, Any]]) -> str:
    """The ensembles 'ganhpo ensemble' recorded: members, weights, test FID beside the best
    member's alone."""
    if not ensembles:
        return ""
    head = "".join(
        f"<th>{h}</th>" for h in ["trials", "weights", "test FID", "best member alone", "artifact"]
    )
    rows = []
    for e in ensembles:
        weights = ", ".join(f"{w:.2f}" for w in e.get("weights", []))
        best = f"trial {e.get('best_member')}: " + _fmt(e.get("best_member_test_fid"))
        rows.append(
            "<tr>"
            f"<td>{html.escape(', '.join(str(n) for n in e.get('trials', [])))}</td>"
            f"<td>{html.escape(str(e.get('weighing', '')))} {html.escape(weights)}</td>"
            + _fid_cell(_number(e.get("test_fid")), _number(e.get("test_fid_std")))
            + f"<td>{html.escape(best)}</td><td>{html.escape(str(e.get('artifact', '')))}</td>"
            "</tr>"
        )
    return (
        "<h2>Ensembles</h2>\n<p>Mixtures of the best generators ('ganhpo ensemble'), scored on "
        "the test split.</p>\n<table id='ensembles'><thead><tr>"
        + head
        + "</tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>"
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


def _index_html(info: IndexInfo, pages: Sequence[tuple[str, str]]) -> str:
    states = ", ".join(f"{v} {k.lower()}" for k, v in sorted(info.states.items())) or "no trials"
    params = sorted({k for r in info.best for k in r.params})
    # FID and KID are always shown; another objective gets a column of its own.
    own = info.objective not in ("fid", "kid")
    # KID as stored: the MMD² itself, not ×10³ as papers print it.
    tested = any(r.test_fid is not None for r in info.best)  # after 'ganhpo study test'
    columns = [
        "trial",
        *([info.objective] if own else []),
        "FID",
        *(["test FID"] if tested else []),
        "KID (unscaled)",
        *params,
    ]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in [*columns, "status", "sample grid"])
    body_rows = []
    for r in info.best:
        cells = [
            f"<td class='num'>{r.number}</td>",
            *([f"<td class='num'>{_fmt(r.value)}</td>"] if own else []),
            f"<td class='num'>{'' if r.fid is None else _fmt(r.fid)}</td>",
            *([_fid_cell(r.test_fid, r.test_fid_std)] if tested else []),
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
        f"<h2>Best trials</h2>\n{_notes_html(info.notes)}{table}\n"
        + _ensembles_html(info.ensembles),
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
    :func:`ganhpo.artifacts.resolve_artifacts`) when ``storage`` and ``artifacts`` are given
    and a trial has completed.
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

    pages = [(page, info) for page in PAGES if (info := page.info(study)) is not None]
    written = [(page.filename, page.title) for page, _ in pages]
    links = "".join(f"<a href='{f}'>{html.escape(t)}</a>" for f, t in written)
    nav = f"<nav><a href='index.html'>Index</a>{links}</nav>\n"
    for page, info in pages:
        body = f"{nav}<h1>{html.escape(page.title)}</h1>\n{_notes_html(info.notes)}"
        if info.drawable:
            fig = page.draw(study, info)
            body += fig.to_html(full_html=False, include_plotlyjs=False, div_id="plot")
        page_html = _html_page(page.title, study.study_name, body, plotly=True)
        _write(out / page.filename, page_html.encode())
        logger.info("wrote %s", out / page.filename)

    index = _index_info(study, top)
    if storage is not None and artifacts is not None and index.best:  # no trial done: no grids
        index = _attach_grids(index, study, out, storage, artifacts)
    path = out / "index.html"
    _write(path, _index_html(index, written).encode())
    logger.info("wrote %s", path)
    return path
