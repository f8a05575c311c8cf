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

Here: streaming and reading the shards (``data=shards``). The folder's layout and its typed
readers: :mod:`vtcc.data.shard_index`; the converter ``vtcc-shards``: :mod:`vtcc.data.shard_writer`
(its ``main`` is imported here, where the console script and ``python -m vtcc.data.shards`` find it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from vtcc.data.folder import FITS, Fit, clamp_stored_size, decode_image
from vtcc.data.images import DecodedPerBatch, ImageSettings
from vtcc.data.shard_index import INDEX, read_index, require_webdataset
from vtcc.data.shard_writer import main  # the vtcc-shards console script's entry point
from vtcc.errors import ConfigError
from vtcc.io.reader import UnreadableFile, read_bytes, read_range
from vtcc.registry import register
from vtcc.utils.dist import rank_and_count


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


if __name__ == "__main__":
    main()
