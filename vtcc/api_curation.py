""":class:`vtcc.Clusterer`'s curation methods: build a ``curation.json`` from Python, apply one.

A curation (:mod:`vtcc.curation`) is what a person decided about a run's clusters: names, merges,
splits, moved images and outliers, made in the report's explorer or with :meth:`curate`. After
:meth:`apply_curation`, :meth:`predict` gives the curated clusters, :meth:`predict_curated` the
names and outliers as well, and ``labels_`` / ``cluster_names_`` follow it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vtcc.curation import (
    Curated,
    Curation,
    apply_curation,
    build_curation,
    final_ids,
    final_names,
    read_curation,
)
from vtcc.data.folder import IMAGE_SUFFIXES
from vtcc.errors import ConfigError
from vtcc.predict import list_inputs


def image_names(images: Any) -> list[str] | None:
    """The paths a curation's moves and outliers are matched with: a folder's images (sorted,
    as :meth:`predict` reads them), one image, or a list of paths; None for arrays and files of
    arrays (their images have no paths)."""
    if isinstance(images, list | tuple) and all(isinstance(p, str | Path) for p in images):
        return [str(p) for p in images]
    if isinstance(images, str | Path):
        path = Path(images)
        if path.is_dir() or (path.is_file() and path.suffix in (".txt", ".lst")):
            return [str(p) for p in list_inputs(str(images))]
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return [str(path)]
    return None


class CurationMethods:
    """Mixed into :class:`vtcc.Clusterer`."""

    curation_: Curation | None = None

    def curate(
        self,
        names: dict[int, str] | None = None,
        merges: list[list[int]] | None = None,
        moves: dict[str | Path, int] | None = None,
        outliers: list[str | Path] | None = None,
        path: str | Path | None = None,
    ) -> Curation:
        """A curation of this fitted run's clusters: ``names`` ``{cluster: name}``, ``merges``
        ``[[a, b], ...]`` (each group becomes its smallest id), ``moves`` ``{image path: cluster}``
        (an id at or above K is a new cluster), ``outliers`` ``[image path, ...]``; checked as the
        file is, and written as ``curation.json`` at ``path`` when given (what ``vtcc-predict
        curation=`` and :meth:`apply_curation` read)."""
        curation = build_curation(self._curated_k(), names, merges, moves, outliers)
        if path is not None:
            target = Path(path)
            if target.is_dir():
                raise ConfigError(
                    f"{target} is a folder: give the file's path, e.g. {target / 'curation.json'}"
                )
            curation.save(target)
        return curation

    def apply_curation(self, curation: str | Path | Curation) -> Any:
        """Apply a curation (a ``curation.json`` path, or :meth:`curate`'s result) from now on:
        :meth:`predict` gives the curated clusters, :meth:`predict_curated` names and outliers too;
        after :meth:`fit`, ``labels_`` take its splits and merges (moves and outliers apply by
        path, in :meth:`predict`) and ``cluster_names_`` its names. Returns the Clusterer."""
        chosen = curation if isinstance(curation, Curation) else read_curation(curation)
        labels = getattr(self, "labels_", None)
        embeddings = getattr(self, "embeddings_", None)
        chosen.check_run(self._curated_k(), None if embeddings is None else embeddings.shape[1])
        if labels is not None and getattr(self, "model_labels_", None) is None:
            self.model_labels_ = labels  # the run's own clusters, kept for a later curation
        if labels is not None:
            self.labels_ = final_ids(chosen, self.model_labels_, embeddings)
        self.curation_ = chosen
        self.cluster_names_ = final_names(chosen)
        return self

    def predict_curated(self, images: Any) -> Curated:
        """The curated assignment of ``images``: ``clusters``, ``names`` (``name_of()`` per
        image), ``outlier``, ``confidence``, ``model_clusters`` (the run's own); without a
        curation, the run's clusters as they are."""
        assigned = self._assign(images)
        curation = self.curation_ or Curation(num_clusters=self._curated_k())
        return apply_curation(curation, assigned.probabilities, assigned.embeddings, image_names(images))

    def _curated_k(self) -> int:
        k = getattr(self, "num_clusters_", None)
        if k is None:
            raise ConfigError("this Clusterer is not fitted yet: call fit(images) or Clusterer.load(<ckpt>)")
        return int(k)
