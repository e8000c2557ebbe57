"""The dashboard in a real browser: Debian's chromium driven by Playwright (never ``playwright install``).

Opens the page on the demo workspace (loaded and analysed on page open), visits every tab, checks that the
plots render, edits a schedule cell, runs a merge, downloads an export, and saves a screenshot of every tab to
docs/screenshots/ (the README shows them).
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SLOW = 600_000  # ms: the first demo build on a 2-core CPU, then merges and evaluation

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def page(app_url):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(app_url)
        yield page
        browser.close()


def wait_text(page, selector: str, text: str, timeout: int = SLOW) -> str:
    page.wait_for_function("([sel, text]) => { const e = document.querySelector(sel); "
                           "return e && e.innerText.includes(text); }", arg=[selector, text], timeout=timeout)
    return page.inner_text(selector)


def open_tab(page, label: str) -> None:
    """Inactive tabs are not in the page: click first."""
    page.get_by_role("tab", name=label, exact=True).click()


def edit_cell(page, row: int, col: int, text: str) -> None:
    """Double-click a cell of the schedule table, wait for its editor, type, and commit with Enter."""
    page.locator(f'#schedule-table [data-row="{row}"][data-col="{col}"]').dblclick()
    editor = page.locator('#schedule-table textarea[aria-label="Edit cell"]')
    editor.wait_for(state="visible")
    editor.fill(text)
    editor.press("Enter")


def plot_rendered(page, selector: str) -> None:
    page.wait_for_selector(f"{selector} .js-plotly-plot .main-svg", timeout=60_000)


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for button in page.locator(".toast-close").all():  # warnings already checked; keep the shot clear
        button.click()
    page.wait_for_timeout(800)  # let plotly finish its transitions
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_every_tab_in_chromium(page, tmp_path):
    # 1 · Models & probes: the page opens on the demo, loaded and analysed
    status = wait_text(page, "#models-status", "Demo workspace loaded")
    assert "Representations of" in status and "⚠" not in status
    assert "LlamaForCausalLM" in page.inner_text("#summary-table")
    assert "compatible" in page.inner_text("#verdict")
    assert "probe texts" in page.inner_text("#probes-summary")
    shoot(page, "1-models")

    # 2 · Samples: the UMAP scatter and the separability line
    open_tab(page, "2 · Samples")
    plot_rendered(page, "#samples-plot")
    plot_rendered(page, "#separability-plot")
    assert page.locator("#samples-plot .scatterlayer .point").count() > 10
    shoot(page, "2-samples")

    # 3 · Layer similarity: three heatmaps
    open_tab(page, "3 · Layer similarity")
    for selector in ("#similarity-heatmap", "#pair-heatmap", "#layer-heatmap"):
        plot_rendered(page, selector)
    page.get_by_label("linear CKA").check()
    page.locator("#compute-similarity").click()
    wait_text(page, "#similarity-status", "cka similarity to")
    plot_rendered(page, "#similarity-heatmap")
    shoot(page, "3-similarity")

    # 4 · Fusion schedule: edit a cell, the row is renormalised
    open_tab(page, "4 · Fusion schedule")
    plot_rendered(page, "#schedule-plot")

    def row_weights(index):
        texts = page.locator(f'#schedule-table [data-row="{index}"]').all_inner_texts()
        return [float(t.split("\n")[0]) for t in texts[1:]]

    before = row_weights(1)
    edit_cell(page, 1, 1, "0.3")
    wait_text(page, "#schedule-status", "Edit applied", timeout=60_000)
    after = row_weights(1)
    assert sum(after) == pytest.approx(1.0, abs=2e-3) and after[0] > before[0]
    # a bad cell is reported, and the table keeps what was typed
    edit_cell(page, 2, 2, "abc")
    wait_text(page, "#schedule-status", "is not a number", timeout=60_000)
    assert page.locator('#schedule-table [data-row="2"][data-col="2"]').inner_text().startswith("abc")
    edit_cell(page, 2, 2, "0.25")  # fixed (a value other than the last one the server saw)
    wait_text(page, "#schedule-status", "Edit applied", timeout=60_000)
    shoot(page, "4-schedule")

    # 5 · Merge & evaluate: RECALL and the average, scores, chart and generations
    open_tab(page, "5 · Merge & evaluate")
    page.locator("#run-merge").click()
    wait_text(page, "#merge-status", "evaluated in")
    plot_rendered(page, "#scores-plot")
    assert "recall" in page.inner_text("#scores-table")
    page.locator("#generate").click()
    wait_text(page, "#generate-status", "Generated for")
    assert "recall" in page.inner_text("#generations")
    shoot(page, "5-merge")

    # 6 · Export: build the folder and download the zip
    open_tab(page, "6 · Export")
    page.locator("#export").click()
    wait_text(page, "#export-status", "Exported")
    with page.expect_download() as download:
        page.locator("#download-zip").click()
    target = tmp_path / download.value.suggested_filename
    download.value.save_as(target)
    with zipfile.ZipFile(target) as archive:
        names = {Path(n).name for n in archive.namelist()}
    assert {"config.json", "README.md", "plan.json", "mergekit.yaml"} <= names
    assert any(n.endswith(".safetensors") for n in names)
    with page.expect_download() as plan:
        page.locator("#download-plan").click()
    assert plan.value.suggested_filename == "plan.json"
    shoot(page, "6-export")
