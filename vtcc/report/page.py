"""The report's page: one self-contained HTML file, its figures embedded (:func:`write_report`)."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from vtcc.explorer import EXPLORER_STYLE, explorer_section, sample_positions
from vtcc.export import map_2d
from vtcc.io.writer import Writer
from vtcc.quality import Quality
from vtcc.registry import node_entry
from vtcc.report.figures import (
    cluster_grid,
    confusion_figure,
    curves_figure,
    embedding_figure,
    k_selection_figure,
    matched_confusion,
    read_curves,
    size_histogram,
)
from vtcc.suggestions import suggest, suggestions_section
from vtcc.utils.progress import Progress

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px}img{max-width:100%;border:1px solid #ddd}"
    "table{border-collapse:collapse}th,td{padding:4px 12px;border-bottom:1px solid #ddd;text-align:left}"
    "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}"
)
# Marks the page once every figure has decoded (data-figures-loaded="<n>/<total>"), so a browser
# check can tell a broken figure from a missing one.
FIGURE_CHECK = (
    "<script>addEventListener('load',()=>{const i=[...document.querySelectorAll('section>img')];"
    "document.body.dataset.figuresLoaded=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length});"
    "</script>"
)
# Counts the page's script errors (data-errors on <html>), first thing in <head>, so a browser
# check sees any error of the explorer's script.
ERROR_CHECK = (
    "<script>document.documentElement.dataset.errors='0';addEventListener('error',e=>{"
    "const d=document.documentElement.dataset;d.errors=String(+d.errors+1);"
    "d.lastError=String(e.message)})</script>"
)


def data_description(config: dict) -> str:
    """``digits``, ``image_folder at <root>``: what a run trained on, in a few words (the
    registered name of its loader, else of its datamodule)."""
    data = config.get("data") or {}
    dataset = data.get("dataset") if isinstance(data.get("dataset"), dict) else {}
    kind = node_entry(dataset) or node_entry(data)
    name = kind.name if kind is not None else "?"
    root = dataset.get("root") or data.get("root")
    return f"{name} at {root}" if root else name


def write_report(
    output: Path,
    images_at: Callable[[torch.Tensor], torch.Tensor],
    indices: np.ndarray,
    clusters: np.ndarray,
    confidence: np.ndarray,
    embeddings: np.ndarray,
    num_clusters: int,
    labels: np.ndarray | None = None,
    metrics: dict[str, float] | None = None,
    title: str = "vtcc clustering report",
    run_dir: Path | None = None,
    settings: dict | None = None,
    environment: dict | None = None,
    quality: Quality | None = None,
    stopped: str | None = None,
    writer: Writer | None = None,
    image_paths: list[str] | None = None,
) -> Path:
    """Write the PNG figures and ``report.html`` (figures embedded) into ``output`` through
    ``writer`` (the command's; default one over ``output``); returns the page.
    ``image_paths``: each dataset index's file (the explorer then curates single images too).

    ``run_dir``: the training run's folder (its name titles the page; its ``logs/metrics.csv`` gives
    the curves); ``settings``: the run's config; ``environment``: what it trained in; ``stopped``:
    why its training ended (a line)."""
    writer = writer or Writer(output)
    writer.make_dirs(output)
    figures, (mapped, points, method) = draw_figures(
        output, writer, images_at, indices, clusters, confidence, embeddings, num_clusters, labels, run_dir
    )
    if run_dir is not None:
        title = f"{title}: run {run_dir.name}"
    about, rows = about_run(run_dir, settings, stopped), metric_rows(metrics)
    sections = figure_sections(output, figures)
    found = suggest(embeddings, clusters, num_clusters)  # merge and split candidates, label-free
    sections += explorer_section(
        images_at,
        indices,
        clusters,
        confidence,
        mapped,
        points,
        method,
        num_clusters,
        labels,
        quality.line() if quality is not None else None,
        paths=None if image_paths is None else [str(image_paths[int(i)]) for i in indices],
        suggestions=found,
        sheets=(writer, output),
    ) + suggestions_section(found)
    if quality is not None:  # after the figures: the page opens on the clusters
        sections += quality_section(quality)
    sections += record_sections(settings, environment)
    page = page_html(title, about, clusters, num_clusters, rows, sections)
    return writer.write_text(output / "report.html", page)


def page_html(
    title: str, about: str, clusters: np.ndarray, num_clusters: int, rows: str, sections: str
) -> str:
    """The page: its title, the run, how many images and clusters, the metrics, then the sections."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}{EXPLORER_STYLE}</style>{ERROR_CHECK}{FIGURE_CHECK}"
        f"</head><body><h1>{html.escape(title)}</h1>{about}<p>{len(clusters)} images, "
        f"{len(np.unique(clusters))} of {num_clusters} clusters used.</p><h2>Metrics</h2>"
        f"<table>{rows}</table>{sections}</body></html>"
    )


