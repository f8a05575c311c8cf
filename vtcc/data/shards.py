"""Images in tar shards, in WebDataset's layout: ``data=shards`` and the ``vtcc-shards`` converter.

For image sets larger than one machine's memory or local disk: each shard is a plain tar of
samples ``<key>.<image suffix>`` (the image file's own bytes), ``<key>.cls`` (the class index, when
the folder had class subfolders; only scored) and ``<key>.json`` (the image's index and path), as
WebDataset writes and reads them (``webdataset.ShardWriter``; OpenCLIP and DINOv2 train on such
shards). Beside the shards, ``shards.json`` holds the image count, the shard list and a sample's
statistics (what ``auto`` settings are decided from), and ``offsets.npz`` where each image lies
(shard, byte offset, size, label): a streamed shard is read whole in one sequential read and its
images sliced at their offsets; the report and the evaluation pass read single images by offset.

Training streams: every epoch the shards are shuffled with the run's seed and the epoch (every
process draws the same order), shard ``i`` of that order goes to reader ``i mod (ranks x
workers)``, so each shard is read by exactly one process and one of its loader workers, and each
reader shuffles its shards' images. Every process trains the same known number of batches an
epoch (:func:`reader_steps`: full batches every process holds whatever the order), so
distributed processes stay in step. Evaluation reads every image once, in index order, by offset.
``data.order=global`` trains in ``data=folder``'s order instead (one permutation of all images an
epoch, each read at its offset).

WebDataset rather than litdata: its format is the plain tar that the peers at this scale
(OpenCLIP, DINOv2's data pipelines) and standard tools read and write; litdata's chunks are its own
binary format behind its own index and cache, and a tar needs neither to be inspected or made.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from vtcc.data.benchmarks import DatasetNotFoundError
from vtcc.data.folder import (
    FITS,
    IMAGE_SUFFIXES,
    Fit,
    clamp_stored_size,
    decode_image,
    list_images,
    native_side,
)
from vtcc.data.images import DecodedPerBatch, ImageSettings
from vtcc.data.probe import ImageProbe, probe_folder
from vtcc.errors import ConfigError, user_error
from vtcc.io.reader import (
    Bool,
    Int,
    List,
    Maybe,
    Record,
    Str,
    UnreadableFile,
    check_record,
    check_regular,
    load_npz,
    open_image,
    open_regular,
    parse_json_record,
    read_bytes,
    read_json,
    read_range,
    reader,
)
from vtcc.io.writer import Writer
from vtcc.registry import register
from vtcc.utils.dist import rank_and_count

log = logging.getLogger("vtcc")

FORMAT = "vtcc-shards/1"
INDEX = "shards.json"
OFFSETS = "offsets.npz"
PATTERN = "shard-%06d.tar"
META = ("json", "cls")  # the members of a sample that are not its image
FIX = "write the shards again with vtcc-shards"
MAX_IMAGES = 2**40
# What vtcc reads of shards.json (typed, checked; nothing of it is ever resolved as config) and of
# a sample's <key>.json; keys not declared here are dropped.
INDEX_RECORD = Record(
    format=Str(choices=(FORMAT,)),
    count=Int(0, MAX_IMAGES),
    shards=List(Record(file=Str(255), count=Int(0, MAX_IMAGES))),
    classes=List(Str()),
    labeled=Bool(),
    native_side=Maybe(Int(1, 2**20)),
    sample=Record(),  # checked as an ImageProbe (vtcc.data.probe.PROBE_RECORD)
)
SAMPLE_RECORD = Record(index=Int(0, MAX_IMAGES), path=Str())


def require_webdataset() -> None:
    try:
        import webdataset  # noqa: F401
    except ImportError:
        raise ConfigError("data=shards and vtcc-shards need webdataset: pip install 'vtcc[scale]'") from None


def write_shards(
    folder: str | Path, output: str | Path, shard_size: int = 1000, classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """Write the images of ``folder`` (``data=folder``'s layout) as shards of ``shard_size`` images
    into ``output`` (a new or empty folder); returns the index written as ``shards.json``."""
    require_webdataset()
    import webdataset as wds

    if shard_size < 1:
        raise ConfigError(f"--shard-size {shard_size}: give at least 1 image a shard")
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"{out} already exists and is not an empty folder: choose a new folder for the shards"
        )
    paths, labels, names = list_images(Path(folder), classes)
    probe = probe_folder(folder, classes)  # before writing: an unreadable folder writes nothing
    for path in paths:  # every file an image (header, size, checksums): nothing else is copied
        with open_image(path) as image:
            image.verify()
    writer = Writer(out, protect=[folder])  # never inside the images' folder, never through a link
    writer.make_dirs(out)

    def samples() -> Iterator[dict[str, Any]]:
        for index, path in enumerate(paths):
            sample = {
                "__key__": f"{index:09d}",
                path.suffix.lower().lstrip("."): read_bytes(path),
                "json": {"index": index, "path": str(path.relative_to(folder))},
            }
            if labels is not None:
                sample["cls"] = int(labels[index])
            yield sample

    files = _write_tars(writer, out, samples(), shard_size, wds.TarWriter)
    where = [_members(file, number) for number, file in enumerate(files)]
    located = np.concatenate(where) if where else np.zeros((0, 3), dtype=np.int64)
    writer.save_arrays(
        out / OFFSETS,
        shard=located[:, 0],
        offset=located[:, 1],
        size=located[:, 2],
        label=np.asarray(labels if labels is not None else [-1] * len(paths), dtype=np.int64),
    )
    index = {
        "format": FORMAT,
        "count": len(paths),
        "shards": [{"file": file.name, "count": len(rows)} for file, rows in zip(files, where, strict=True)],
        "classes": names,
        "labeled": labels is not None,
        "native_side": native_side(paths),  # what data=folder's stored size starts from
        "sample": asdict(probe),
    }
    writer.write_json(out / INDEX, index, indent=1)
    log.info("%d images in %d shards written to %s", len(paths), len(files), out)
    return index


SHARD_BYTES = 3e9  # webdataset.ShardWriter's default: a shard ends at this many bytes too


def _write_tars(
    writer: Writer, out: Path, samples: Iterator[dict[str, Any]], shard_size: int, tar_writer: Any
) -> list[Path]:
    """``samples`` as tar shards ``PATTERN`` of at most ``shard_size`` samples (and about
    :data:`SHARD_BYTES`, where ``webdataset.ShardWriter`` cuts them; at least one shard), each
    written by ``tar_writer`` (``webdataset.TarWriter``) into a new file renamed into place."""
    files: list[Path] = []
    sample = next(samples, None)
    while sample is not None or not files:
        path = out / (PATTERN % len(files))
        with writer.open(path) as handle:
            sink = tar_writer(handle)
            count = size = 0
            while sample is not None and count < shard_size and size < SHARD_BYTES:
                size += sink.write(sample)
                count += 1
                sample = next(samples, None)
            sink.close()
        files.append(path)
    return files


def _members(file: Path, number: int) -> np.ndarray:
    """``(images, 3)``: shard number, byte offset and size of each image member, in key order."""
    rows = []
    with tarfile.open(file) as archive:
        for member in archive:
            key, _, suffix = member.name.partition(".")
            if member.isfile() and suffix not in META:
                rows.append((int(key), number, member.offset_data, member.size))
    rows.sort()
    return np.asarray([row[1:] for row in rows], dtype=np.int64).reshape(-1, 3)


@reader("shards")
def read_index(root: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``shards.json`` and ``offsets.npz`` of a shard folder as typed, checked values (one line
    naming the file otherwise): every field of its type and range, no ``${`` anywhere, the files
    inside the folder and regular, every image's bytes within its shard's real size."""
    folder = Path(root)
    path = folder / INDEX
    if not path.exists() and not path.is_symlink():
        raise DatasetNotFoundError(
            f"{path} does not exist: set data.root to a folder written by vtcc-shards <images> <folder>"
        )
    raw = read_json(path, FIX, inside=folder)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a {FORMAT} index: write the shards with this vtcc's vtcc-shards")
    index = check_record(raw, INDEX_RECORD, path, FIX)
    index["sample"] = asdict(ImageProbe.from_record(raw["sample"], f"{path} (sample)", FIX))
    arrays = load_npz(folder / OFFSETS, ("shard", "offset", "size", "label"), inside=folder)
    count = index["count"]
    for key in ("shard", "offset", "size", "label"):
        array = arrays.get(key)
        if array is None or array.shape != (count,) or array.dtype.kind not in "iu":
            raise ConfigError(
                f"{folder / OFFSETS}: {key} must be integers ({count},) as {INDEX} counts: {FIX}"
            )
    offsets = {key: arrays[key].astype(np.int64) for key in ("shard", "offset", "size", "label")}
    files = [entry["file"] for entry in index["shards"]]
    counts = [entry["count"] for entry in index["shards"]]
    unsafe = [name for name in files if Path(name).name != name or name in ("", ".", "..")]
    if unsafe or len(set(files)) != len(files):
        raise ConfigError(f"{path} names a shard {(unsafe or files)[0]!r} twice or outside its folder: {FIX}")
    absent = [name for name in files if not (folder / name).is_file()]
    if absent:
        raise ConfigError(f"shard {folder / absent[0]} is missing: copy every shard the index lists")
    sizes = np.asarray([check_regular(folder / name, inside=folder) for name in files], dtype=np.int64)
    if count < 2:
        raise ConfigError(f"{folder} holds {count} image(s): clustering needs at least 2")
    named, start, size = offsets["shard"], offsets["offset"], offsets["size"]
    if (
        sum(counts) != count
        or named.min() < 0
        or named.max() >= len(files)
        or np.bincount(named, minlength=len(files)).tolist() != counts
        or offsets["label"].min() < -1
    ):
        raise ConfigError(
            f"{folder / OFFSETS} disagrees with the counts of {INDEX} (or names a shard it lacks): {FIX}"
        )
    beyond = np.flatnonzero((start < 0) | (size < 0) | (start > sizes[named] - size))
    if len(beyond):
        image = int(beyond[0])
        raise ConfigError(
            f"{folder / files[named[image]]}: image {image} lies at bytes {start[image]} to "
            f"{start[image] + size[image]}, beyond the shard's {sizes[named[image]]}: {FIX}"
        )
    return index, offsets


@reader("shard_tar")
def read_shard(path: Path) -> Iterator[tuple[int, bytes, int]]:
    """``(image index, image bytes, label)`` of each sample of one shard, in order, read by
    WebDataset's own tar reader (what any WebDataset pipeline sees of vtcc's shards; vtcc's loaders
    read the image bytes at their offsets instead, a few microseconds a sample against WebDataset's
    hundred and more)."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    samples = 0
    try:  # opened here (a regular file only), never by WebDataset's URL opener ("pipe:...")
        with open_regular(path) as handle:
            opened = [{"url": str(path), "stream": handle}]
            for sample in group_by_keys(tar_file_expander(opened)):
                where = f"{path} ({sample['__key__']}.json)"
                meta = parse_json_record(sample["json"], SAMPLE_RECORD, where, FIX)
                images = [value for key, value in sample.items() if key.lower().lstrip(".") in _IMAGE_KEYS]
                label = int(sample["cls"]) if "cls" in sample else -1
                yield meta["index"], images[0], label
                samples += 1
        if not samples:
            raise ConfigError(f"shard {path} holds no sample: {FIX}")
    except ConfigError:
        raise
    except (OSError, tarfile.TarError, KeyError, IndexError, ValueError, TypeError) as error:
        raise ConfigError(
            f"shard {path} is damaged or not vtcc-shards' ({type(error).__name__}: {error}): "
            "write the shards again"
        ) from None


_IMAGE_KEYS = {suffix.lstrip(".") for suffix in IMAGE_SUFFIXES}


def decode_bytes(data: bytes, stored_size: int, in_chans: int, fit: str, where: str) -> np.ndarray:
    try:
        return decode_image(data, stored_size, in_chans, fit, where)
    except UnreadableFile as error:  # a bomb, a truncated or malformed image: one line naming it
        raise UnreadableFile(where, error.reason, "write the shards again") from None


def reader_steps(counts: Sequence[int], readers_per_rank: int, ranks: int, batch_size: int) -> int:
    """Batches every process can train each epoch whatever the shard order: a lower bound on the
    full batches of each process, the fewest over processes. Reader ``k`` of ``R = ranks x
    readers_per_rank`` gets the shards at positions ``k, k + R, ...`` of the order. Two bounds hold
    for a process whose readers get ``m_1, ..., m_K`` shards: each reader holds at least the
    ``m_k`` smallest shards (the sum of their full batches), and the process at least the
    ``sum(m_k)`` smallest, of which its readers lose at most ``K - 1`` batches to partial ones."""
    smallest = sorted(counts)
    readers = ranks * readers_per_rank
    per_rank = []
    for rank in range(ranks):
        first = rank * readers_per_rank
        shares = [
            len(range(reader, len(counts), readers)) for reader in range(first, first + readers_per_rank)
        ]
        each = sum(sum(smallest[:shards]) // batch_size for shards in shares)
        together = sum(smallest[: sum(shares)]) // batch_size - (len([m for m in shares if m]) - 1)
        per_rank.append(max(each, together, 0))
    return min(per_rank)


class ShardStream(IterableDataset):
    """The training images of a shard folder, streamed as batches ``(uint8 (B, C, S, S), labels,
    indices)``. ``epoch``, ``rank`` and ``ranks`` are set by :class:`EpochLoader` before each epoch's
    workers start; see the module docstring for who reads which shard."""

    def __init__(
        self,
        root: Path,
        files: Sequence[str],
        offsets: dict[str, np.ndarray],
        batch_size: int,
        stored_size: int,
        in_chans: int,
        fit: str,
        seed: int | None,
    ) -> None:
        self.root, self.files, self.offsets = root, list(files), offsets
        self.batch_size, self.stored_size, self.in_chans, self.fit = batch_size, stored_size, in_chans, fit
        self.seed = seed or 0  # seed=null: the shards' order still needs one
        self.epoch, self.rank, self.ranks = 0, 0, 1

    def shard_order(self) -> list[int]:
        """This epoch's order of the shards: the same in every process."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.files), generator=generator).tolist()

    def my_shards(self, worker: int, workers: int) -> list[int]:
        reader = self.rank * workers + worker
        return self.shard_order()[reader :: self.ranks * workers]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank * workers + worker])
        pending: list[tuple[int, np.ndarray, int]] = []
        shard_of = self.offsets["shard"]
        for shard in self.my_shards(worker, workers):
            path = self.root / self.files[shard]
            data = read_bytes(path, inside=self.root)  # the whole shard in one read, its images by offset
            members = np.flatnonzero(shard_of == shard)
            for index in members[rng.permutation(len(members))]:
                start, size = int(self.offsets["offset"][index]), int(self.offsets["size"][index])
                image = decode_bytes(
                    data[start : start + size],
                    self.stored_size,
                    self.in_chans,
                    self.fit,
                    f"image {index} of {path}",
                )
                pending.append((int(index), image, int(self.offsets["label"][index])))
                if len(pending) == self.batch_size:
                    yield _stack(pending)
                    pending = []  # a reader's last partial batch is not trained (drop_last)


