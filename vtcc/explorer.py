"""The report's explorer: the 2-D map of the embeddings as an interactive picture, in the page.

Everything is inlined (the points, the thumbnails as data URIs, the script), so ``report.html``
works from ``file://`` with no server and no network. The map shows one point per image up to
:data:`MAX_POINTS` (a random sample beyond, said on the page); hovering shows the image under the
pointer, clicking a point or a cluster opens that cluster's gallery, least confident images first
(where mistakes sit). Cluster sizes (of all images) and the label-free quality line sit beside the
map; with labels, the points can be coloured by label and each gallery lists its labels.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MAX_POINTS = 2000
THUMBNAIL = 48  # the longest side of a thumbnail, px
_SCRIPT = Path(__file__).with_name("explorer.js")


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
) -> str:
    """The explorer's HTML: ``shown`` (positions into the other arrays) are the mapped images and
    ``coordinates`` ``(len(shown), 2)`` their map."""
    pictures: list[str] = []
    for start in range(0, len(shown), 256):
        chunk = shown[start : start + 256]
        pictures += [thumbnail(image) for image in np.asarray(images_at(torch.as_tensor(indices[chunk])))]
    sizes = np.bincount(clusters, minlength=num_clusters)
    finite = np.nan_to_num(np.asarray(coordinates, dtype=float), nan=0.0, posinf=0.0, neginf=0.0)
    data = {
        "x": np.round(finite[:, 0], 3).tolist(),
        "y": np.round(finite[:, 1], 3).tolist(),
        "cluster": clusters[shown].astype(int).tolist(),
        "confidence": np.round(np.nan_to_num(confidence[shown].astype(float)), 4).tolist(),
        "label": None if labels is None else labels[shown].astype(int).tolist(),
        "thumb": pictures,
        "sizes": sizes.astype(int).tolist(),
        "total": int(len(clusters)),
        "method": method,
    }
    sampled = (
        f"all {len(shown)} images"
        if len(shown) == len(clusters)
        else f"a random sample of {len(shown)} of the {len(clusters)} images"
    )
    colour_choice = (
        '<label>colour by <select id="colour-by"><option value="cluster">cluster</option>'
        '<option value="label">label</option></select></label>'
        if labels is not None
        else ""
    )
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (
        '<section id="explorer"><h2>Explorer</h2>'
        f"<p>{html.escape(method)} map of the embeddings, {sampled}: hover a point to see its image, "
        "click a point or a cluster to open its gallery (least confident images first).</p>"
        f'<div class="explorer"><div><canvas id="map" width="640" height="520"></canvas>'
        f'<div id="tip" hidden><img alt="image under the pointer"><span></span></div>{colour_choice}</div>'
        f'<aside><p id="quality-line">{html.escape(quality_line or "")}</p>'
        '<table id="cluster-list"><tr><th>cluster</th><th>images</th></tr></table></aside></div>'
        '<div id="gallery"></div>'
        f'<script type="application/json" id="explorer-data">{payload}</script>'
        f"<script>{_SCRIPT.read_text()}</script></section>"
    )


EXPLORER_STYLE = (
    ".explorer{display:flex;gap:1.5em;align-items:flex-start}.explorer>div{flex:0 0 auto}"
    "#map{border:1px solid #ccc;cursor:crosshair;max-width:100%;display:block}"
    ".explorer label{display:block;margin-top:4px}aside{max-height:520px;overflow:auto}"
    "#cluster-list tr.pick{cursor:pointer}#cluster-list tr.pick:hover,#cluster-list tr.open{background:#eef}"
    "#tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #888;padding:4px;"
    "font-size:12px}#tip img,#gallery img{width:64px;height:64px;image-rendering:pixelated;display:block;"
    "border:0}#gallery figure{display:inline-block;margin:3px;font-size:11px;text-align:center}"
)
