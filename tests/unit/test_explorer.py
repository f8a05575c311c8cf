"""The explorer's data and the 2-D map, without a browser (the browser test is in test_cli.py)."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vtcc import export, knn
from vtcc.errors import ConfigError
from vtcc.explorer import MAX_POINTS, explorer_section, sample_positions, thumbnail


def page_data(section: str) -> dict:
    found = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', section, re.S)
    return json.loads(found.group(1))


def test_beyond_the_limit_the_map_is_a_sample_and_says_so():
    limit = 300  # MAX_POINTS is far larger: the same code with a smaller limit
    count = limit + 500
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (count, 1, 8, 8), dtype=np.uint8))
    clusters = rng.integers(0, 4, count)
    assert np.array_equal(sample_positions(MAX_POINTS, seed=0), np.arange(MAX_POINTS))  # all, up to it
    shown = sample_positions(count, seed=0, max_points=limit)
    assert len(shown) == limit and len(np.unique(shown)) == limit
    section = explorer_section(
        lambda index: images[index],
        np.arange(count),
        clusters,
        rng.random(count),
        shown,
        rng.normal(size=(len(shown), 2)),
        "t-SNE",
        4,
    )
    assert f"a random sample of {limit} of the {count} images" in section
    data = page_data(section)
    assert len(data["x"]) == len(data["thumb"]) == limit and data["total"] == count
    assert data["cluster"] == clusters[shown].tolist()
    assert data["sizes"] == np.bincount(clusters, minlength=4).tolist()  # sizes count every image
    assert data["label"] is None and 'id="colour-by"' not in section  # no labels, no label view
    first = Image.open(io.BytesIO(base64.b64decode(data["thumb"][0].split(",", 1)[1])))
    assert np.array_equal(np.asarray(first), images[shown[0], 0].numpy())  # the image itself, lossless


def test_thumbnails_are_small_and_colour_ones_are_jpeg():
    colour = np.random.default_rng(0).integers(0, 256, (3, 200, 100), dtype=np.uint8)
    uri = thumbnail(colour)
    assert uri.startswith("data:image/jpeg;base64,")
    picture = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert max(picture.size) == 48 and picture.size[0] < picture.size[1]  # aspect kept
    assert thumbnail(colour[:1, :10, :10]).startswith("data:image/png;base64,")


def test_the_map_method_follows_what_is_installed(no_extras):
    assert export.map_method(export.TSNE_LIMIT) == "t-SNE"
    assert export.map_method(export.TSNE_LIMIT + 1) == "PCA"
    points = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    coordinates, method = export.map_2d(points)
    assert method == "t-SNE" and coordinates.shape == (40, 2) and coordinates.dtype == np.float32


def test_a_folder_left_by_an_uninstall_is_not_an_install(tmp_path, monkeypatch, caplog, fresh_extras):
    """``pip uninstall umap-learn`` can leave ``umap/`` behind (a namespace package with nothing in
    it): the map falls back to t-SNE, saying why, instead of failing every report."""
    if importlib.util.find_spec("umap") is not None and importlib.util.find_spec("umap").origin:
        pytest.skip("umap-learn is installed: a package later on the path wins over an empty folder")
    (tmp_path / "umap" / "__pycache__").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "umap", raising=False)  # a real one, imported before: back after
    with caplog.at_level(logging.WARNING, logger="vtcc"):
        assert export.map_method(100) == "t-SNE"
        coordinates, method = export.map_2d(np.random.default_rng(0).normal(size=(30, 4)))
    assert method == "t-SNE" and coordinates.shape == (30, 2)
    assert caplog.text.count("umap at") == 1 and "no package in it" in caplog.text  # said once
    assert "pip install umap-learn" in caplog.text


def test_an_extra_whose_own_imports_fail_is_missing(tmp_path, monkeypatch, caplog, fresh_extras):
    (tmp_path / "faiss").mkdir()
    (tmp_path / "faiss" / "__init__.py").write_text("import a_library_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "faiss", raising=False)
    with caplog.at_level(logging.WARNING, logger="vtcc"):
        assert knn.choose_backend(10**6, warn=False) == "exact"
    assert "faiss is installed but does not import" in caplog.text and "vtcc[scale]" in caplog.text
    with pytest.raises(ConfigError, match=r"needs faiss-cpu"):
        knn.choose_backend(10, "faiss")


def test_parquet_needs_pyarrow_and_says_how(no_extras):
    with pytest.raises(ConfigError, match=r"pip install 'vtcc\[export\]'"):
        export.require_parquet()
