"""vtcc from Python: :class:`Clusterer`, an estimator in scikit-learn's manner over ``vtcc-train``.

A fit composes the same Hydra config as ``vtcc-train`` (the same groups and keys: ``overrides``
and keywords are command-line overrides), resolves and builds it the same way and writes the same
run folder, so a run started here is evaluated, resumed and predicted from the CLI, and a CLI
run's checkpoint loads here (:meth:`Clusterer.load`). Nothing global is left behind between fits:
Hydra is initialised for the composition only, log handlers are removed after the fit, and user
mistakes are raised as :class:`vtcc.errors.ConfigError` with the CLI's one-line message.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from vtcc.errors import ConfigError, VtccError

log = logging.getLogger("vtcc")

Images = str | Path | Sequence[str | Path] | np.ndarray
_PLAIN = re.compile(r"^[\w./:@+-]+$")


def override_value(value: Any) -> str:
    """A Python value as Hydra's override grammar reads it: ``true``, ``null``, ``0.5``, ``[a,b]``,
    ``{k:v}``, a word as it is, and any other string quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        if _PLAIN.match(value):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Sequence):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    raise ConfigError(
        f"{value!r} ({type(value).__name__}) cannot be a setting: use a number, text, list or dict"
    )


def override_list(
    overrides: Mapping[str, Any] | Sequence[str] | None, keywords: Mapping[str, Any]
) -> list[str]:
    """``key=value`` items from a dict (``{"model": "pretrained", "trainer.max_epochs": 5}``), a list
    of CLI items, and keywords with ``__`` for the dots (``trainer__max_epochs=5``)."""
    items: list[str] = []
    if isinstance(overrides, Mapping):
        items += [f"{key}={override_value(value)}" for key, value in overrides.items()]
    elif overrides is not None:
        if isinstance(overrides, str):
            raise ConfigError(f"overrides={overrides!r}: give a dict or a list of key=value items")
        items += [str(item) for item in overrides]
    items += [f"{key.replace('__', '.')}={override_value(value)}" for key, value in keywords.items()]
    return items


@contextmanager
def composing() -> Iterator[None]:
    """Hydra initialised on vtcc's configs for the duration, and cleared after."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vtcc.utils.cli import CONFIG_DIR

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app or a compose of the caller's
        GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        yield


def compose_config(name: str, items: list[str]) -> Any:
    """The ``name`` config (train, eval, predict) with ``items``, a mistake as one line."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with composing():
            return compose(name, overrides=items)
    except (HydraException, OmegaConfBaseException) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{message} (overrides: {' '.join(items) or 'none'})") from None


