"""Batch orders that a plain shuffled DataLoader cannot express."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


class PoolsInSequence(DistributedSampler):
    """Every batch of the first pool, then every batch of the next, each pool shuffled anew per epoch.

    Contrastive Clustering's STL-10 epoch (``train_STL10.py``): the 100,000 unlabelled images train
    the instance loss alone, then train + test train both losses. Yields lists of dataset indices,
    one batch of ``batch_size`` per process; the shuffle (``seed`` + epoch) is shared by all
    processes and each takes its slice of every global batch, so the processes never repeat an image.
    Incomplete batches are dropped, as the official ``drop_last=True``. It subclasses
    ``DistributedSampler`` so that Lightning keeps it and calls :meth:`set_epoch`.
    """

    def __init__(
        self,
        dataset: Dataset,
        pools: Sequence[torch.Tensor],
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.pools = [torch.as_tensor(pool, dtype=torch.long) for pool in pools]
        self.batch_size = batch_size

    def batches_per_pool(self) -> list[int]:
        return [len(pool) // (self.batch_size * self.num_replicas) for pool in self.pools]

    def __len__(self) -> int:
        return sum(self.batches_per_pool())

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        global_batch = self.batch_size * self.num_replicas
        start = self.rank * self.batch_size
        for pool, count in zip(self.pools, self.batches_per_pool(), strict=True):
            order = pool[torch.randperm(len(pool), generator=generator)]
            for k in range(count):
                chunk = order[k * global_batch : (k + 1) * global_batch]
                yield chunk[start : start + self.batch_size].tolist()


class IndependentBatches(Sampler[list[int]]):
    """``steps`` batches of ``batch_size`` positions, each drawn afresh without replacement from
    ``range(size)`` (TURTLE's ``np.random.choice(n, b, replace=False)`` at every step): batches of
    one epoch may overlap, and with ``batch_size == size`` every batch is every image. Draws from
    torch's global random stream, which checkpoints keep."""

    def __init__(self, size: int, batch_size: int, steps: int) -> None:
        self.size, self.batch_size, self.steps = int(size), int(batch_size), int(steps)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            yield torch.randperm(self.size)[: self.batch_size].tolist()
