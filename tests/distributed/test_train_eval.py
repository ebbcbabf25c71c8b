"""DefaultTrainer on two real CPU processes (plain ``torchrun``, gloo): DDP sync, distributed evaluation
losses, gathered predictions and ``max_num_train_steps`` (one launch shared by the module)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from tests._helpers import mlp, optimizer_step
from tests.distributed._launch import ScenarioLaunch
from tests.distributed.workers import train_eval as worker

SCENARIO = f"{worker.__name__}:main"
pytestmark = [pytest.mark.slow, pytest.mark.two_process_scenario(SCENARIO)]

Results = list[dict[str, Any]]


@pytest.fixture(scope="module")
def results(two_process_scenarios: ScenarioLaunch) -> Results:
    return two_process_scenarios.results(SCENARIO)


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return worker.datasets()


def model_with(weights: dict[str, Tensor]) -> nn.Module:
    model = mlp(seed=0)
    model.load_state_dict(weights)
    return model.eval()


def single_process_mse(weights: dict[str, Tensor], dataset: Any) -> float:
    x, y = dataset.tensors
    with torch.no_grad():
        return float(nn.functional.mse_loss(model_with(weights)(x), y))


def assert_same_tensors(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs between ranks: max diff {(a[key] - b[key]).abs().max()}"


# ---------------------------------------------------------------- claim 1: a real 2-process DDP run
def test_is_a_real_two_process_run(results: Results) -> None:
    for process_rank, result in enumerate(results):
        train = result["train"]
        assert train["num_processes"] == 2
        assert train["is_distributed"] is True
        assert train["world_size"] == 2
        assert train["model_types"] == ["DistributedDataParallel"]
        # In a "split brain" every process believes it is the main one.
        assert train["is_world_process_zero"] is (process_rank == 0)
        assert train["is_world_main_process"] is (process_rank == 0)


def test_parameters_are_bit_identical_on_both_ranks_after_training(results: Results) -> None:
    rank0, rank1 = (r["train"]["final"] for r in results)
    assert_same_tensors(rank0, rank1)
    initial = results[0]["initial"]
    assert any(not torch.equal(initial[k], rank0[k]) for k in initial), "training changed nothing"


def test_ddp_update_equals_single_process_update_on_the_combined_batch(results: Results, data: dict[str, Any]) -> None:
    """Unshuffled, step k of rank r sees batch 2k+r; DDP's averaged gradient is the gradient of the
    combined batch of 2*4 samples, so a plain single-process loop with batches of 8 ends at the same weights."""
    model = mlp(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=worker.LR)
    x, y = data["train"].tensors
    combined = 2 * worker.BATCH_SIZE
    for _ in range(worker.EPOCHS):
        for start in range(0, len(x), combined):
            loss = nn.functional.mse_loss(model(x[start:start + combined]), y[start:start + combined])
            torch.autograd.backward(loss)
            optimizer_step(optimizer)
            optimizer.zero_grad()
    expected = {k: v.detach() for k, v in model.state_dict().items()}
    for key, value in results[0]["train"]["final"].items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-5)
    assert results[0]["train"]["updates"] == results[1]["train"]["updates"] == worker.EPOCHS * len(x) // combined


def test_train_loss_epoch_is_the_sample_weighted_mean_over_both_ranks(results: Results) -> None:
    steps_per_epoch = worker.TRAIN_SIZE // (2 * worker.BATCH_SIZE)
    recorded = results[0]["train"]["train_loss_epoch"]
    assert recorded == results[1]["train"]["train_loss_epoch"]
    assert len(recorded) == worker.EPOCHS
    for epoch, value in enumerate(recorded):
        window = slice(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        total = sum(loss * size for r in results
                    for loss, size in zip(r["train"]["train_losses"][window], r["train"]["train_sizes"][window],
                                          strict=True))
        count = sum(sum(r["train"]["train_sizes"][window]) for r in results)
        assert value == pytest.approx(total / count, rel=1e-6)


# ---------------------------------------------------------------- claim 2: exact distributed eval loss
def test_eval_loss_epoch_matches_single_process_loss(results: Results, data: dict[str, Any]) -> None:
    recorded = results[0]["train"]["eval_loss_epoch"]
    assert recorded == results[1]["train"]["eval_loss_epoch"]
    epochs = results[0]["train"]["eval_epochs"]
    assert len(recorded) == len(epochs) == worker.EPOCHS
    for value, epoch in zip(recorded, epochs, strict=True):
        assert value == pytest.approx(single_process_mse(epoch["weights"], data["eval"]), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("name", ["eval", "uneven_eval"])
def test_evaluate_loss_matches_single_process_loss(results: Results, data: dict[str, Any], name: str) -> None:
    """37 and 33 samples in batches of 4 on 2 processes: neither is a multiple of 8."""
    recorded = results[0][name]["evaluation_loss"]
    assert recorded == results[1][name]["evaluation_loss"]
    assert len(recorded) == 1
    expected = single_process_mse(results[0]["train"]["final"], data[name])
    assert recorded[0] == pytest.approx(expected, rel=1e-6, abs=1e-6)


# ---------------------------------------------------------------- claim 3: gather, each sample once, in order
def gathered_epochs(results: Results, process_rank: int) -> list[tuple[str, dict[str, Any]]]:
    result = results[process_rank]
    return ([("eval", e) for e in result["train"]["eval_epochs"]]
            + [("eval", e) for e in result["eval"]["epochs"]]
            + [("uneven_eval", e) for e in result["uneven_eval"]["epochs"]])


@pytest.mark.parametrize("process_rank", [0, 1])
def test_gathered_eval_outputs_cover_the_dataset_once_in_order(
    results: Results, data: dict[str, Any], process_rank: int
) -> None:
    epochs = gathered_epochs(results, process_rank)
    assert len(epochs) == worker.EPOCHS + 2
    for name, epoch in epochs:
        x, y = data[name].tensors
        assert epoch["inputs"].shape[0] == len(x), f"{name}: {epoch['inputs'].shape[0]} rows for {len(x)} samples"
        assert torch.equal(epoch["inputs"], x), f"{name}: gathered inputs are not the dataset in order"
        assert torch.equal(epoch["targets"], y)
        with torch.no_grad():
            expected = model_with(epoch["weights"])(x)
        torch.testing.assert_close(epoch["outputs"], expected, rtol=1e-6, atol=1e-6)


def test_both_ranks_gather_the_same_rows(results: Results) -> None:
    for (_, a), (_, b) in zip(gathered_epochs(results, 0), gathered_epochs(results, 1), strict=True):
        for key in ("inputs", "targets", "outputs"):
            assert torch.equal(a[key], b[key])


def test_uneven_shards_pad_the_short_rank_with_marked_steps(results: Results) -> None:
    """33 samples = 9 batches of 4 (the last has one sample): rank 0 gets 5, rank 1 gets 4 plus one padding step."""
    assert [r["uneven_eval"]["local_batches"] for r in results] == [5, 4]
    rank0, rank1 = (r["uneven_eval"]["epochs"][0] for r in results)
    assert rank0["padding"] == [False] * 5
    assert rank1["padding"] == [False] * 4 + [True]
    assert rank0["local_rows"] == [4, 4, 4, 4, 1]
    # The even set (37) has 5 steps on both ranks, but rank 1's last batch has one row and rank 0's four.
    assert [r["eval"]["epochs"][0]["local_rows"] for r in results] == [[4, 4, 4, 4, 4], [4, 4, 4, 4, 1]]
    assert all(not any(r["eval"]["epochs"][0]["padding"]) for r in results)


# ---------------------------------------------------------------- claim 4: max_num_train_steps
@pytest.mark.parametrize(("name", "updates", "steps"), [
    ("max_steps", worker.MAX_STEPS, worker.MAX_STEPS),
    ("max_steps_accum", worker.MAX_STEPS_ACCUM, worker.MAX_STEPS_ACCUM * worker.ACCUM),
])
def test_max_num_train_steps_gives_exactly_that_many_updates_on_each_rank(
    results: Results, name: str, updates: int, steps: int
) -> None:
    """48 samples / (2 ranks x 4) = 6 batches per epoch and rank, so both limits end inside epoch 2."""
    for result in results:
        assert result[name]["updates"] == updates
        assert result[name]["steps"] == steps
        assert result[name]["epochs"] == 2
    assert_same_tensors(results[0][name]["final"], results[1][name]["final"])


# ---------------------------------------------------------------- an eval set smaller than the world
def test_an_eval_set_without_a_batch_for_every_process_is_refused_with_the_fix(results: Results) -> None:
    for result in results:
        assert result["tiny_eval"] == (
            "eval dataset of 3 samples in batches of 4 gives 1 batch(es) for 2 processes: lower the eval "
            "per_device_batch_size to at most 1"
        )
