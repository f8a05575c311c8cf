"""vtcc from Python: :class:`Clusterer`, an estimator in scikit-learn's manner over ``vtcc-train``.

A fit composes the same Hydra config as ``vtcc-train`` (the same groups and keys: ``overrides``
and keywords are command-line overrides), resolves and builds it the same way and writes the same
run folder, so a run started here is evaluated, resumed and predicted from the CLI, and a CLI
run's checkpoint loads here (:meth:`Clusterer.load`). Nothing global is left behind between fits:
Hydra is initialised for the composition only, log handlers are removed after the fit, and user
mistakes are raised as :class:`vtcc.errors.ConfigError` with the CLI's one-line message.

Here: :class:`Clusterer`. Its parts: :mod:`vtcc.api.compose` (settings as overrides, the
composition), :mod:`vtcc.api.inputs` (how a fit reads the images given), :mod:`vtcc.api.run_folder`
(the run's folder, log and one-line errors), :mod:`vtcc.api_curation` (curation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vtcc.api.compose import compose_config, new_run_dir, override_list, override_value
from vtcc.api.inputs import Images, plan_inputs
from vtcc.api.run_folder import check_run_dir, record_overrides, run_logging, user_errors
from vtcc.api_curation import CurationMethods
from vtcc.config.validate import validate_config
from vtcc.data.feature_file import read_features
from vtcc.data.folder import IMAGE_SUFFIXES, load_npz
from vtcc.errors import ConfigError
from vtcc.inference import Assigner
from vtcc.io.writer import Writer
from vtcc.metrics import clustering_metrics
from vtcc.predict import existing_files, list_inputs
from vtcc.report import collect_outputs
from vtcc.train import train_run


class Clusterer(CurationMethods):
    """Cluster images with vtcc, in scikit-learn's manner.

    ``Clusterer(num_clusters=10, time_budget_minutes=10).fit(images)`` trains a ``vtcc-train`` run
    on ``images`` (a folder, an ``.npz`` file, a list of image paths, or a uint8 array
    ``(N, H, W)`` / ``(N, H, W, C)``; or precomputed features for the pretrained route: a float
    array ``(N, D)`` or a ``.npy`` / ``.npz`` feature file, trained as ``data=features``, with an
    objective on one vector per image such as ``objective="temi"``); then ``labels_`` holds each
    image's cluster. ``overrides`` takes the CLI's ``key=value`` settings as a dict or list
    (``{"model": "pretrained", "objective": "temi"}``); other keywords are overrides too, with
    ``__`` for the dots (``trainer__max_epochs=5``). ``run_dir``: the run's folder (default: a new
    ``<paths.log_dir>/train/<timestamp>``, as the CLI's); ``device``: where ``predict``,
    ``predict_proba`` and ``transform`` run (``auto``, ``cpu``, ``cuda``; training follows
    ``trainer.accelerator``).

    After :meth:`fit`, for the images in the order given (a folder: sorted paths, class folders
    in turn): ``labels_`` ``(N,)``, ``confidence_`` ``(N,)`` (the largest cluster probability),
    ``embeddings_`` ``(N, D)``; ``metrics_`` (the run's final metrics: with labels ACC / NMI / ARI),
    ``run_dir_``, ``checkpoint_``, ``num_clusters_``.

    A person's decisions about the clusters (``curation.json`` from the report's explorer, or
    :meth:`curate`) apply with :meth:`apply_curation` (:mod:`vtcc.api_curation`).
    """

    def __init__(
        self,
        num_clusters: int | str | None = None,
        time_budget_minutes: float | None = None,
        overrides: Mapping[str, Any] | Sequence[str] | None = None,
        run_dir: str | Path | None = None,
        device: str = "auto",
        **settings: Any,
    ) -> None:
        self.num_clusters = num_clusters
        self.time_budget_minutes = time_budget_minutes
        self.overrides = overrides
        self.run_dir = run_dir
        self.device = device
        self.settings = settings
        self._assigner: Any = None

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {
            "num_clusters": self.num_clusters,
            "time_budget_minutes": self.time_budget_minutes,
            "overrides": self.overrides,
            "run_dir": self.run_dir,
            "device": self.device,
            **self.settings,
        }

    def _items(self) -> list[str]:
        named = {
            key: value
            for key, value in (
                ("num_clusters", self.num_clusters),
                ("time_budget_minutes", self.time_budget_minutes),
            )
            if value is not None
        }
        return override_list(self.overrides, {**named, **self.settings})

    def fit(self, images: Images, labels: Any = None) -> Clusterer:
        """Train on ``images``; ``labels`` (an array's, optional) only score the clusters
        (``metrics_``): K is yours to give (``num_clusters``), never taken from them."""
        items = self._items()
        if labels is not None and not any(re.sub(r"^\++", "", i).startswith("num_clusters=") for i in items):
            raise ConfigError(
                "labels= only score the clusters and never choose K: give num_clusters=K (or 'auto')"
            )
        run_dir = Path(self.run_dir) if self.run_dir is not None else new_run_dir(items)
        inputs = plan_inputs(images, labels, run_dir, items)
        items = [*items, *inputs.items, f"paths.output_dir={override_value(run_dir.resolve())}"]
        cfg = compose_config("train", items)
        with user_errors():
            validate_config(cfg)  # every value's type: a mistake stops before anything is written
        check_run_dir(run_dir, bool(cfg.get("overwrite")))
        Writer(run_dir).make_dirs(run_dir)
        inputs.write()
        record_overrides(run_dir, items)
        with run_logging(run_dir), user_errors():
            trained = train_run(cfg, overrides=items)
            outputs = collect_outputs(trained.run.module, trained.run.datamodule)
        order = np.argsort(outputs["index"], kind="stable")
        if inputs.count is not None and len(order) != inputs.count:
            raise ConfigError(
                f"the run read {len(order)} of the {inputs.count} images (see {run_dir / 'train.log'}): "
                "labels_ would not line up with them; fix or drop the unreadable ones"
            )
        self.labels_ = outputs["cluster"][order]
        self.confidence_ = outputs["confidence"][order]
        self.embeddings_ = outputs["embedding"][order]
        self.metrics_ = trained.metrics
        self.run_dir_ = trained.output_dir
        self.checkpoint_ = trained.output_dir / "checkpoints" / "last.ckpt"
        self.num_clusters_ = int(trained.run.network.num_clusters)
        self._assigner = None
        self.curation_ = self.model_labels_ = None  # a new run: an earlier curation is not its own
        return self

    def fit_predict(self, images: Images, labels: Any = None) -> np.ndarray:
        return self.fit(images, labels).labels_

    @classmethod
    def load(cls, checkpoint: str | Path) -> Clusterer:
        """A fitted Clusterer from a run's checkpoint (any run's, CLI or Python), ready to
        :meth:`predict`; ``labels_`` belong to :meth:`fit` only."""
        path = Path(checkpoint)
        if not path.is_file():
            raise ConfigError(f"checkpoint {checkpoint} does not exist: give a run's checkpoints/last.ckpt")
        clusterer = cls()
        clusterer.checkpoint_ = path
        clusterer.num_clusters_ = clusterer._assigner_for().num_clusters
        return clusterer

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """A copy of the run's checkpoint at ``path`` (what :meth:`load`, ``vtcc-eval`` and
        ``vtcc-predict`` read)."""
        target = Path(path)
        if target.is_dir():
            raise ConfigError(
                f"{target} is a folder: give the checkpoint file's path, e.g. {target / 'model.ckpt'}"
            )
        if target.exists() and not overwrite:
            raise ConfigError(f"{target} already exists: choose another path, or pass overwrite=True")
        # the file the user named, replaced when asked (atomically; a link there as a link)
        Writer(target.parent, replace_named=True).copy_file(self._fitted(), target)
        return target

    def _fitted(self) -> Path:
        checkpoint = getattr(self, "checkpoint_", None)
        if checkpoint is None:
            raise ConfigError("this Clusterer is not fitted yet: call fit(images) or Clusterer.load(<ckpt>)")
        return Path(checkpoint)

    def _assigner_for(self) -> Any:
        if self._assigner is None:
            checkpoint = self._fitted()
            with user_errors():  # assigning images reads no feature cache: nothing is written
                self._assigner = Assigner(checkpoint, device=self.device)
        return self._assigner

    def _assign(self, images: Images, batch_size: int = 256) -> Any:
        assigner = self._assigner_for()
        with user_errors():
            if isinstance(images, np.ndarray):
                return assigner.assign_array(images, batch_size)
            if assigner.reads_features and isinstance(images, str | Path):
                return assigner.assign_features(read_features(images).features.numpy(), batch_size)
            if isinstance(images, str | Path):
                path = Path(images)
                if path.suffix == ".npz" and path.is_file():
                    return assigner.assign_tensor(load_npz(path).images, batch_size)
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    return assigner.assign_paths([path], batch_size)
                return assigner.assign_paths(list_inputs(str(images)), batch_size)
            if isinstance(images, list | tuple) and all(isinstance(p, str | Path) for p in images):
                paths = existing_files([Path(p) for p in images])
                if not paths:
                    raise ConfigError("no images given: an empty list")
                return assigner.assign_paths(paths, batch_size)
        raise ConfigError(
            f"images of type {type(images).__name__}: give a folder, an .npz file, a list of image paths, "
            "a uint8 array (N, H, W) or (N, H, W, C), or features (N, D) (.npy file or float array)"
        )

    def predict(self, images: Images) -> np.ndarray:
        """Each image's cluster ``(N,)`` (a folder: its images in sorted path order, as ``vtcc-predict``);
        after :meth:`apply_curation`, the curated one."""
        if self.curation_ is not None:
            return self.predict_curated(images).clusters
        return self._assign(images).clusters

    def predict_proba(self, images: Images) -> np.ndarray:
        """Each image's cluster probabilities ``(N, K)``."""
        return self._assign(images).probabilities

    def evaluate(self, images: Images, labels: Any) -> dict[str, float]:
        """ACC (Hungarian), NMI and ARI of the clusters of ``images`` against ``labels`` ``(N,)``, as
        ``vtcc-eval`` scores a run; the labels only score."""
        clusters = self.predict(images)
        truth = np.asarray(labels)
        if truth.shape != clusters.shape or not np.issubdtype(truth.dtype, np.integer):
            raise ConfigError(f"labels must be integers ({len(clusters)},), got {truth.dtype} {truth.shape}")
        return clustering_metrics(truth, clusters)

    def transform(self, images: Images) -> np.ndarray:
        """Each image's embedding ``(N, D)``: what the run's map and report use (the instance
        vectors where the objective trains them, else the L2-normalised backbone features)."""
        return self._assign(images).embeddings
