"""``ganhpo plot`` pages in a real headless Chromium: no console errors, every plot drawn.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); fails, never
skips, without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from browser import errors, screenshot

from ganhpo import plots
from ganhpo.cli import main

# Every plotly figure on the page has rendered its SVG and holds traces with data.
PLOTS_DRAWN = """
const plots = document.querySelectorAll('.js-plotly-plot');
if (plots.length === 0) return 0;
for (const p of plots) {
  if (p.querySelectorAll('.main-svg').length === 0) return -1;
  if (!p.data || p.data.length === 0) return -2;
  if (!p._fullLayout) return -3;
}
return plots.length;
"""


@pytest.fixture(scope="module")
def report(quick_study: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the real study."""
    out = tmp_path_factory.mktemp("browser") / "report"
    assert main(["plot", "quick", "--out", str(out), "--storage", quick_study["storage"]]) == 0
    return out


def best_has_grid(quick_study: dict[str, str]) -> bool:
    storage = optuna.storages.RDBStorage(quick_study["storage"])
    try:
        best = optuna.load_study(study_name="quick", storage=storage).best_trial
        metas = optuna.artifacts.get_all_artifact_meta(best, storage=storage)
        return any(m.mimetype == "image/png" for m in metas)
    finally:
        storage.engine.dispose()


def wait_drawn(driver: Any) -> int:
    from selenium.webdriver.support.ui import WebDriverWait

    drawn = WebDriverWait(driver, 30).until(
        lambda d: (n := d.execute_script(PLOTS_DRAWN)) > 0 and n
    )
    return int(drawn)


# The pages of a study with one objective: all but the Pareto front's.
SINGLE = [pg.filename for pg in plots.PAGES if pg.filename != "pareto.html"]


@pytest.mark.parametrize("page", SINGLE)
def test_page_draws_its_plot_without_console_errors(browser: Any, report: Path, page: str) -> None:
    browser.get((report / page).as_uri())
    assert wait_drawn(browser) == 1
    assert browser.execute_script("return typeof Plotly") == "object"  # the local plotly.min.js
    assert errors(browser) == []
    title = browser.execute_script(
        "return document.querySelector('.js-plotly-plot')._fullLayout.title.text"
    )
    assert "FID" in title or page == "timeline.html", title  # the objective named, as FID
    screenshot(browser, page.removesuffix(".html")).close()


def test_index_links_every_page_and_shows_the_grid(
    browser: Any, report: Path, quick_study: dict[str, str]
) -> None:
    browser.get((report / "index.html").as_uri())
    links = browser.execute_script(
        "return [...document.querySelectorAll('a')].map(a => a.getAttribute('href'))"
    )
    assert set(SINGLE) <= set(links) and "pareto.html" not in links
    rows = browser.execute_script("return document.querySelectorAll('#best tbody tr').length")
    assert rows >= 1
    images = browser.execute_script(
        "return [...document.images].map(i => [i.complete, i.naturalWidth])"
    )
    assert all(complete and width > 0 for complete, width in images)  # none broken
    first_row = "document.querySelector('#best tbody tr')"
    if best_has_grid(quick_study):  # the worker uploads sample grids: the best one is shown
        assert browser.execute_script(f"return {first_row}.querySelector('img') !== null")
    else:  # a study from before grids were uploaded: a note instead of a picture
        assert "no sample grid" in browser.execute_script(f"return {first_row}.textContent")
    assert errors(browser) == []
    screenshot(browser, "index").close()


def test_the_pareto_front_of_a_study_of_fid_and_size_is_drawn(
    browser: Any, pareto_study: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "report"
    assert main(["plot", "quick", "--out", str(out), "--storage", pareto_study["storage"]]) == 0
    study = optuna.load_study(study_name="quick", storage=pareto_study["storage"])
    browser.get((out / "pareto.html").as_uri())
    assert wait_drawn(browser) == 1
    assert errors(browser) == []
    layout = "document.querySelector('.js-plotly-plot')._fullLayout"
    title = browser.execute_script(f"return {layout}.title.text")
    assert title.startswith("Pareto front: FID against G parameters"), title
    # Optuna's figure: the front's trials in one trace (red, its colour bar "Best Trial"), the
    # others in another ("Trial").
    traces = browser.execute_script(
        "return document.querySelector('.js-plotly-plot').data"
        ".map(t => [t.marker.colorbar.title.text, t.x.length])"
    )
    on_front = dict(traces).get("Best Trial")
    assert on_front == len(study.best_trials), traces
    screenshot(browser, "pareto").close()
    # The other pages plot the FID of such a study too.
    for page in ("history.html", "slices.html"):
        browser.get((out / page).as_uri())
        assert wait_drawn(browser) == 1 and errors(browser) == [], page
        assert "FID" in browser.execute_script(f"return {layout}.title.text"), page
