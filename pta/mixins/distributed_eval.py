"""DistributedEvalMixin: evaluation over several processes that counts every sample exactly once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized

import torch
from torch import Tensor
from typing_extensions import override

from pta._unwrap import set_even_batches
from pta._meter import LossMeter
from pta._types import BatchT
from pta._validation import ConfigurationError
from pta.mixins.device import DevicePlacementMixin


class DistributedEvalMixin(DevicePlacementMixin[BatchT]):
    """Exact cross-process evaluation: no duplicated samples, no hangs on uneven last batches.

    Needs: ``DevicePlacementMixin``, as its base class (its prepared, sharded eval dataloader).
    Provides: eval batches sharded without padding duplicates; every process runs the same number of
        eval steps (a process that runs out repeats its last batch with ``eval_step_is_padding=True``,
        which is left out of the loss and of ``gather``), so collectives inside steps line up;
        ``gather`` that returns each sample once, in dataset order; epoch losses averaged over all
        processes, weighted by batch size; a clear error when some process would get no eval batch.
    Overrides: ``configure_run``, ``iterate_eval_batches``, ``gather``, ``reduce_epoch_loss``.
    State: ``_eval_step_is_padding`` (declared on ``TrainerBase``).
    """

    @override
    def configure_run(self) -> None:
        super().configure_run()
        dataloader = self._eval_dataloader
        if dataloader is None or self._accelerator.num_processes == 1:
            return
        set_even_batches(dataloader, False)
        batch_size = self.run_config.eval_per_device_batch_size
        if isinstance(self.eval_dataset, Sized) and batch_size:
            num_batches = -(-len(self.eval_dataset) // batch_size)
            if num_batches < self._accelerator.num_processes:
                raise ConfigurationError(
                    f"eval dataset of {len(self.eval_dataset)} samples in batches of {batch_size} gives "
                    f"{num_batches} batch(es) for {self._accelerator.num_processes} processes: lower the eval "
                    f"per_device_batch_size to at most {max(1, len(self.eval_dataset) // self._accelerator.num_processes)}"
                )

    @override
    def iterate_eval_batches(self, dataloader: Iterable[BatchT]) -> Iterator[BatchT]:
        if self._accelerator.num_processes == 1:
            yield from super().iterate_eval_batches(dataloader)
            return
        if not isinstance(dataloader, Sized):
            raise ConfigurationError("distributed evaluation needs an eval dataloader with a length")
        local_steps = len(dataloader)
        counts = self._accelerator.gather(torch.tensor([local_steps], device=self.device))
        total_steps = int(counts.max().item())
        last: BatchT | None = None
        for batch in super().iterate_eval_batches(dataloader):
            last = batch
            yield batch
        if last is None and total_steps:
            raise RuntimeError("an eval process received no batch; lower the eval per_device_batch_size")
        self._eval_step_is_padding = True
        try:
            for _ in range(total_steps - local_steps):
                assert last is not None
                yield last
        finally:
            self._eval_step_is_padding = False

    @override
    def gather(self, tensor: Tensor, padding_value: float | None = None) -> Tensor:
        if self._eval_step_is_padding:
            tensor = (tensor.reshape(1) if tensor.ndim == 0 else tensor)[:0]
        return super().gather(tensor, padding_value)

    @override
    def reduce_epoch_loss(self, meter: LossMeter) -> float:
        if self._accelerator.num_processes > 1:
            total = meter.total if meter.total is not None else torch.zeros((), device=self.device)
            stats = torch.stack([total.to(self.device, torch.float64),
                                 torch.tensor(float(meter.count), device=self.device, dtype=torch.float64)])
            total_sum, count = self._accelerator.reduce_sum(stats).unbind()
            meter = LossMeter()
            meter.total, meter.count = total_sum, int(count.item())
        return super().reduce_epoch_loss(meter)
