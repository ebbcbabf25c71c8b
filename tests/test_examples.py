"""Every example in examples/ runs, with tiny settings, and shows what it claims.

Each example has ``main(argv)``; it is loaded from its path (examples/ is not a package; the examples
import ``digits_datasets`` from examples/quickstart.py, so examples/ goes on ``sys.path``). Examples
with optional dependencies (torchmetrics, timm, transformers) are skipped when those are missing or broken; the
dev extra installs torchmetrics and transformers, so only timm (whose torchvision needs a CUDA torch) skips in CI.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests._optional import import_or_skip
from tests.distributed._launch import run_torchrun

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TESTED = {"quickstart", "custom_trainer", "mixin_device", "mixin_amp", "mixin_grad_accum", "mixin_distributed_eval",
          "mixin_scheduler", "resume", "metrics_torchmetrics", "timm_transformers"}


@pytest.fixture(autouse=True)
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    pytest.importorskip("sklearn")  # the digits data
    monkeypatch.syspath_prepend(str(EXAMPLES))  # pyright: ignore[reportUnknownMemberType]  # pytest leaves its `path` parameter unannotated
    yield


def run_example(name: str, *argv: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"pta_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(argv))


def test_every_example_is_tested_here_or_in_test_example() -> None:
    assert {path.stem for path in EXAMPLES.glob("*.py")} == TESTED


def test_custom_trainer_composes_mixins_and_overrides_a_hook() -> None:
    metrics = run_example("custom_trainer", "--epochs", "1")
    assert set(metrics) == {"train_loss_epoch", "train_data_loss", "eval_loss_epoch"}
    assert metrics["train_loss_epoch"] > metrics["train_data_loss"] > 0  # the L2 penalty is in the trained loss
    assert metrics["eval_loss_epoch"] < 1.0  # chance is ln(10) = 2.30; one seeded epoch reaches 0.81


def test_mixin_device_places_and_unwraps() -> None:
    seen = run_example("mixin_device", "--epochs", "1")
    assert seen["trainer.device"] == seen["parameters"] == seen["batch"] == seen["loss weights"] == "cpu"
    assert seen["model after the run is yours"] == "True" and seen["processes"] == "1"


def test_mixin_amp_runs_the_forward_pass_in_bf16_with_fp32_weights() -> None:
    seen = run_example("mixin_amp", "--epochs", "1")
    assert seen["first layer computed in"] == "torch.bfloat16"
    assert seen["parameters"] == "torch.float32" and seen["run_config.mixed_precision"] == "bf16"
    assert float(seen["eval_loss_epoch"]) < 1.0  # chance is ln(10) = 2.30; one seeded epoch reaches 0.80


def test_mixin_grad_accum_matches_the_large_batch_update() -> None:
    result = run_example("mixin_grad_accum", "--epochs", "1")
    assert result["max_weight_difference"] < 1e-5
    assert result["train_loss_accumulated"] == pytest.approx(result["train_loss_large_batch"], rel=1e-5)


def _check_exact_eval(result: dict[str, float], processes: int) -> None:
    assert result["processes"] == processes
    assert result["gathered_in_last_eval"] == result["prediction_rows"] == result["test_samples"] == 360
    assert result["eval_loss_epoch"] == pytest.approx(result["reference_loss"], rel=1e-5)
    assert result["max_prediction_difference"] < 1e-5


def test_mixin_distributed_eval_in_one_process() -> None:
    _check_exact_eval(run_example("mixin_distributed_eval", "--epochs", "1"), processes=1)


@pytest.mark.slow
def test_mixin_distributed_eval_under_torchrun_counts_every_sample_once() -> None:
    output = run_torchrun(EXAMPLES / "mixin_distributed_eval.py", "--epochs", "1", timeout=120).stdout
    result = {name: float(value) for name, value in re.findall(r"^(\w+): ([-\d.e+]+)$", output, flags=re.MULTILINE)}
    _check_exact_eval(result, processes=2)


def test_mixin_scheduler_resolves_placeholders_to_the_real_update_count() -> None:
    result = run_example("mixin_scheduler", "--epochs", "2", "--max-lr", "0.01")
    assert result["optimizer_updates"] == result["expected_updates"] == 2 * 45
    assert result["peak_lr"] == pytest.approx(0.01, rel=1e-2)
    assert result["final_lr"] < 1e-4  # OneCycleLR ran to its very end, and not past it (that raises)


def test_resume_ends_bit_identical_to_the_uninterrupted_run(tmp_path: Path) -> None:
    result = run_example("resume", "--epochs", "2", "--save-at-step", "5", "--state-dir", str(tmp_path / "state"),
                         "--no-progress-bar")
    assert result["max_weight_difference"] == 0.0
    assert result["same_history"] == 1.0
    assert (tmp_path / "state").is_dir()


def test_torchmetrics_metrics_are_recorded_in_the_run_history() -> None:
    import_or_skip("torchmetrics")
    result = run_example("metrics_torchmetrics", "--epochs", "1", "--no-progress-bar")
    assert 0.5 < result["accuracy"] <= 1.0 and 0.5 < result["f1"] <= 1.0


def test_a_timm_model_trains_with_default_trainer() -> None:
    import_or_skip("timm")
    result = run_example("timm_transformers", "--model", "timm", "--epochs", "1", "--max-steps", "5",
                         "--no-progress-bar")
    assert math.isfinite(result["timm_eval_loss"])


def test_a_transformers_model_trains_with_default_trainer() -> None:
    import_or_skip("transformers")
    result = run_example("timm_transformers", "--model", "transformers", "--epochs", "1", "--max-steps", "5",
                         "--no-progress-bar")
    assert math.isfinite(result["transformers_eval_loss"])
