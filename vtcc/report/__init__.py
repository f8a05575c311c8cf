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

Here: the outputs of a trained module and :func:`report_run`; the page: :mod:`vtcc.report.page`;
the figures: :mod:`vtcc.report.figures`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vtcc.io.writer import Writer
from vtcc.metrics import clustering_metrics
from vtcc.quality import Quality, label_free_quality
from vtcc.report.page import write_report


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
