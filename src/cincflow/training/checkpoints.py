"""Checkpoint files: atomic writes, ``ckpt_path`` resolution and validation.

* :class:`AtomicCheckpointIO` (the trainer's default CheckpointIO plugin, ``atomic_checkpoints:
  true``): a checkpoint is written to a hidden temporary file in the same folder, flushed and
  fsync'ed, then renamed over the final name (``os.replace``, atomic on POSIX). A crash or SIGKILL
  mid-write leaves the previous checkpoint intact (plus, at worst, a ``.<name>.*.tmp`` file); a
  failed write (disk full, unwritable folder) removes the temporary file and raises
  :class:`~cincflow.errors.CheckpointWriteError`.
* :func:`resolve_ckpt_path`: ``ckpt_path=last`` (:func:`choose_last`): the named run folder's own
  ``last.ckpt``, otherwise the newest (by modification time) below ``<paths.log_dir>/outputs/<task>/*/
  checkpoints/`` and ``<paths.log_dir>/multirun/<task>/*/*/checkpoints/`` of the same task and, for
  training, the same model architecture; the choice and its reason are printed.
* :func:`load_checkpoint_dict` / :func:`check_state_dict`: a clear error for a file that is not a
  (complete, uncorrupted: CRC-checked) Lightning checkpoint, or whose weights do not fit the
  configured architecture.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from ..errors import CheckpointError, CheckpointMismatchError, CheckpointNotFoundError, CheckpointWriteError, one_line
from ..paths import resolve_path


def _write_failure(path: Path, err: BaseException) -> CheckpointWriteError:
    reason = getattr(err, "strerror", None) or " ".join(str(err).split()) or type(err).__name__
    return CheckpointWriteError(
        f"could not write checkpoint {path} ({reason}); the previous checkpoint there is unchanged: free disk "
        f"space or choose a writable output folder (paths.log_dir=... or hydra.run.dir=...)"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that never leaves a half-written checkpoint under the final name."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote file systems: Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as err:
            raise _write_failure(path, err) from err
        try:
            os.close(fd)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint gets the usual mode
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(err, OSError) or (isinstance(err, RuntimeError) and "write" in str(err).lower()):
                raise _write_failure(path, err) from err
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _task_of(ckpt: Path, root: Path) -> str:
    """The task of ``outputs/<task>/<run>/...`` or ``multirun/<task>/<sweep>/<job>/...``."""
    parts = ckpt.relative_to(root).parts
    return parts[1] if len(parts) > 1 else "?"


def last_checkpoints(log_dir: str | os.PathLike, task_name: str | None = None) -> list[Path]:
    """Every ``last.ckpt`` of ``task_name`` (any task when None) below ``log_dir``, newest first."""
    root = Path(log_dir)
    task = task_name or "*"
    found = list(root.glob(f"outputs/{task}/*/checkpoints/last.ckpt"))
    found += list(root.glob(f"multirun/{task}/*/*/checkpoints/last.ckpt"))
    return sorted((c for c in found if c.is_file()), key=lambda c: c.stat().st_mtime, reverse=True)


def _canonical(value: Any) -> Any:
    """A factory named by its registry name (a format-2 checkpoint's ``coupling: quad``) as its
    ``_partial_`` config; a ``_target_`` path as the object it names (``cincflow.Glow`` is ``cincflow.model.Glow``)."""
    from ..layers.step import COUPLINGS, CONVS
    from ..targets import config_of, locate

    if isinstance(value, str) and (value in COUPLINGS or value in CONVS):
        return config_of((COUPLINGS | CONVS)[value])
    if isinstance(value, Mapping) and "_target_" in value:
        try:
            return {**value, "_target_": locate(str(value["_target_"]))}
        except (ImportError, AttributeError):
            return value
    return value


def same_architecture(configured: Mapping[str, Any], saved: Mapping[str, Any]) -> bool:
    """True when every setting given in both (not None) is equal; nested configs compared likewise.
    A setting left null here (e.g. ``in_channels``, taken from the data) matches any value."""
    configured, saved = _canonical(configured), _canonical(saved)
    for key in set(configured) | set(saved):
        a, b = _canonical(configured.get(key)), _canonical(saved.get(key))
        if a is None or b is None:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            if not same_architecture(a, b):
                return False
        elif (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            return False
    return True


def _saved_model_config(path: Path) -> Mapping[str, Any] | None:
    try:
        hparams = torch.load(path, map_location="cpu", mmap=True, weights_only=False).get("hyper_parameters") or {}
    except Exception:  # noqa: BLE001 - an unreadable candidate is skipped (and said so)
        return None
    config = hparams.get("model_config")
    return config if isinstance(config, Mapping) else {}


def choose_last(cfg: Any, named_dir: Path | None, training: bool) -> tuple[Path, str]:
    """What ``ckpt_path=last`` means, and why: (1) the ``last.ckpt`` of the run folder named by
    ``hydra.run.dir`` (``named_dir``); otherwise (2) for training the newest ``last.ckpt`` of the same
    ``task_name`` whose model architecture is the configured one; for eval/sample the newest one of
    ``ckpt_task`` (when set), or of the only task that has any."""
    if named_dir is not None and (Path(named_dir) / "checkpoints" / "last.ckpt").is_file():
        return Path(named_dir) / "checkpoints" / "last.ckpt", f"the last.ckpt of the named run folder {named_dir}"
    root = Path(cfg.paths.log_dir)
    task = str(cfg.task_name) if training else (cfg.get("ckpt_task") or None)
    candidates = last_checkpoints(root, task)
    where = f"{root}/outputs/{task or '*'}/*/checkpoints/last.ckpt"
    if not candidates:
        raise CheckpointNotFoundError(
            f"ckpt_path=last found no checkpoint ({where} does not exist): train first, or pass the path "
            f"of a checkpoint with ckpt_path=outputs/.../checkpoints/last.ckpt"
        )
    if not training:
        tasks = sorted({_task_of(c, root) for c in candidates})
        if len(tasks) > 1:
            raise CheckpointError(
                f"ckpt_path=last is ambiguous: {where} holds runs of the tasks {', '.join(tasks)}; choose one with "
                f"ckpt_task=<task>, hydra.run.dir=<its run folder>, or ckpt_path=<a .ckpt file>"
            )
        return candidates[0], f"the newest last.ckpt of task {tasks[0]}"
    configured = cfg.model  # a mapping (a DictConfig resolves its interpolations as it is read)
    skipped = 0
    for candidate in candidates:
        saved = _saved_model_config(candidate)
        if saved is not None and same_architecture(configured, saved):
            why = f"the newest last.ckpt of task {task} with this model architecture"
            return candidate, why + (f"; {skipped} newer one(s) of other architectures skipped" if skipped else "")
        skipped += 1
    newest = candidates[0]
    raise CheckpointNotFoundError(
        f"ckpt_path=last found {len(candidates)} last.ckpt of task {task} but none with this model architecture "
        f"({_arch({'model_config': configured})}; the newest, {newest}, has {_arch({'model_config': _saved_model_config(newest)})}): "
        f"use the model settings of the run to resume, or pass its checkpoint with ckpt_path=<file>"
    )


def resolve_ckpt_path(value: Any, cfg: Any = None, named_dir: str | os.PathLike | None = None,
                      training: bool = False) -> Path:
    """``ckpt_path`` as an existing file: a path (relative to the current directory) or ``last``
    (:func:`choose_last`; which file and why is printed)."""
    if str(value) == "last" and cfg is not None:
        found, why = choose_last(cfg, Path(named_dir).resolve() if named_dir else None, training)
        if rank_zero_only.rank == 0:
            print(f"ckpt_path=last: {found} ({why})", flush=True)
        return found
    path = resolve_path(value)
    if not path.exists():
        raise CheckpointNotFoundError(
            f"ckpt_path={path} does not exist: pass an existing .ckpt file (outputs/<task>/<run>/checkpoints/) "
            f"or ckpt_path=last"
        )
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path} is a directory, not a checkpoint file: pass a .ckpt file in it")
    return path


def verify_integrity(path: Path) -> None:
    """A :class:`CheckpointError` naming the file when a member of the zip archive fails its CRC
    check (bytes changed after writing; ``torch.load`` itself does not check)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        bad = f"? ({one_line(err)})"
    if bad is not None:
        raise CheckpointError(
            f"ckpt_path={path} is corrupted (CRC check failed for {bad} in the archive: its bytes changed after it "
            f"was written): use another checkpoint of the run (e.g. epoch_XXX.ckpt) or a good copy"
        )


def check_archive(path: str | os.PathLike) -> None:
    """A :class:`CheckpointError` naming the file unless it is a complete, uncorrupted zip archive
    (what ``torch.save`` writes); reads the whole file once."""
    path = Path(path)
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its directory is at the end
        size = path.stat().st_size
        raise CheckpointError(
            f"ckpt_path={path} is not a checkpoint ({size} bytes, not the zip archive torch.save writes: "
            f"truncated, corrupted or another kind of file): pass a .ckpt written by src/train.py"
        )
    verify_integrity(path)


def load_checkpoint_dict(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> dict[str, Any]:
    """The checkpoint's dictionary (tensors memory-mapped); a clear error for anything else.
    ``verify=False`` skips the archive's CRC check (a launch whose checks already read it)."""
    path = Path(path)
    if verify:
        check_archive(path)
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=mmap, weights_only=False)
    except Exception as err:
        detail = " ".join(str(err).split())[:160]
        raise CheckpointError(
            f"ckpt_path={path} is not a readable checkpoint ({type(err).__name__}: {detail}): the file is truncated, "
            f"corrupted or not a .ckpt written by src/train.py; use another checkpoint (e.g. epoch_XXX.ckpt)"
        ) from err
    if isinstance(ckpt, Mapping) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(
            f"ckpt_path={path} holds only weights ({len(ckpt)} tensors, a bare state_dict) without the model "
            f"settings: load it with model.load_state_dict(torch.load(path)) into a model built with matching "
            f"settings, or pass a .ckpt written by src/train.py"
        )
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointError(
            f"ckpt_path={path} is not a Lightning checkpoint of this project (no 'state_dict' entry): "
            f"pass a .ckpt file written by src/train.py"
        )
    return dict(ckpt)


def _arch(hparams: Mapping[str, Any] | None) -> str:
    """The architecture settings of a module's (or checkpoint's) hyper-parameters, for messages."""
    hparams = hparams or {}
    model = dict(hparams.get("model_config") or hparams.get("model") or {})  # format 2-3 or 1 (restore.py)
    for key in ("conv", "coupling"):  # a factory config: its name is the target's
        if isinstance(model.get(key), Mapping):
            model[key] = str(model[key].get("_target_", "?")).rsplit(".", 1)[-1]
    keys = ("conv", "coupling", "levels", "depth", "width", "in_channels", "image_size")
    return " ".join(f"{k}={model[k]}" for k in keys if k in model) or "unknown"


def state_dict_differences(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any], limit: int = 3) -> str:
    """'' when ``found`` fits ``expected`` (same keys and shapes), else a short description."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {list(found[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in found and hasattr(found[k], "shape") and tuple(found[k].shape) != tuple(v.shape)
    ]

    def part(name: str, items: list[str]) -> str:
        more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
        return f"{len(items)} {name}: {', '.join(items[:limit])}{more}"

    parts = [part(n, i) for n, i in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches (checkpoint vs model)", shapes)) if i]
    return "; ".join(parts)


def check_state_dict(module: torch.nn.Module, ckpt: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointMismatchError` unless the checkpoint's weights load strictly into ``module``."""
    diff = state_dict_differences(module.state_dict(), ckpt["state_dict"])
    if diff:
        here = _arch(getattr(module, "hparams", None))
        there = _arch(ckpt.get("hyper_parameters"))
        raise CheckpointMismatchError(
            f"ckpt_path={path} comes from a different architecture (checkpoint: {there}; this config: {here}): "
            f"{diff}; use the model settings the checkpoint was trained with"
        )