def _stack(samples: list[tuple[int, np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    indices, images, labels = zip(*samples, strict=True)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels), torch.tensor(indices)


class EpochLoader(DataLoader):
    """A loader of :class:`ShardStream` batches that tells the stream its epoch and process before
    each epoch's workers start, and ends the epoch after ``steps`` batches (the same in every process)."""

    def __init__(self, stream: ShardStream, steps: int, epoch: Callable[[], int], **options: Any) -> None:
        super().__init__(stream, batch_size=None, persistent_workers=False, **options)
        self.steps = steps
        self.current_epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Any]:
        stream: ShardStream = self.dataset  # type: ignore[assignment]
        stream.epoch = self.current_epoch()
        stream.rank, stream.ranks = rank_and_count()
        batches = super().__iter__()
        for _ in range(self.steps):
            yield next(batches)


class ShardImages(Dataset):
    """Images of a shard folder by index (read at their offsets): evaluation, reports, extraction."""

    def __init__(
        self, root: Path, files: Sequence[str], offsets: dict[str, np.ndarray], decode: Callable
    ) -> None:
        self.root, self.files, self.offsets, self.decode = root, list(files), offsets, decode

    def __len__(self) -> int:
        return len(self.offsets["label"])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = []
        for index in indices:
            shard = int(self.offsets["shard"][index])
            path = self.root / self.files[shard]
            start, size = int(self.offsets["offset"][index]), int(self.offsets["size"][index])
            data = read_range(path, start, size, inside=self.root)
            images.append(self.decode(data, f"image {index} of {path}"))
        index = torch.as_tensor(indices, dtype=torch.long)
        return torch.from_numpy(np.stack(images)), torch.from_numpy(self.offsets["label"][indices]), index


@register(
    "datamodule",
    "shards",
    auto=("image_size", "in_chans", "mean", "std"),  # from the images (vtcc.config.data_defaults)
    probe="shards",  # the sample vtcc-shards took when it wrote them
    forwards=ImageSettings,  # **settings: the keys every image datamodule shares
)
class ShardDataModule(DecodedPerBatch):
    """``data=shards``: images in tar shards written by ``vtcc-shards`` (see the module docstring).

    ``order``: ``stream`` (each shard read whole by one reader, the shards reshuffled every epoch:
    sequential reads, for network or object storage) or ``global`` (one permutation of every image
    an epoch, each read at its offset: ``data=folder``'s order, for local disks). Every image
    trains and is scored (the clustering setting). ``num_workers`` loader workers per process read
    the training shards; ``stored_size`` is the side images are decoded at (null: the sampled
    images' median longer side, capped by ``max_stored_size``), ``fit`` as ``data=folder``'s. The
    shared settings (``**settings``) are :class:`~vtcc.data.images.ImageSettings`.
    """

    def __init__(
        self,
        root: str,
        stored_size: int | None = None,
        max_stored_size: int = 512,
        fit: Fit = "whole",
        seed: int | None = 0,
        order: Literal["stream", "global"] = "stream",
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        if fit not in FITS:
            raise ConfigError(f"data.fit={fit!r} is unknown: use one of {', '.join(FITS)}")
        if order not in ("stream", "global"):
            raise ConfigError(f"data.order={order!r} is unknown: use stream or global")
        self.order = order
        self.root = Path(root)
        self.requested_size, self.max_stored_size, self.fit = stored_size, max_stored_size, fit
        self.seed = seed
        self.index: dict[str, Any] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        require_webdataset()
        self.index, self.offsets = read_index(self.root)
        count = int(self.index["count"])
        if count < self.batch_size:
            raise ConfigError(f"{count} images in {self.root}, fewer than data.batch_size={self.batch_size}")
        self.files = [entry["file"] for entry in self.index["shards"]]
        self.counts = [int(entry["count"]) for entry in self.index["shards"]]
        native = int(self.index.get("native_side") or self.index["sample"]["median_side"])
        self._stored_size = clamp_stored_size(  # as data=folder decides it for the same images
            native, self.image_size, self.requested_size, self.max_stored_size, key="data.stored_size"
        )
        self.train_indices = self.eval_indices = torch.arange(count)
        labels = torch.from_numpy(self.offsets["label"])
        self._take_class_count(int(torch.unique(labels).numel()) if self.index["labeled"] else None)

    @property
    def labeled(self) -> bool:
        return self.index is not None and bool(self.index["labeled"])

    def __len__(self) -> int:
        return int(self.index["count"]) if self.index is not None else 0

    def _decode(self, data: bytes, where: str) -> np.ndarray:
        return decode_bytes(data, self.stored_size, self.in_chans, self.fit, where)

    def _dataset(self, train: bool) -> Dataset:
        return ShardImages(self.root, self.files, self.offsets, self._decode)

    def labels_in_order(self) -> torch.Tensor:
        return torch.from_numpy(self.offsets["label"])

    def fingerprint(self) -> str:
        """A hash of the index and of each shard's size and modification time (no decoding)."""
        digest = hashlib.sha256(read_bytes(self.root / INDEX, inside=self.root))
        for name in self.files:
            stat = (self.root / name).stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:20]

    def train_dataloader(self) -> DataLoader:
        """The shards streamed (see the module docstring), ``len`` batches an epoch in every process;
        ``order=global``: one permutation of all images an epoch, read by offset, as ``data=folder``
        draws it (the same batches: a shard run is then the folder run)."""
        if self.order == "global":
            return super().train_dataloader()
        _, ranks = rank_and_count()
        readers = max(1, self.num_workers)
        steps = reader_steps(self.counts, readers, ranks, self.batch_size)
        if steps < 1:
            raise ConfigError(
                f"data.batch_size={self.batch_size}: no reader of the {len(self.files)} shards over {ranks} "
                f"process(es) x {readers} worker(s) holds a full batch; lower the batch size or the "
                "workers, or write smaller shards"
            )
        stream = ShardStream(
            self.root,
            self.files,
            self.offsets,
            self.batch_size,
            self.stored_size,
            self.in_chans,
            self.fit,
            self.seed,
        )
        return EpochLoader(
            stream,
            steps,
            lambda: self.trainer.current_epoch if self.trainer is not None else 0,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )


def main(argv: Sequence[str] | None = None) -> None:
    """``vtcc-shards <folder> <output> --shard-size N``: a folder of images as tar shards."""
    parser = argparse.ArgumentParser(
        prog="vtcc-shards",
        description="Write a folder of images (<folder>/<class>/<image> or flat) as WebDataset tar shards "
        "for data=shards.",
    )
    parser.add_argument("folder", help="the images, in data=folder's layout")
    parser.add_argument("output", help="a new (or empty) folder for the shards")
    parser.add_argument("--shard-size", type=int, default=1000, help="images a shard (default 1000)")
    parser.add_argument("--classes", nargs="*", default=None, help="only these class folders, in this order")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        write_shards(arguments.folder, arguments.output, arguments.shard_size, arguments.classes)
    except Exception as error:  # noqa: BLE001 - a user's mistake is one line, anything else a traceback
        cause = user_error(error)
        if cause is None:
            raise
        print(f"vtcc-shards: error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