@contextmanager
def run_logging(run_dir: Path) -> Iterator[None]:
    """vtcc's log lines into ``<run>/train.log`` (as the CLI writes it) and, when nothing else shows
    them, to stderr; both handlers removed afterwards."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(run_dir / "train.log")]
    if not logging.getLogger().handlers and not log.handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
    formatter = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    level = log.level
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
        log.setLevel(level)


@contextmanager
def user_errors() -> Iterator[None]:
    """A user mistake raised as its own one-line exception, not wrapped by Hydra or Lightning."""
    from vtcc.utils.cli import _user_error

    try:
        yield
    except VtccError:
        raise
    except Exception as error:
        cause = _user_error(error)
        if cause is None:
            raise
        raise cause.with_traceback(None) from None


def new_run_dir(items: list[str]) -> Path:
    """``<paths.log_dir>/train/<timestamp>``, as ``vtcc-train`` names its runs."""
    cfg = compose_config("train", items)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    return Path(str(cfg.paths.log_dir)) / str(cfg.task_name) / stamp


def data_items(images: Images, labels: Any, run_dir: Path, items: list[str]) -> list[str]:
    """The data overrides for ``images``: a folder as ``data=folder``, an ``.npz`` file as
    ``data=npz``, a list of paths as a folder of links under ``<run>/inputs``, an array as
    ``<run>/inputs.npz`` (with ``labels`` as its ``y``, for the metrics only)."""
    from vtcc.inference import array_images

    chose_data = any(re.match(r"^\+*data=", item) for item in items)
    if isinstance(images, str | Path):
        path = Path(images).expanduser()
        if not path.exists():
            raise ConfigError(
                f"images={images}: no such folder or file; give a folder of images, a list of paths "
                "or an array"
            )
        if labels is not None:
            raise ConfigError("labels go with an array of images; a folder's labels are its class subfolders")
        group = [] if chose_data else ["data=npz" if path.suffix == ".npz" else "data=folder"]
        return [*group, f"data.root={override_value(path.resolve())}"]
    if isinstance(images, np.ndarray):
        array_images(images)  # its dtype and shape, before anything is written
        run_dir.mkdir(parents=True, exist_ok=True)
        arrays = {"x": images}
        if labels is not None:
            y = np.asarray(labels)
            if y.shape != (len(images),) or not np.issubdtype(y.dtype, np.integer):
                raise ConfigError(f"labels must be integers (N,) = ({len(images)},), got {y.dtype} {y.shape}")
            arrays["y"] = y.astype(np.int64)
        np.savez(run_dir / "inputs.npz", **arrays)
        return [
            *([] if chose_data else ["data=npz"]),
            f"data.root={override_value((run_dir / 'inputs.npz').resolve())}",
        ]
    if isinstance(images, Sequence) and not isinstance(images, str | bytes):
        if labels is not None:
            raise ConfigError("labels go with an array of images, not with a list of paths")
        return ["data=folder", f"data.root={override_value(link_inputs(images, run_dir / 'inputs'))}"]
    raise ConfigError(
        f"images of type {type(images).__name__}: give a folder, an .npz file, a list of image paths or a "
        "uint8 array (N, H, W) or (N, H, W, C)"
    )


def link_inputs(paths: Sequence[str | Path], folder: Path) -> Path:
    """A flat folder of links ``000000_<name>`` to ``paths``, in their order (the folder loader
    reads sorted names, so image ``i`` stays image ``i``)."""
    files = [Path(p).expanduser().resolve() for p in paths]
    absent = [str(p) for p in files if not p.is_file()]
    if absent:
        raise ConfigError(f"{len(absent)} listed image(s) do not exist, e.g. {absent[0]}")
    if len(files) < 2:
        raise ConfigError("clustering needs at least 2 images")
    folder.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(files))))
    for index, path in enumerate(files):
        (folder / f"{index:0{width}d}_{path.name}").symlink_to(path)
    return folder.resolve()


def record_overrides(run_dir: Path, items: list[str]) -> None:
    """``<run>/.hydra/overrides.yaml``: the run's settings as CLI items, where ``vtcc-train`` runs
    keep theirs (resume from the command line with the same items and ``ckpt_path=``)."""
    import yaml

    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(items, default_flow_style=False))


class Clusterer:
    """Cluster images with vtcc, in scikit-learn's manner.

    ``Clusterer(num_clusters=10, time_budget_minutes=10).fit(images)`` trains a ``vtcc-train`` run
    on ``images`` (a folder, an ``.npz`` file, a list of image paths, or a uint8 array
    ``(N, H, W)`` / ``(N, H, W, C)``); then ``labels_`` holds each image's cluster. ``overrides``
    takes the CLI's ``key=value`` settings as a dict or list (``{"model": "pretrained",
    "objective": "temi"}``); other keywords are overrides too, with ``__`` for the dots
    (``trainer__max_epochs=5``). ``run_dir``: the run's folder (default: a new
    ``<paths.log_dir>/train/<timestamp>``, as the CLI's).

    After :meth:`fit`, for the images in the order given (a folder: sorted paths, class folders
    in turn): ``labels_`` ``(N,)``, ``confidence_`` ``(N,)`` (the largest cluster probability),
    ``embeddings_`` ``(N, D)``; ``metrics_`` (the run's final metrics: with labels ACC / NMI / ARI),
    ``run_dir_``, ``checkpoint_``, ``num_clusters_``.
    """

    def __init__(
        self,
        num_clusters: int | str | None = None,
        time_budget_minutes: float | None = None,
        overrides: Mapping[str, Any] | Sequence[str] | None = None,
        run_dir: str | Path | None = None,
        **settings: Any,
    ) -> None:
        self.num_clusters = num_clusters
        self.time_budget_minutes = time_budget_minutes
        self.overrides = overrides
        self.run_dir = run_dir
        self.settings = settings
        self._assigner: Any = None

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {
            "num_clusters": self.num_clusters,
            "time_budget_minutes": self.time_budget_minutes,
            "overrides": self.overrides,
            "run_dir": self.run_dir,
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
        """Train on ``images``; ``labels`` (an array's, optional) only score the clusters (``metrics_``)."""
        from vtcc.report import collect_outputs
        from vtcc.train import train_run

        items = self._items()
        run_dir = Path(self.run_dir) if self.run_dir is not None else new_run_dir(items)
        items = [
            *items,
            *data_items(images, labels, run_dir, items),
            f"paths.output_dir={override_value(run_dir.resolve())}",
        ]
        cfg = compose_config("train", items)
        record_overrides(run_dir, items)
        with run_logging(run_dir), user_errors():
            trained = train_run(cfg, overrides=items)
            outputs = collect_outputs(trained.run.module, trained.run.datamodule)
        order = np.argsort(outputs["index"], kind="stable")
        self.labels_ = outputs["cluster"][order]
        self.confidence_ = outputs["confidence"][order]
        self.embeddings_ = outputs["embedding"][order]
        self.metrics_ = trained.metrics
        self.run_dir_ = trained.output_dir
        self.checkpoint_ = trained.output_dir / "checkpoints" / "last.ckpt"
        self.num_clusters_ = int(trained.run.network.num_clusters)
        self._assigner = None
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
        if target.exists() and not overwrite:
            raise ConfigError(f"{target} already exists: choose another path, or pass overwrite=True")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._fitted(), target)
        return target

    def _fitted(self) -> Path:
        checkpoint = getattr(self, "checkpoint_", None)
        if checkpoint is None:
            raise ConfigError("this Clusterer is not fitted yet: call fit(images) or Clusterer.load(<ckpt>)")
        return Path(checkpoint)

    def _assigner_for(self) -> Any:
        from vtcc.inference import Assigner

        if self._assigner is None:
            checkpoint = self._fitted()
            with user_errors():  # assigning images reads no feature cache: nothing is written
                self._assigner = Assigner(checkpoint, device="auto")
        return self._assigner

    def _assign(self, images: Images, batch_size: int = 256) -> Any:
        from vtcc.predict import list_inputs

        assigner = self._assigner_for()
        with user_errors():
            if isinstance(images, np.ndarray):
                return assigner.assign_array(images, batch_size)
            if isinstance(images, str | Path):
                return assigner.assign_paths(list_inputs(str(images)), batch_size)
            if isinstance(images, Sequence):
                paths = [Path(p) for p in images]
                absent = [str(p) for p in paths if not p.is_file()]
                if absent:
                    raise ConfigError(f"{len(absent)} listed image(s) do not exist, e.g. {absent[0]}")
                return assigner.assign_paths(paths, batch_size)
        raise ConfigError(
            f"images of type {type(images).__name__}: give a folder, a list of paths or a uint8 array"
        )

    def predict(self, images: Images) -> np.ndarray:
        """Each image's cluster ``(N,)`` (a folder: its images in sorted path order, as ``vtcc-predict``)."""
        return self._assign(images).clusters

    def predict_proba(self, images: Images) -> np.ndarray:
        """Each image's cluster probabilities ``(N, K)``."""
        return self._assign(images).probabilities

    def transform(self, images: Images) -> np.ndarray:
        """Each image's embedding ``(N, D)``: what the run's map and report use (the instance
        vectors where the objective trains them, else the L2-normalised backbone features)."""
        return self._assign(images).embeddings
