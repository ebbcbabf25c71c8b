"""The batches of one training epoch, or what a resumed training state left of it, with every RNG
where the uninterrupted run had it at each batch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pta._accelerate import prepared_batches, skip_first_batches
from pta.state import capture_rng, restore_rng, sampler_generator


def epoch_batches(dataloader: Iterable[Any], resume: dict[str, Any] | None, dataset: object = None
                  ) -> tuple[dict[str, Any], Iterator[tuple[int, Any]]]:
    """The RNG state at the epoch's start (saved in training states) and the ``(step, batch)`` pairs left.

    After a resume, the trained batches are skipped by index (without loading them) after the epoch's
    shuffle was drawn again from the restored epoch-start state; at the first batch left the RNGs of
    the save point are put back. The sampler's generator is NOT put back then: the skipping loader
    replays the whole epoch's sampling, and a sampler draws again when it is exhausted (a second
    ``randperm``), which the loader's look-ahead reaches a batch or two before the end; restoring the
    save point's generator after that draw would lose it and change every later epoch's shuffle.
    """
    generator = sampler_generator(dataloader)
    if resume is not None and resume["epoch_rng"] is None:  # saved before the epoch drew its shuffle:
        restore_rng(resume["rng"], generator, dataset)  # the whole epoch, from the save point
        resume = None
    if resume is None:
        return capture_rng(generator, dataset), enumerate(prepared_batches(dataloader))
    epoch_rng, start = resume["epoch_rng"], resume["batches_done"]
    restore_rng(epoch_rng, generator, dataset)  # the epoch's shuffle (or stream position) again
    return epoch_rng, _resumed(skip_first_batches(dataloader, start) if start else dataloader,  # type: ignore[arg-type]  # any DataLoader
                               start, resume["rng"])


def _resumed(loader: Iterable[Any], start: int, rng: dict[str, Any]) -> Iterator[tuple[int, Any]]:
    restored = False
    for index, batch in enumerate(prepared_batches(loader)):
        if not restored:
            restore_rng(rng)
            restored = True
        yield start + index, batch
    if not restored:
        restore_rng(rng)  # nothing was left of the epoch
