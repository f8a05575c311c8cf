"""A clustering report a person can look at: PNG figures and one self-contained HTML page.

Figures: the most confident images of each cluster, cluster sizes, the confusion matrix against
the labels after Hungarian matching (when labels exist), a 2-D map of the embeddings (UMAP
when installed, else t-SNE; :func:`vtcc.export.map_2d`) coloured by cluster and by label, the
same map as an interactive explorer (:mod:`vtcc.explorer`), and the training curves from the
run's CSV log.
The page also lists the run's settings and the environment it trained in, and a label-free
quality section (:mod:`vtcc.quality`): how reproducibly the clusters come back from the run's
embedding, beside the same figure for k-means on the raw pixels. :func:`report_run` makes all of it
for a trained module over its data: ``vtcc-train`` at the end of every run (and on Ctrl-C),
``vtcc-eval report=true``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from scipy.optimize import linear_sum_assignment

from vtcc.explorer import EXPLORER_STYLE, explorer_section, sample_positions
from vtcc.export import map_2d
from vtcc.io.reader import open_regular, reader
from vtcc.io.writer import Writer
from vtcc.metrics import clustering_metrics, contingency_table
from vtcc.quality import Quality, label_free_quality
from vtcc.registry import node_entry
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
CURVE_GROUPS = (
    ("loss terms", ("loss",)),
    ("clustering metrics (labels only score)", ("val/acc", "val/nmi", "val/ari")),
)


@reader("run_log")
def read_curves(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """``name -> [(epoch, value)]`` from Lightning's CSV log: epoch-level training losses
    (``train/*loss*`` logged per epoch) and the evaluation metrics."""
    curves: dict[str, list[tuple[int, float]]] = {}
    try:  # a regular file only; a malformed log is skipped and named (the report has no curves)
        with io.TextIOWrapper(open_regular(metrics_csv), newline="") as handle:
            for row in csv.DictReader(handle):
                epoch = row.get("epoch")
                if not epoch:
                    continue
                for name, value in row.items():
                    if not value or not isinstance(name, str) or name in ("epoch", "step"):
                        continue
                    per_step = name.endswith("_step")
                    is_loss = name.startswith("train/") and "loss" in name and not per_step
                    if is_loss or name in ("val/acc", "val/nmi", "val/ari"):
                        curves.setdefault(name.removesuffix("_epoch"), []).append((int(epoch), float(value)))
    except (ValueError, TypeError, csv.Error, OSError) as error:  # UnreadableFile is a ValueError
        logging.getLogger("vtcc").warning(
            "no training curves: %s is not a readable CSV log (%s)", metrics_csv, error
        )
        return {}
    return {name: points for name, points in curves.items() if all(math.isfinite(v) for _, v in points)}


def curves_figure(curves: dict[str, list[tuple[int, float]]], path: Path) -> bool:
    """Loss terms and, when logged, ACC / NMI / ARI per epoch; False when the log has neither."""
    panels = [
        (title, {name: points for name, points in curves.items() if any(key in name for key in keys)})
        for title, keys in CURVE_GROUPS
    ]
    panels = [(title, series) for title, series in panels if series]
    if not panels:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), squeeze=False)
    for axis, (title, series) in zip(axes[0], panels, strict=True):
        for name, points in sorted(series.items()):
            epochs, values = zip(*points, strict=True)
            axis.plot(epochs, values, marker="." if len(points) < 30 else None, label=name)
        axis.set_xlabel("epoch")
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def k_selection_figure(table: Path, path: Path) -> bool:
    """num_clusters=auto: every criterion against K (scaled to its own range), the chosen K marked;
    False (and a warning naming it) when the table is not readable."""
    try:
        with io.TextIOWrapper(open_regular(table), newline="") as handle:
            rows = list(csv.DictReader(handle))
        criteria = [name for name in rows[0] if name not in ("k", "chosen")]
        ks = [int(row["k"]) for row in rows]
        chosen = [(int(row["k"]), row["chosen"]) for row in rows if row["chosen"]]
        columns = {name: np.array([float(row[name]) for row in rows]) for name in criteria}
    except (ValueError, TypeError, KeyError, IndexError, csv.Error, OSError) as error:
        logging.getLogger("vtcc").warning("no K figure: %s is not a readable K table (%s)", table, error)
        return False
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 3.4))
    for name in criteria:
        values = columns[name]
        span = values.max() - values.min()
        axis.plot(ks, (values - values.min()) / (span if span > 0 else 1), marker=".", label=name)
    for k, criterion in chosen:
        axis.axvline(k, color="black", linestyle="--", linewidth=1)
        axis.text(k, 1.02, f"K={k} ({criterion})", fontsize=8, ha="center")
    axis.set_xlabel("K")
    axis.set_ylabel("score, scaled to [0, 1]")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def data_description(config: dict) -> str:
    """``digits``, ``image_folder at <root>``: what a run trained on, in a few words (the
    registered name of its loader, else of its datamodule)."""
    data = config.get("data") or {}
    dataset = data.get("dataset") if isinstance(data.get("dataset"), dict) else {}
    kind = node_entry(dataset) or node_entry(data)
    name = kind.name if kind is not None else "?"
    root = dataset.get("root") or data.get("root")
    return f"{name} at {root}" if root else name


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def matched_confusion(labels: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, list[int], list[int]]:
    """Counts ``(labels, clusters)``, rows and columns reordered so the Hungarian-matched pairs lie on
    the diagonal (first), then the unmatched labels and clusters: also with more classes than clusters."""
    label_values, cluster_values = np.unique(labels), np.unique(clusters)
    table = contingency_table(labels, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    row_order = list(rows) + [r for r in range(table.shape[0]) if r not in set(rows)]
    col_order = list(cols) + [c for c in range(table.shape[1]) if c not in set(cols)]
    return (
        table[np.ix_(row_order, col_order)],
        [int(label_values[r]) for r in row_order],
        [int(cluster_values[c]) for c in col_order],
    )


def cluster_grid(
    images_at: Callable[[torch.Tensor], torch.Tensor],
    indices: np.ndarray,
    clusters: np.ndarray,
    confidence: np.ndarray,
    path: Path,
    per_cluster: int = 8,
) -> None:
    """One row per non-empty cluster: its ``per_cluster`` most confident images, left to right.

    ``images_at(dataset_indices)`` returns uint8 ``(n, C, H, W)``; only the images shown are read.
    """
    plt = _pyplot()
    used = np.unique(clusters)
    figure, axes = plt.subplots(
        len(used), per_cluster, figsize=(per_cluster * 1.1, len(used) * 1.2), squeeze=False
    )
    for row, cluster in enumerate(used):
        members = np.flatnonzero(clusters == cluster)
        best = members[np.argsort(-confidence[members])][:per_cluster]
        shown = np.asarray(images_at(torch.as_tensor(indices[best])))
        for column in range(per_cluster):
            axis = axes[row, column]
            axis.axis("off")
            if column < len(best):
                image = shown[column].transpose(1, 2, 0)
                axis.imshow(
                    image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255
                )
        axes[row, 0].set_title(f"cluster {cluster} ({len(members)})", fontsize=7, loc="left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def size_histogram(clusters: np.ndarray, num_clusters: int, path: Path) -> None:
    plt = _pyplot()
    sizes = np.bincount(clusters, minlength=num_clusters)
    figure, axis = plt.subplots(figsize=(max(4, num_clusters * 0.35), 3))
    axis.bar(range(num_clusters), sizes, color="#4878a8")
    axis.set_xlabel("cluster")
    axis.set_ylabel("images")
    axis.set_title("cluster sizes")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def confusion_figure(table: np.ndarray, label_names: list[int], cluster_names: list[int], path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(4, len(cluster_names) * 0.45), max(3.5, len(label_names) * 0.4)))
    axis.imshow(table, cmap="Blues")
    axis.set_xticks(range(len(cluster_names)), cluster_names, fontsize=7)
    axis.set_yticks(range(len(label_names)), label_names, fontsize=7)
    axis.set_xlabel("cluster (Hungarian-matched order)")
    axis.set_ylabel("label")
    if table.size <= 900:
        for (i, j), count in np.ndenumerate(table):
            if count:
                axis.text(j, i, int(count), ha="center", va="center", fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def embedding_figure(
    points: np.ndarray, clusters: np.ndarray, labels: np.ndarray | None, method: str, path: Path
) -> None:
    """The 2-D map ``points`` ``(n, 2)`` coloured by cluster and, with labels, by label."""
    plt = _pyplot()
    panels = [("by cluster", clusters)] + ([("by label", labels)] if labels is not None else [])
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    for axis, (title, colours) in zip(axes[0], panels, strict=True):
        axis.scatter(points[:, 0], points[:, 1], c=colours, s=4, cmap="tab20")
        axis.set_title(f"{method} of the embeddings, {title}", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


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
    if run_dir is not None:
        title = f"{title}: run {run_dir.name}"
    about = ""
    if run_dir is not None:  # shown relative to where the report was made, when below it
        shown = run_dir.relative_to(Path.cwd()) if run_dir.is_relative_to(Path.cwd()) else run_dir
        about = f"<p>Run: <code>{html.escape(str(shown))}</code></p>"
    if settings:
        about += f"<p>Data: <b>{html.escape(data_description(settings))}</b></p>"
    if stopped:
        about += f"<p>{html.escape(stopped[:1].upper() + stopped[1:])}.</p>"
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{int(v) if k == 'num_clusters' else f'{v:.4f}'}</td></tr>"
        for k, v in (metrics or {}).items()
    )
    sections = "".join(
        f'<section><h2>{html.escape(caption)}</h2><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{base64.b64encode((output / name).read_bytes()).decode()}"></section>'
        for name, caption in figures.items()
    )
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
    for heading, record in (("Settings", settings), ("Environment", environment)):
        if record:
            text = yaml.safe_dump(record, sort_keys=False, default_flow_style=None)
            sections += (
                f"<section><h2>{heading}</h2><details><summary>show the run's {heading.lower()}</summary>"
                f"<pre>{html.escape(text)}</pre></details></section>"
            )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}{EXPLORER_STYLE}</style>{ERROR_CHECK}{FIGURE_CHECK}"
        f"</head><body><h1>{html.escape(title)}</h1>{about}<p>{len(clusters)} images, "
        f"{len(np.unique(clusters))} of {num_clusters} clusters used.</p><h2>Metrics</h2>"
        f"<table>{rows}</table>{sections}</body></html>"
    )
    return writer.write_text(output / "report.html", page)


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


@torch.no_grad()
def collect_outputs(module: torch.nn.Module, datamodule) -> dict[str, np.ndarray]:
    """Clusters, top probabilities, embeddings, labels (-1 unknown) and indices of the evaluation
    split, in loader order, from ``module.network`` on its device."""
    network = module.network
    training = network.training
    network.eval()
    outputs: dict[str, list] = {"cluster": [], "confidence": [], "embedding": [], "label": [], "index": []}
    parameter = next(network.parameters())
    device, dtype = parameter.device, parameter.dtype  # a true-precision run's bf16 weights take bf16
    try:
        for batch in datamodule.val_dataloader():
            on_device = tuple(tensor.to(device) for tensor in batch)  # transformed where the model is
            inputs, labels, indices = datamodule.evaluation_batch(on_device)
            z, p = network.embed_and_assign(inputs.to(dtype) if inputs.is_floating_point() else inputs)
            confidence, cluster = p.max(dim=1)
            for key, value in zip(outputs, (cluster, confidence, z, labels, indices), strict=True):
                outputs[key].append(
                    value.float().cpu() if key in ("confidence", "embedding") else value.cpu()
                )
    finally:
        network.train(training)
    return {key: torch.cat(values).numpy() for key, values in outputs.items()}


def run_quality(outputs: dict[str, np.ndarray], datamodule, num_clusters: int, seed: int = 0) -> Quality:
    """:func:`vtcc.quality.label_free_quality` of collected outputs, the baseline on the same images."""
    return label_free_quality(
        outputs["embedding"],
        outputs["cluster"],
        num_clusters,
        outputs["confidence"],
        pixels_at=lambda positions: datamodule.images_at(torch.as_tensor(outputs["index"][positions])),
        seed=seed,
    )


def report_run(
    module: torch.nn.Module,
    datamodule,
    output: Path,
    metrics: dict[str, float] | None = None,
    run_dir: Path | None = None,
    settings: dict | None = None,
    environment: dict | None = None,
    stopped: str | None = None,
    writer: Writer | None = None,
) -> tuple[Path, Quality]:
    """The report of a trained module over its evaluation split, with its label-free quality (also
    written as ``quality.json``). ``metrics``: ACC / NMI / ARI when known (else computed from the
    collected clusters where labels exist). ``writer``: the command's (default: one over ``output``)."""
    outputs = collect_outputs(module, datamodule)
    labels = outputs["label"]
    labeled = bool(len(labels)) and bool((labels >= 0).all())
    if metrics is None and labeled:
        metrics = clustering_metrics(labels, outputs["cluster"])
    num_clusters = module.network.num_clusters
    quality = run_quality(outputs, datamodule, num_clusters, seed=int((settings or {}).get("seed") or 0))
    writer = writer or Writer(output)
    writer.write_json(output / "quality.json", quality.as_dict())
    page = write_report(
        output,
        datamodule.images_at,
        outputs["index"],
        outputs["cluster"],
        outputs["confidence"],
        outputs["embedding"],
        num_clusters,
        labels=labels if labeled else None,
        metrics=metrics,
        run_dir=run_dir,
        settings=settings,
        environment=environment,
        quality=quality,
        stopped=stopped,
        writer=writer,
        image_paths=datamodule.image_paths() if callable(getattr(datamodule, "image_paths", None)) else None,
    )
    return page, quality
