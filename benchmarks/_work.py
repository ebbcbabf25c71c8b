"""The work every benchmark runner does: one seeded model, dataset and data order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from typing_extensions import override

WORKLOADS: dict[str, dict[str, Any]] = {
    # ~650 us per plain step on a 2-core CPU: the loop's own cost dominates.
    "overhead": {"sizes": (32, 64, 10), "samples": 8192, "batch": 32, "epochs": 3},
    # Large matrix multiplies: the loop's cost is noise.
    "compute": {"sizes": (784, 512, 512, 10), "samples": 8192, "batch": 128, "epochs": 2},
}


def manual_seed(seed: int) -> None:
    """``torch.manual_seed``, typed: its ``seed`` parameter is unannotated (unknown under pyright strict)."""
    torch.manual_seed(seed)  # pyright: ignore[reportUnknownMemberType]  # torch leaves `seed` unannotated


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, typed: torch's optimizers override ``step`` with an unannotated ``closure``."""
    optimizer.step()  # pyright: ignore[reportUnknownMemberType]  # SGD/Adam.step(closure=None) is unannotated


@dataclass(frozen=True)
class Work:
    sizes: tuple[int, ...]
    samples: int
    batch: int
    epochs: int
    device: str
    precision: str
    collate: Callable[[list[Any]], Any] | None = None
    """How every runner collates its single-process batches (``None``: torch's); ``step_pairs.py``
    steps a second plain loop in it, ``overhead.py --turns`` hands the turn on in it."""

    def with_overrides(self, options: dict[str, str]) -> Work:
        """This work with a runner's ``epochs=`` / ``samples=`` options applied."""
        return replace(self, epochs=int(options.get("epochs", self.epochs)),
                       samples=int(options.get("samples", self.samples)))

    def model(self) -> nn.Module:
        manual_seed(0)
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        return nn.Sequential(*layers[:-1])

    def dataset(self) -> TensorDataset:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(self.samples, self.sizes[0], generator=g)
        y = torch.randint(0, self.sizes[-1], (self.samples,), generator=g)
        return TensorDataset(x, y)

    def loader_kwargs(self) -> dict[str, Any]:
        return {"batch_size": self.batch, "shuffle": True, "generator": torch.Generator().manual_seed(2)}

    def loader(self) -> DataLoader[Any]:
        return DataLoader(self.dataset(), **self.loader_kwargs(), collate_fn=self.collate)

    @property
    def steps(self) -> int:
        """Optimizer steps of one process (all processes see the same number here)."""
        return self.epochs * -(-self.samples // self.batch)


class AccelerateOrderSampler(DistributedSampler[int]):
    """torch's ``DistributedSampler`` interface with Accelerate's sharding: the epoch's shuffle is drawn
    as ``RandomSampler`` draws it, cut into batches, and process ``r`` takes batches ``r, r+N, ...``.

    A hand-written DDP loop with it sees exactly the batches a prepared dataloader gives each process,
    so its final weights can be compared with pta's bit for bit (the stock ``DistributedSampler``
    shards samples instead of batches: same cost, other data order).
    """

    def __init__(self, dataset: TensorDataset, batch: int, generator: torch.Generator, num_replicas: int, rank: int) -> None:
        # torch annotates `dataset` as a bare `Dataset` (Dataset[Unknown] under pyright strict)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True)  # pyright: ignore[reportUnknownMemberType]  # torch leaves DistributedSampler.__init__ partly unannotated
        self.batch, self.generator, self.size = batch, generator, len(dataset)
        if self.size % (batch * num_replicas):
            raise ValueError("AccelerateOrderSampler needs whole batches for every process (no padding)")

    @override
    def __iter__(self) -> Iterator[int]:
        # What a prepared dataloader draws from this generator per epoch (measured with Accelerate
        # 1.15 on 2 processes): its workers' base seed, the shuffle, and one more permutation.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = cast("list[int]", torch.randperm(self.size, generator=self.generator).tolist())  # pyright: ignore[reportUnknownMemberType]  # tolist() is untyped
        torch.randperm(self.size, generator=self.generator)
        for start in range(self.rank * self.batch, self.size, self.batch * self.num_replicas):
            yield from order[start:start + self.batch]

    @override
    def __len__(self) -> int:
        return self.size // self.num_replicas
