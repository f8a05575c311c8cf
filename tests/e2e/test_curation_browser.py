"""The explorer's curation in headless Chromium, from file://, end to end into vtcc-predict.

A scripted visit (tests/curation_driver.html) to a real run's report drags a box and a lasso,
merges the two largest clusters, renames the merged one, moves three images in from a gallery,
sets one aside, reloads the page (the decisions come back from localStorage), undoes and redoes,
and downloads curation.json; ``vtcc-predict curation=`` on the run's images then gives the merged,
named clusters and the moved images where the person put them. And a page of 100,000 images:
every point drawn, thumbnails loaded from sheets on demand, the page's size per 10,000 images.
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY, run_cli
from tests.fake_data import write_digit_folder
from vtcc.curation import read_curation
from vtcc.explorer import EXPLORER_STYLE, INLINE_THUMBNAILS, explorer_section, sample_positions
from vtcc.io.writer import Writer
from vtcc.report.page import ERROR_CHECK, STYLE
from vtcc.suggestions import suggest, suggestions_section

DRIVER = (Path(__file__).parents[1] / "curation_driver.html").read_text()
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu"]
PAGE_BYTES_PER_10K = 1_500_000  # the HTML of a page of 10,000 images, thumbnails in sheets beside it


def chromium_or_skip() -> str:
    """Headless Chromium, as tests/e2e/test_cli.py finds it (VTCC_REQUIRE_BROWSER=1: a missing one fails)."""
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if found is None:
        if os.environ.get("VTCC_REQUIRE_BROWSER"):
            pytest.fail("VTCC_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium installed (apt-get install chromium)")
    return found


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def folder_report(tmp_path_factory) -> Path:
    """A 3-epoch run with K=6 on 400 digits written as PNG class folders, and its report."""
    cwd = tmp_path_factory.mktemp("curation")
    write_digit_folder(cwd / "images", 400)
    settings = [item for item in TINY if not item.startswith(("report=", "trainer.max_epochs="))]
    result = run_cli(
        "train",
        *settings,
        "data=folder",
        "data.root=images",
        "data.in_chans=1",
        "data.mean=[0.3]",
        "data.std=[0.4]",
        "data.batch_size=64",
        "trainer.max_epochs=3",
        "num_clusters=6",
        "report=true",
        "hydra.run.dir=run",
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd


CURATED_ONLY = (
    "<style>body>section:not(#explorer):not(#suggestions),body>table,body>h2,body>p{display:none}</style>"
)


def visit(page: Path, folder: Path, screenshot: str | None = None) -> dict:
    """The scripted visit to a copy of ``page``; what the page showed (body[data-visit])."""
    chromium = chromium_or_skip()
    driven = folder / "driven.html"
    driven.write_text(page.read_text().replace("</body>", DRIVER + "</body>"))
    flags = [chromium, *FLAGS, "--virtual-time-budget=10000"]
    run = subprocess.run(
        [*flags, "--enable-logging=stderr", "--v=0", "--dump-dom", driven.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert 'data-errors="0"' in run.stdout and "Uncaught" not in run.stderr, run.stderr[-2000:]
    found = re.search(r'data-visit="([^"]*)"', run.stdout)
    assert found, run.stdout[-2000:]
    if screenshot:  # docs/curation.png: the curated explorer and the suggestions, for people
        shown = folder / "shown.html"
        shown.write_text(driven.read_text().replace("</head>", CURATED_ONLY + "</head>"))
        shot = [*flags, f"--screenshot={screenshot}", "--window-size=1100,1400", shown.as_uri()]
        subprocess.run(shot, capture_output=True, timeout=180)
    return json.loads(html.unescape(found.group(1)))


def test_a_person_curates_in_the_browser_and_vtcc_predict_applies_it(folder_report, tmp_path):
    cwd = folder_report
    page = cwd / "run/report/report.html"
    seen = visit(page, tmp_path, os.environ.get("VTCC_CURATION_SCREENSHOT"))
    # the selections: a box over the whole map takes every image (and opens no gallery), a small
    # lasso around the first image's point takes it
    assert seen["boxAll"] == 400 and seen["galleryAfterDrag"] is None
    assert seen["lassoHasFirst"] == 1 and 1 <= seen["lassoCount"] < 400
    # the edits, and the same page after a reload: the decisions kept; undo and redo
    assert seen["clustersBefore"] >= 4 and seen["clustersAfterMerge"] == seen["clustersBefore"] - 1
    assert seen["galleryC"] == str(seen["c"]) and seen["chosenInGallery"] == 3
    assert seen["editsBeforeReload"] == seen["editsAfterReload"] == seen["editsAtTheEnd"] == 4
    assert seen["nameAfterReload"] == "merged pair" and seen["movedNow"] == [seen["kept"]] * 3
    assert seen["asideMarked"] == 2 and seen["asideAfterUndo"] == 0
    # the file the download button offers
    assert seen["downloadName"] == "curation.json"
    (cwd / "curation.json").write_text(seen["file"])
    curation = read_curation(cwd / "curation.json")
    a, b, kept = seen["a"], seen["b"], seen["kept"]
    moved = {seen["paths"][str(i)] for i in seen["moved"]}
    aside = seen["paths"][str(seen["aside"])]
    assert curation.merges == (tuple(sorted((a, b))),) and curation.names == {kept: "merged pair"}
    assert curation.moves == dict.fromkeys(moved, kept) and curation.outliers == (aside,)
    assert curation.num_clusters == 6 and not curation.splits
    # vtcc-predict with it, on the run's images: the page's decisions, image by image
    checkpoint = cwd / "run/checkpoints/last.ckpt"
    common = [f"ckpt_path={checkpoint}", "input=images", "device=cpu"]
    plain = run_cli("predict", *common, "output=plain", cwd=cwd)
    assert plain.returncode == 0, plain.stderr[-2000:]
    result = run_cli(
        "predict", *common, "output=sorted", "curation=curation.json", "copy_images=link", cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-2000:]
    before = {row["path"]: int(row["cluster"]) for row in rows(cwd / "plain/clusters.csv")}
    after = rows(cwd / "sorted/clusters.csv")
    assert len(after) == 400 and {row["path"] for row in after} == set(before)
    for row in after:
        expected = kept if before[row["path"]] in (a, b) or row["path"] in moved else before[row["path"]]
        assert int(row["cluster"]) == expected, row
        assert row["name"] == ("merged pair" if expected == kept else "")
        assert row["outlier"] == str(row["path"] == aside)
    folders = {p.name: len(list(p.iterdir())) for p in (cwd / "sorted").iterdir() if p.is_dir()}
    in_kept = sum(int(row["cluster"]) == kept and row["path"] != aside for row in after)
    assert folders[f"cluster_{kept:03d}_merged_pair"] == in_kept and folders["outliers"] == 1
    assert not any(name.startswith(f"cluster_{max(a, b):03d}") for name in folders)


def synthetic_page(folder: Path, count: int) -> Path:
    """A report page of ``count`` images in 12 clusters (8 x 8 gray images, 16-D embeddings),
    its thumbnails in sheets beside it as a report writes them above the inline limit."""
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 12, count)
    embeddings = (rng.normal(size=(12, 16)) * 5)[clusters] + rng.normal(size=(count, 16))
    images = torch.from_numpy(rng.integers(0, 256, (count, 1, 8, 8), dtype=np.uint8))
    found = suggest(embeddings.astype(np.float32), clusters, 12)
    writer = Writer(folder)
    section = explorer_section(
        lambda index: images[index],
        np.arange(count),
        clusters,
        rng.random(count),
        sample_positions(count),
        embeddings[:, :2],
        "PCA",
        12,
        paths=[f"photos/{index:06d}.png" for index in range(count)],
        suggestions=found,
        sheets=(writer, folder),
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><style>{STYLE}{EXPLORER_STYLE}</style>"
        f"{ERROR_CHECK}</head><body>{section}{suggestions_section(found)}</body></html>"
    )
    return writer.write_text(folder / "report.html", page)


BIG_PAGE_CHECK = """<script>
addEventListener('load', () => {
  const api = window.vtccExplorer, canvas = document.getElementById('map');
  const box = canvas.getBoundingClientRect();
  const at = {clientX: box.left + api.px[7] * box.width / canvas.width,
              clientY: box.top + api.py[7] * box.height / canvas.height, bubbles: true};
  canvas.dispatchEvent(new MouseEvent('mousemove', at));
  const tip = document.getElementById('tip').querySelector('img');
  const sheet = new Image();
  sheet.onload = sheet.onerror = () => { document.body.dataset.check = JSON.stringify({
    points: canvas.dataset.points, drawMs: Number(canvas.dataset.drawMs),
    tipPoint: document.getElementById('tip').dataset.point,
    tipBackground: tip.style.backgroundImage, sheetWidth: sheet.naturalWidth}); };
  sheet.src = api.data.sheets.files[0];
});
</script>"""


def test_a_page_of_100000_images_draws_every_point_and_loads_thumbnails_on_demand(tmp_path):
    chromium = chromium_or_skip()
    count = 100_000
    page = synthetic_page(tmp_path, count)
    size = page.stat().st_size
    assert size <= PAGE_BYTES_PER_10K * count / 10_000, f"{size / count * 10_000 / 1e6:.2f} MB per 10,000"
    sheets = sorted((tmp_path / "thumbs").iterdir())
    assert len(sheets) == -(-count // 256) and count > INLINE_THUMBNAILS  # 256 thumbnails a sheet
    text = page.read_text()
    assert '"thumb":null' in text and "data:image/png" not in text and "data:image/jpeg" not in text
    driven = tmp_path / "driven.html"
    driven.write_text(text.replace("</body>", BIG_PAGE_CHECK + "</body>"))
    run = subprocess.run(
        [chromium, *FLAGS, "--virtual-time-budget=10000", "--dump-dom", driven.as_uri()],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 'data-errors="0"' in run.stdout, run.stdout[-2000:]
    check = json.loads(html.unescape(re.search(r'data-check="([^"]*)"', run.stdout).group(1)))
    assert check["points"] == str(count)  # every image is a point, none sampled away
    sheet = int(check["tipPoint"]) // 256  # the hovered image's thumbnail: a cell of its sheet
    assert f'url("thumbs/sheet_{sheet:05d}.jpg")' == check["tipBackground"]
    assert check["sheetWidth"] == 16 * 48  # the sheet itself decodes from file://
    print(f"page: {size / 1e6:.1f} MB for {count} images; one full draw took {check['drawMs']} ms")
