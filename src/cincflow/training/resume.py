"""What a resume restores, and where the user's settings win.

A resume (``ckpt_path=...``, ``resume=full``) restores weights, EMA, optimiser state, schedule, step,
the best checkpoint and score, and continues ``metrics.json``. The optimiser hyper-parameters of
the configuration (``optimizer.lr``, ``betas``, ``eps``, ``weight_decay``, ...) replace the saved
ones, and the schedule's base learning rates follow (the current lr is rescaled by new/old base).
A different optimiser type or different parameter groups cannot take the saved state: a one-line
:class:`~cincflow.errors.CheckpointMismatchError` names ``resume=weights`` (a new run that starts
from the checkpoint's weights with a fresh optimiser and schedule).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import CheckpointMismatchError

NOT_HYPER = ("params", "initial_lr")  # a param group's entries that are not user settings


def optimizer_type(optimizer: torch.optim.Optimizer) -> str:
    return f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"


def _differs(old: Any, new: Any) -> bool:
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return len(old) != len(new) or any(_differs(a, b) for a, b in zip(old, new))
    if isinstance(old, float) or isinstance(new, float):
        try:
            return not math.isclose(float(old), float(new), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return True
    return old != new


def optimizer_changes(configured: torch.optim.Optimizer, checkpoint: Mapping[str, Any],
                      path: str | os.PathLike) -> list[str]:
    """The settings in which ``configured`` differs from the checkpoint's optimiser (``"lr 0.001 ->
    0.5"``); a CheckpointMismatchError when the saved state cannot be loaded into it at all."""
    states = checkpoint.get("optimizer_states") or []
    if not states:
        return []
    saved_groups = states[0]["param_groups"]
    here, there = optimizer_type(configured), checkpoint.get("optimizer_type")
    fresh = "add resume=weights to start a new run from the checkpoint's weights with a fresh optimiser and schedule"
    keys_differ = any(set(g) - set(NOT_HYPER) != set(s) - set(NOT_HYPER)
                      for g, s in zip(configured.param_groups, saved_groups))
    if (there and there != here) or (not there and keys_differ):
        raise CheckpointMismatchError(
            f"ckpt_path={path} was trained with {there or 'another optimiser'}, this config has {here}: its optimiser "
            f"state cannot be restored; {fresh}"
        )
    sizes_here = [len(g["params"]) for g in configured.param_groups]
    sizes_there = [len(s["params"]) for s in saved_groups]
    if sizes_here != sizes_there:
        raise CheckpointMismatchError(
            f"ckpt_path={path} has optimiser parameter groups of {sizes_there} tensors, this config trains {sizes_here} "
            f"(e.g. a conv option such as fixed_diagonal that turns parameters into constants): {fresh}"
        )
    changes = []
    for i, (g, s) in enumerate(zip(configured.param_groups, saved_groups)):
        where = f"group {i} " if len(saved_groups) > 1 else ""
        for key, value in g.items():
            old = s.get("initial_lr", s["lr"]) if key == "lr" else s.get(key)
            if key not in NOT_HYPER and _differs(old, value):
                changes.append(f"{where}{key} {old} -> {value}")
    return changes


def apply_optimizer_settings(checkpoint: dict[str, Any], configured: torch.optim.Optimizer) -> None:
    """Rewrite the checkpoint's optimiser settings and schedule base lrs to those of ``configured``
    (in place, before Lightning restores them); the current lr keeps its place in the schedule."""
    states = checkpoint.get("optimizer_states") or []
    if not states:
        return
    ratios = []
    for g, s in zip(configured.param_groups, states[0]["param_groups"]):
        old_base = float(s.get("initial_lr", s["lr"]))
        new_base = float(g["lr"])
        ratio = new_base / old_base if old_base else None
        current = float(s["lr"])
        s.update({k: v for k, v in g.items() if k not in NOT_HYPER})
        s["lr"] = current * ratio if ratio is not None else new_base
        if "initial_lr" in s:
            s["initial_lr"] = new_base
        ratios.append((ratio, new_base))
    for sched in checkpoint.get("lr_schedulers") or []:
        if "base_lrs" in sched:
            sched["base_lrs"] = [new for _, new in ratios]
        if "_last_lr" in sched:
            sched["_last_lr"] = [lr * r if r is not None else new for lr, (r, new) in zip(sched["_last_lr"], ratios)]