def draw_figures(
    output: Path,
    writer: Writer,
    images_at: Callable[[torch.Tensor], torch.Tensor],
    indices: np.ndarray,
    clusters: np.ndarray,
    confidence: np.ndarray,
    embeddings: np.ndarray,
    num_clusters: int,
    labels: np.ndarray | None,
    run_dir: Path | None,
) -> tuple[dict[str, str], tuple[np.ndarray, np.ndarray, str]]:
    """The report's PNG figures in ``output`` (``name -> caption`` of those drawn), and the 2-D map
    the explorer shows too: the positions of the images on it, their points, the method."""

    def draw(name: str, figure: Callable[[Path], Any]) -> Any:  # each figure a new file, renamed
        with writer.temporary(output / name) as path:
            return figure(path)

    progress = Progress("report", 4, "figures", every=0.0)
    figures = {"clusters.png": "Most confident images of each cluster", "sizes.png": "Cluster sizes"}
    draw("clusters.png", lambda path: cluster_grid(images_at, indices, clusters, confidence, path))
    draw("sizes.png", lambda path: size_histogram(clusters, num_clusters, path))
    progress.advance()
    if labels is not None:
        table, label_names, cluster_names = matched_confusion(labels, clusters)
        draw("confusion.png", lambda path: confusion_figure(table, label_names, cluster_names, path))
        with writer.open(output / "confusion.csv") as handle:
            np.savetxt(handle, table, fmt="%d", delimiter=",")
        figures["confusion.png"] = "Confusion matrix after Hungarian matching"
    progress.advance()
    mapped = sample_positions(len(clusters))  # the images on the map (all, or a sample)
    points, method = map_2d(embeddings[mapped])  # t-SNE or UMAP: the slow one
    mapped_labels = None if labels is None else labels[mapped]
    draw(
        "embedding.png", lambda path: embedding_figure(points, clusters[mapped], mapped_labels, method, path)
    )
    progress.advance()
    figures["embedding.png"] = "2-D map of the embeddings"
    log = run_dir / "logs" / "metrics.csv" if run_dir is not None else None
    if (
        log is not None
        and log.is_file()
        and draw("curves.png", lambda path: curves_figure(read_curves(log), path))
    ):
        figures["curves.png"] = "Training curves (per epoch, from the run's CSV log)"
    if run_dir is not None and (run_dir / "k_selection.csv").is_file():
        if draw("k_selection.png", lambda path: k_selection_figure(run_dir / "k_selection.csv", path)):
            figures["k_selection.png"] = "num_clusters=auto: the label-free criteria for every candidate K"
    progress.advance()
    return figures, (mapped, points, method)


def about_run(run_dir: Path | None, settings: dict | None, stopped: str | None) -> str:
    """The lines under the page's title: the run's folder, its data, why its training ended."""
    about = ""
    if run_dir is not None:  # shown relative to where the report was made, when below it
        shown = run_dir.relative_to(Path.cwd()) if run_dir.is_relative_to(Path.cwd()) else run_dir
        about = f"<p>Run: <code>{html.escape(str(shown))}</code></p>"
    if settings:
        about += f"<p>Data: <b>{html.escape(data_description(settings))}</b></p>"
    if stopped:
        about += f"<p>{html.escape(stopped[:1].upper() + stopped[1:])}.</p>"
    return about


def metric_rows(metrics: dict[str, float] | None) -> str:
    """The metrics table's rows (``num_clusters`` as an integer, the others to four places)."""
    return "".join(
        f"<tr><th>{html.escape(k)}</th><td>{int(v) if k == 'num_clusters' else f'{v:.4f}'}</td></tr>"
        for k, v in (metrics or {}).items()
    )


def figure_sections(output: Path, figures: dict[str, str]) -> str:
    """A section a figure, its PNG (just written in ``output``) embedded."""
    return "".join(
        f'<section><h2>{html.escape(caption)}</h2><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{base64.b64encode((output / name).read_bytes()).decode()}"></section>'
        for name, caption in figures.items()
    )


def record_sections(settings: dict | None, environment: dict | None) -> str:
    """The run's settings and environment as YAML, each folded away in its section."""
    sections = ""
    for heading, record in (("Settings", settings), ("Environment", environment)):
        if record:
            text = yaml.safe_dump(record, sort_keys=False, default_flow_style=None)
            sections += (
                f"<section><h2>{heading}</h2><details><summary>show the run's {heading.lower()}</summary>"
                f"<pre>{html.escape(text)}</pre></details></section>"
            )
    return sections


QUALITY_ROWS = (
    ("structure", "how reproducibly the clusters come back from the run's embedding (ARI, 0-1)"),
    ("stability", "k-means fits on two random halves of the embedding against each other (ARI)"),
    ("pixel_stability", "the same for the raw pixels of the same images (PCA to 50 dimensions)"),
    ("balance", "entropy of the cluster sizes over log K (1: even, 0: one cluster)"),
    ("confidence", "mean top cluster probability"),
    ("clusters_used", "clusters that hold images"),
)


def quality_section(quality: Quality) -> str:
    """The label-free figures as a table, with the line that compares them with the pixels."""
    values = quality.as_dict()
    rows = "".join(
        f"<tr><th>{name}</th><td>{values[name] if isinstance(values[name], int) else f'{values[name]:.3f}'}"
        f"</td><td>{html.escape(meaning)}</td></tr>"
        for name, meaning in QUALITY_ROWS
        if values.get(name) is not None
    )
    return (
        '<section id="quality"><h2>Quality without labels</h2>'
        f"<p>{html.escape(quality.line())}. Structure and stability on a random sample of "
        f"{quality.images} images, balance and confidence on all; no label is read.</p>"
        f"<table>{rows}</table></section>"
    )
