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
import numbers
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from vtcc.api_curation import CurationMethods
from vtcc.config.validate import validate_config
from vtcc.data.feature_file import check_features, read_features
from vtcc.data.folder import IMAGE_SUFFIXES, load_npz
from vtcc.errors import ConfigError, VtccError
from vtcc.inference import Assigner, array_images
from vtcc.io.reader import npz_names, open_regular
from vtcc.io.writer import Writer
from vtcc.metrics import clustering_metrics
from vtcc.plugins import load_plugins
from vtcc.predict import existing_files, list_inputs
from vtcc.report import collect_outputs
from vtcc.train import check_output_dir, train_run
from vtcc.utils.cli import CONFIG_DIR, one_line, user_error

log = logging.getLogger("vtcc")

Images = str | Path | Sequence[str | Path] | np.ndarray
_PLAIN = re.compile(r"^[\w./:@+-]+$")


def override_value(value: Any) -> str:
    """A Python value as Hydra's override grammar reads it: ``true``, ``null``, ``0.5``, ``[a,b]``,
    ``{k:v}``, a word as it is, and any other string quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, numbers.Integral):
        return repr(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
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
        if not isinstance(overrides, list | tuple) or not all(isinstance(item, str) for item in overrides):
            raise ConfigError(
                f"overrides={overrides!r}: give a dict ({{'trainer.max_epochs': 5}}) or a list of "
                "key=value texts (['trainer.max_epochs=5'])"
            )
        items += list(overrides)
    items += [f"{key.replace('__', '.')}={override_value(value)}" for key, value in keywords.items()]
    for item in items:
        key = re.sub(r"^[+~]+", "", item).split("=", 1)[0]
        if key == "hydra" or key.startswith("hydra.") or key.startswith("hydra/"):
            raise ConfigError(
                f"{item}: Hydra's own settings do not apply from Python; the run's folder is run_dir="
            )
        if key == "paths.output_dir":
            raise ConfigError(f"{item}: set the run's folder with run_dir=")
    return items


@contextmanager
def composing() -> Iterator[None]:
    """Hydra initialised on vtcc's configs for the duration, and cleared after."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    load_plugins()  # the installed plugins' kinds and config files (objective=iic)
    backup = get_gh_backup()  # inside a Hydra app, or after a compose of the caller's: kept
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            yield
    finally:
        restore_gh_from_backup(backup)


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
    them, to stderr; both handlers removed afterwards (the log file opened by the Writer: never
    through a link, never a file vtcc did not write)."""
    stream = Writer(run_dir).append(run_dir / "train.log")
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
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
        stream.close()
        log.setLevel(level)


@contextmanager
def user_errors() -> Iterator[None]:
    """A user mistake raised as its own one-line exception, not wrapped by Hydra or Lightning."""
    try:
        yield
    except VtccError as error:
        if one_line(error) != str(error):  # raised in a loader worker: torch added its traceback
            raise type(error)(one_line(error)) from None
        raise
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        if not isinstance(cause, VtccError):  # Lightning's MisconfigurationException
            raise ConfigError(one_line(cause)) from None
        raise cause.with_traceback(None) from None


def new_run_dir(items: list[str]) -> Path:
    """``<paths.log_dir>/train/<timestamp>``, as ``vtcc-train`` names its runs."""
    cfg = compose_config("train", items)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    return Path(str(cfg.paths.log_dir)) / str(cfg.task_name) / stamp


@dataclass
class Inputs:
    """How a fit reads its images: the data overrides, what must be written first (an array's
    ``inputs.npz``, a list's links), and how many images ``labels_`` must have (``None``: a folder,
    whatever it holds)."""

    items: list[str]
    write: Callable[[], None]
    count: int | None


def plan_inputs(images: Images, labels: Any, run_dir: Path, items: list[str]) -> Inputs:
    """A folder as ``data=folder``, an ``.npz`` file as ``data=npz``, a list of image paths as a
    folder of links under ``<run>/inputs``, an array as ``<run>/inputs.npz`` (with ``labels`` as its
    ``y``, for the metrics only). Checked in full before anything is written."""
    chose_data = any(re.match(r"^\+*data=", item) for item in items)
    if labels is not None and not isinstance(images, np.ndarray):
        raise ConfigError("labels= go with an array of images; a folder's labels are its class subfolders")
    if isinstance(images, str | Path):
        path = Path(images).expanduser()
        if not path.exists():
            raise ConfigError(
                f"images={images}: no such folder or file; give a folder of images, an .npz file, a list "
                "of image paths, an array, or a .npy / .npz file of features"
            )
        group = [] if chose_data else [f"data={data_kind(path)}"]
        return Inputs([*group, f"data.root={override_value(path.resolve())}"], lambda: None, None)
    if isinstance(images, np.ndarray):
        features = images.ndim == 2  # precomputed features (N, D): data=features
        if features:
            check_features(images, "the features")
        else:
            array_images(images)  # its dtype and shape
        arrays = {"features" if features else "x": images}
        if labels is not None:
            y = np.asarray(labels)
            if y.shape != (len(images),) or not np.issubdtype(y.dtype, np.integer):
                raise ConfigError(f"labels must be integers (N,) = ({len(images)},), got {y.dtype} {y.shape}")
            arrays["y"] = y.astype(np.int64)
        target = run_dir / "inputs.npz"
        group = [] if chose_data else ["data=features" if features else "data=npz"]
        return Inputs(
            [*group, f"data.root={override_value(target.resolve())}"],
            lambda: Writer(run_dir).save_arrays(target, **arrays),
            len(images),
        )
    if isinstance(images, list | tuple):
        if not all(isinstance(p, str | Path) for p in images):
            raise ConfigError(
                "a list of images must hold paths (str or Path); give arrays as one (N, H, W[, C]) array"
            )
        files = existing_files([Path(p).expanduser().resolve() for p in images])
        odd = [str(p) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if odd:
            raise ConfigError(
                f"{len(odd)} listed file(s) are not images ({', '.join(IMAGE_SUFFIXES)}), e.g. {odd[0]}"
            )
        if len(files) < 2:
            raise ConfigError("clustering needs at least 2 images")
        folder = run_dir / "inputs"
        group = [] if chose_data else ["data=folder"]
        return Inputs(
            [*group, f"data.root={override_value(folder.resolve())}"],
            lambda: link_inputs(files, folder, Writer(run_dir)),
            len(files),
        )
    raise ConfigError(
        f"images of type {type(images).__name__}: give a folder, an .npz file, a list of image paths, "
        "a uint8 array (N, H, W) or (N, H, W, C), or features (N, D) (.npy file or float array)"
    )


NUMPY_MAGIC = b"\x93NUMPY"


def data_kind(path: Path) -> str:
    """The data group a file or folder is read with: ``features`` for an ``.npy`` file or an
    ``.npz`` holding ``features``, ``npz`` for other ``.npz`` files (images ``x``), else ``folder``."""
    if path.suffix == ".npy":
        return "features"
    if path.suffix == ".npz" and (path.exists() or path.is_symlink()):
        with open_regular(path) as handle:  # a FIFO, a device, a folder: one line naming it
            if handle.read(len(NUMPY_MAGIC)) == NUMPY_MAGIC:  # an .npy named .npz: its loader says so
                return "npz"
        return "features" if "features" in npz_names(path) else "npz"  # a damaged archive: one line
    return "folder"


def link_inputs(files: Sequence[Path], folder: Path, writer: Writer | None = None) -> None:
    """A flat folder of links ``000000_<name>`` to ``files``, in their order (the folder loader
    reads sorted names, so image ``i`` stays image ``i``); a new folder each fit: the links of an
    earlier fit into this run folder (``overwrite=True``) are removed first, never what they point to."""
    writer = writer or Writer(folder.parent)
    width = max(6, len(str(len(files))))
    links = [folder / f"{index:0{width}d}_{path.name}" for index, path in enumerate(files)]
    writer.check(*links)
    writer.remove_recorded(f"{folder.name}/*")
    if folder.is_dir() and any(folder.iterdir()):  # the loader would read them as images too
        raise ConfigError(
            f"{folder} holds files vtcc did not write: move them away, or choose another run_dir"
        )
    writer.claim(links)
    writer.make_dirs(folder)
    for link, path in zip(links, files, strict=True):
        writer.link_file(path, link)


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Before anything is written: a folder (not a file), and not another run's unless ``overwrite``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} is a file: give a folder for the run")
    check_output_dir(run_dir, overwrite)
    for name in ("inputs.npz", "inputs"):
        if (run_dir / name).exists() and not overwrite:
            raise ConfigError(
                f"{run_dir / name} holds an earlier fit's images: choose another run_dir, or pass "
                "overwrite=True"
            )


def record_overrides(run_dir: Path, items: list[str]) -> None:
    """``<run>/.hydra/overrides.yaml``: the run's settings as CLI items, where ``vtcc-train`` runs
    keep theirs (resume from the command line with the same items and ``ckpt_path=``)."""
    import yaml

    Writer(run_dir).write_text(
        run_dir / ".hydra" / "overrides.yaml", yaml.safe_dump(items, default_flow_style=False)
    )


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
