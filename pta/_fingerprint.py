"""What a training state records about its run, and the checks a resume makes against it.

A state's ``pta_meta.json`` holds a *fingerprint* of the run (the settings that decide what each
step does) and a CRC-32 checksum of every file (``pta._checksums``); ``train(resume_from=...)`` compares
both with the resuming run before any training work and refuses with every difference listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sized
from pathlib import Path
from typing import Any, cast

from torch import nn
from torch.optim import Optimizer

from pta._validation import ConfigurationError
from pta.checkpoint import CheckpointError

CHANGEABLE = frozenset({"per_device_batch_size", "gradient_accumulation_steps", "dataset_length"})
"""Settings ``train(resume_allow_changes=...)`` may accept as changed: the state still loads, and the
run continues from it, but not as the interrupted run would have (a different data order or update
size). The others (process count, optimizer, parameters, stateful callbacks) cannot load correctly."""

_SHOWN = 5  # parameter differences listed per kind before "... and N more"


def run_fingerprint(
    *,
    per_device_batch_size: int | None,
    gradient_accumulation_steps: int,
    num_processes: int,
    train_dataset: object,
    optimizer: Optimizer | None,
    model: nn.Module,
    stateful_callbacks: Iterable[str],
) -> dict[str, Any]:
    """Plain JSON values; equal fingerprints mean a resumed run continues the saved one exactly."""
    return {
        "per_device_batch_size": per_device_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "num_processes": num_processes,
        "dataset_length": len(train_dataset) if isinstance(train_dataset, Sized) else None,
        "optimizer": None if optimizer is None else f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
        "optimizer_param_groups": None if optimizer is None else [
            [list(param.shape) for param in group["params"]] for group in optimizer.param_groups
        ],
        "model_parameters": {name: list(param.shape) for name, param in model.named_parameters()},
        "stateful_callbacks": list(stateful_callbacks),
    }


def fingerprint_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, str]:
    """``{setting: "saved X, now Y"}`` for every setting that differs (settings a state lacks are skipped)."""
    differences: dict[str, str] = {}
    for key, now in current.items():
        if key not in saved or saved[key] == now:
            continue
        before: object = saved[key]
        if key == "model_parameters" and isinstance(before, dict):
            differences[key] = _parameter_differences(cast("dict[str, list[int]]", before), now)
        elif key == "optimizer_param_groups" and isinstance(before, list):
            groups = cast("list[Sized]", before)
            differences[key] = (f"saved {len(groups)} group(s) of {[len(g) for g in groups]} parameters with other "
                                f"shapes than now: {len(now)} group(s) of {[len(g) for g in now]}")
        else:
            differences[key] = f"saved {before!r}, now {now!r}"
    return differences


def _parameter_differences(saved: dict[str, list[int]], now: dict[str, list[int]]) -> str:
    parts: list[str] = []
    for label, names in (
        ("missing now", [n for n in saved if n not in now]),
        ("new", [n for n in now if n not in saved]),
        ("other shape", [f"{n} {saved[n]} -> {now[n]}" for n in saved if n in now and saved[n] != now[n]]),
    ):
        if names:
            more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
            parts.append(f"{label}: {', '.join(names[:_SHOWN])}{more}")
    return "; ".join(parts)


def check_fingerprint(directory: Path, saved: Mapping[str, Any], current: Mapping[str, Any],
                      allowed: frozenset[str]) -> list[str]:
    """Raise :class:`CheckpointError` listing what differs beyond ``allowed``; return the allowed differences."""
    differences = fingerprint_differences(saved, current)
    refused = {key: text for key, text in differences.items() if key not in allowed}
    if refused:
        lines = "\n".join(f"  - {key}: {text}" for key, text in refused.items())
        changeable = sorted(CHANGEABLE & refused.keys())
        fix = (f"\nIf the change is intended, pass resume_allow_changes={set(changeable)!r} to train() "
               "(the run then continues from the state, but not as the saved run would have)."
               if changeable else "")
        raise CheckpointError(
            f"training state {directory} was saved by a different run; resume it with the same settings:\n"
            f"{lines}{fix}"
        )
    return [f"{key}: {text}" for key, text in differences.items()]


def check_allowed_changes(allowed: Iterable[str]) -> frozenset[str]:
    """``resume_allow_changes`` as a set; a name that is not a changeable setting is an error."""
    if isinstance(allowed, str):
        allowed = (allowed,)
    names = frozenset(allowed)
    unknown = sorted(names - CHANGEABLE)
    if unknown:
        raise ConfigurationError(
            f"resume_allow_changes has {', '.join(map(repr, unknown))}, which cannot change on resume; "
            f"it accepts {', '.join(sorted(CHANGEABLE))}"
        )
    return names
