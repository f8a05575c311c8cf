"""The report's explorer: the 2-D map of the embeddings as an interactive picture, in the page.

Everything is inlined (the points, the scripts, and up to :data:`INLINE_THUMBNAILS` thumbnails as
data URIs), so ``report.html`` works from ``file://`` with no server and no network; above that,
the thumbnails are JPEG sheets in ``thumbs/`` beside the page, loaded only when an image is shown.
The map (a canvas) draws one point per image up to :data:`MAX_POINTS` (a random sample beyond,
said on the page); hovering shows the image under the pointer, clicking a point or a cluster opens
that cluster's gallery, least confident images first (where mistakes sit). Cluster sizes and the
label-free quality line sit beside the map; with labels, the points can be coloured by label and
each gallery lists its labels.

The explorer is also where the clusters are fixed (``curation.js``): select points (box or lasso
on the map, a click in a gallery), merge, split (a selection, or into 2 or 3 sub-clusters of the
run's embedding, :mod:`vtcc.suggestions`), move, name, set aside, undo; the page keeps the edits
in the browser (localStorage) and downloads them as ``curation.json`` (:mod:`vtcc.curation`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vtcc.io.writer import Writer
from vtcc.suggestions import Suggestions

MAX_POINTS = 200_000
INLINE_THUMBNAILS = 2_000  # above: thumbnail sheets beside the page, loaded on demand
THUMBNAIL = 48  # the longest side of a thumbnail, px
SHEET_SIDE = 16  # thumbnails per row and column of a sheet
_SCRIPT = Path(__file__).with_name("explorer.js")
_CURATION_SCRIPT = Path(__file__).with_name("curation.js")


def thumbnail(image: np.ndarray, side: int = THUMBNAIL) -> str:
    """A uint8 ``(C, H, W)`` image as a data URI: PNG for gray, JPEG for colour, at most ``side`` px."""
    array = image.transpose(1, 2, 0)
    picture = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    if max(picture.size) > side:
        picture.thumbnail((side, side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    kind = "png" if picture.mode == "L" else "jpeg"
    picture.save(buffer, format=kind.upper(), **({"quality": 85} if kind == "jpeg" else {}))
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def sample_positions(count: int, seed: int = 0, max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted positions of the images the map shows: all, or a random ``max_points``."""
    if count <= max_points:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=max_points, replace=False))


def thumbnail_sheets(
    images_at: Callable[[torch.Tensor], torch.Tensor], indices: np.ndarray, writer: Writer, folder: Path
) -> dict:
    """The thumbnails of the images ``indices`` as JPEG sheets of ``SHEET_SIDE`` x ``SHEET_SIDE``
    cells of ``THUMBNAIL`` px, written in ``folder/thumbs/``; what the page needs to find them."""
    per_sheet = SHEET_SIDE * SHEET_SIDE
    files = []
    for number, start in enumerate(range(0, len(indices), per_sheet)):
        chunk = np.asarray(images_at(torch.as_tensor(indices[start : start + per_sheet])))
        sheet = Image.new("RGB", (SHEET_SIDE * THUMBNAIL, SHEET_SIDE * THUMBNAIL), "white")
        for cell, image in enumerate(chunk):
            array = image.transpose(1, 2, 0)
            picture = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).convert("RGB")
            picture.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR)
            row, column = divmod(cell, SHEET_SIDE)
            sheet.paste(picture, (column * THUMBNAIL, row * THUMBNAIL))
        buffer = io.BytesIO()
        sheet.save(buffer, format="JPEG", quality=80)
        name = f"thumbs/sheet_{number:05d}.jpg"
        writer.write_bytes(folder / name, buffer.getvalue())
        files.append(name)
    return {"files": files, "side": SHEET_SIDE, "cell": THUMBNAIL}


def thumbnails(
    images_at: Callable[[torch.Tensor], torch.Tensor], indices: np.ndarray, sheets: tuple[Writer, Path] | None
) -> tuple[list[str] | None, dict | None]:
    """The thumbnails of the images ``indices``: inlined as data URIs, or (above
    :data:`INLINE_THUMBNAILS`, where ``sheets`` names the page's writer and folder) in sheets."""
    if sheets is not None and len(indices) > INLINE_THUMBNAILS:
        return None, thumbnail_sheets(images_at, indices, *sheets)
    pictures: list[str] = []
    for start in range(0, len(indices), 256):
        chunk = np.asarray(images_at(torch.as_tensor(indices[start : start + 256])))
        pictures += [thumbnail(image) for image in chunk]
    return pictures, None


def shared_prefix(paths: list[str]) -> str:
    """The longest leading text of every path that ends at a separator (the page stores the rest)."""
    prefix = os.path.commonprefix(paths) if paths else ""
    return prefix[: prefix.rfind("/") + 1] if "/" in prefix else ""


def curation_data(
    shown: np.ndarray, num_clusters: int, paths: list[str] | None, suggestions: Suggestions | None
) -> dict:
    """What curation.js needs beyond the map: K, the shown images' paths (a shared prefix and each
    one's rest), and the proposed sub-clusters of each cluster with their centroids."""
    listed = None if paths is None else [str(paths[i]) for i in shown]
    prefix = shared_prefix(listed or [])
    proposals = centroids = None
    if suggestions is not None and suggestions.parts:
        proposals = {str(k): part[shown].astype(int).tolist() for k, part in suggestions.parts.items()}
        centroids = {
            str(k): {str(c): np.round(points, 5).tolist() for c, points in by_cluster.items()}
            for k, by_cluster in suggestions.centroids.items()
        }
    return {
        "k": int(num_clusters),
        "paths": None if listed is None else {"prefix": prefix, "rest": [p[len(prefix) :] for p in listed]},
        "proposals": proposals,
        "centroids": centroids,
    }


def explorer_section(
    images_at: Callable[[torch.Tensor], torch.Tensor],
    indices: np.ndarray,
    clusters: np.ndarray,
    confidence: np.ndarray,
    shown: np.ndarray,
    coordinates: np.ndarray,
    method: str,
    num_clusters: int,
    labels: np.ndarray | None = None,
    quality_line: str | None = None,
    *,
    paths: list[str] | None = None,
    suggestions: Suggestions | None = None,
    sheets: tuple[Writer, Path] | None = None,
) -> str:
    """The explorer's HTML: ``shown`` (positions into the other arrays) are the mapped images and
    ``coordinates`` ``(len(shown), 2)`` their map; ``paths``: every image's path (None: unknown,
    then the page curates clusters, not single images); ``sheets``: the writer and folder of the
    page, where thumbnail sheets go when more than :data:`INLINE_THUMBNAILS` images are shown."""
    pictures, on_demand = thumbnails(images_at, indices[shown], sheets)
    sizes = np.bincount(clusters, minlength=num_clusters)
    finite = np.nan_to_num(np.asarray(coordinates, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    data = {
        "x": np.round(finite[:, 0], 3).tolist(),
        "y": np.round(finite[:, 1], 3).tolist(),
        "cluster": clusters[shown].astype(int).tolist(),
        "confidence": np.round(np.nan_to_num(confidence[shown].astype(float)), 4).tolist(),
        "label": None if labels is None else labels[shown].astype(int).tolist(),
        "thumb": pictures,
        "sheets": on_demand,
        "sizes": sizes.astype(int).tolist(),
        "total": int(len(clusters)),
        "method": method,
        **curation_data(shown, num_clusters, paths, suggestions),
    }
    data["id"] = hashlib.sha256(json.dumps([data["k"], data["cluster"], data["x"]]).encode()).hexdigest()[:16]
    sampled = (
        f"all {len(shown)} images"
        if len(shown) == len(clusters)
        else f"a random sample of {len(shown)} of the {len(clusters)} images"
    )
    colour_choice = COLOUR_CHOICE if labels is not None else ""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (
        '<section id="explorer"><h2>Explorer</h2>'
        f"<p>{html.escape(method)} map of the embeddings, {sampled}: hover a point to see its image, "
        "click a point or a cluster to open its gallery (least confident images first); drag on the "
        "map to select (box or lasso), click images in a gallery to select them.</p>"
        f"{CURATION_CONTROLS}"
        f'<div class="explorer"><div><canvas id="map" width="640" height="520"></canvas>'
        f'<div id="tip" hidden><img alt="image under the pointer"><span></span></div>{colour_choice}</div>'
        f'<aside><p id="quality-line">{html.escape(quality_line or "")}</p>'
        '<table id="cluster-list"><tr><th>cluster</th><th>images</th></tr></table></aside></div>'
        '<div id="gallery"></div>'
        f'<script type="application/json" id="explorer-data">{payload}</script>'
        f"<script>{_SCRIPT.read_text()}</script><script>{_CURATION_SCRIPT.read_text()}</script></section>"
    )


COLOUR_CHOICE = (
    '<label>colour by <select id="colour-by"><option value="cluster">cluster</option>'
    '<option value="label">label</option></select></label>'
)
# The curation's controls (curation.js binds them); the download is a link the script fills.
CURATION_CONTROLS = (
    '<div id="curate"><div class="bar">select by <label><input type="radio" name="select-mode" '
    'value="box" checked> box</label><label><input type="radio" name="select-mode" value="lasso"> '
    'lasso</label> (shift: add) <span id="selection-count">0 selected</span> '
    '<button type="button" id="clear-selection">clear</button></div><div class="bar">'
    '<button type="button" id="merge">merge the ticked clusters</button> '
    '<button type="button" id="move">move the selection to</button> <select id="move-to"></select> '
    '<button type="button" id="split-selection">selection into a new cluster</button> '
    '<button type="button" id="split-open">split the open cluster into</button> '
    '<select id="split-count"><option>2</option><option>3</option></select> '
    '<button type="button" id="set-aside">set the selection aside</button> '
    '<button type="button" id="bring-back">bring it back</button></div><div class="bar">'
    '<button type="button" id="undo">undo</button> <button type="button" id="start-over">start over'
    '</button> <button type="button" id="download">download curation.json</button>'
    '<a id="curation-file" download="curation.json" hidden>curation.json</a> '
    '<span id="curation-status"></span></div></div>'
)


EXPLORER_STYLE = (
    ".explorer{display:flex;gap:1.5em;align-items:flex-start}.explorer>div{flex:0 0 auto}"
    "#map{border:1px solid #ccc;cursor:crosshair;max-width:100%;display:block}"
    ".explorer label{display:block;margin-top:4px}aside{max-height:520px;overflow:auto}"
    "#cluster-list tr.pick{cursor:pointer}#cluster-list tr.pick:hover,#cluster-list tr.open{background:#eef}"
    "#tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #888;padding:4px;"
    "font-size:12px}#tip img,#gallery img{width:64px;height:64px;image-rendering:pixelated;display:block;"
    "border:0}#gallery figure{display:inline-block;margin:3px;font-size:11px;text-align:center}"
    "#curate .bar{margin:4px 0}#curate button{margin:1px}#gallery figure.chosen{outline:3px solid #d62728}"
    "#gallery figure.aside img{opacity:.35}#cluster-list input.name{width:8em}#curation-status{color:#555}"
    "#gallery button{margin:4px}"
)
