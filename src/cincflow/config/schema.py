"""The typed schema of the configurations of ``src/train.py``, ``src/eval.py`` and ``src/sample.py``.

Each dataclass lists the keys of one config node with their types and allowed values; keys not
listed (Lightning's other Trainer arguments, the data and callback configs) are left to their own
constructors. :func:`check_node` checks a composed config against a schema; the first violation is
a :class:`~cincflow.errors.ConfigError` naming the key, what it must be, and an example value:

    invalid trainer configuration: max_epochs must be an integer >= -1 (-1: no limit), got 'abc':
    set e.g. trainer.max_epochs=100
"""
from __future__ import annotations

import math
import types
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..checks import check_temperature
from ..ood.scores import SCORE_NAMES
from ..errors import ConfigError, missing_setting

#: what the flow trains in (checked on CPU: 16-true and bf16-true fail, the LU and triangular solves
#: have no half-precision kernels); 16 / bf16 / 32 / 64 are Lightning's older names
PRECISIONS = ("32-true", "64-true", "bf16-mixed", "16-mixed", "32", "64", "16", "bf16", 32, 64, 16)
SPLITS = ("test", "val")


def rule(must: str, example: Any, ok: Callable[[Any], bool] | None = None, hint: str = "",
         required: bool = False) -> Any:
    """A schema field (default None: absent or null is allowed by the type): ``ok(value)`` for a
    non-null value of the right type, ``must`` what it has to be, ``example`` a valid value;
    ``required``: the job reads it, so the key must be there (a ``~key`` override removes it)."""
    return field(default=None, metadata={"must": must, "example": example, "ok": ok, "hint": hint, "required": required})


def at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: v >= low


def positive_finite(v: float) -> bool:
    return math.isfinite(v) and v > 0


def one_of(choices) -> Callable[[Any], bool]:
    return lambda v: v in choices


def each(check: Callable[[Any], bool], nonempty: bool = True) -> Callable[[Any], bool]:
    return lambda v: (len(v) > 0 or not nonempty) and all(check(x) for x in v)


POSITIVE = "a positive integer"
TEMPERATURE = "finite numbers >= 0 (0: the mode of each latent)"


def is_temperature(v: Any) -> bool:
    """The rule of :func:`cincflow.checks.check_temperature` (the one home of the temperature's range)."""
    try:
        check_temperature("temperature", v)
    except ValueError:
        return False
    return True


@dataclass
class TrainerSchema:
    max_epochs: int | None = rule("an integer >= -1 (-1: no limit)", 100, at_least(-1))
    min_epochs: int | None = rule("an integer >= 0", 1, at_least(0))
    max_steps: int | None = rule("an integer >= -1 (-1: no limit)", 1000, at_least(-1))
    precision: int | str | None = rule(
        "one of 32-true, 64-true, bf16-mixed, 16-mixed (the flow's LU factors and triangular solves have no "
        "half-precision kernels, so 16-true and bf16-true cannot train)", "32-true", one_of(PRECISIONS))
    gradient_clip_val: float | None = rule("a number >= 0 (null: no clipping)", 100.0,
                                           lambda v: math.isfinite(v) and v >= 0)
    gradient_clip_algorithm: str | None = rule("norm or value", "norm", one_of(("norm", "value")))
    check_val_every_n_epoch: int | None = rule(POSITIVE, 1, at_least(1))
    log_every_n_steps: int | None = rule(POSITIVE, 20, at_least(1))
    limit_train_batches: float | None = rule("a number >= 0 (a count, or a fraction <= 1.0)", 1.0, at_least(0))
    limit_val_batches: float | None = rule("a number >= 0 (a count, or a fraction <= 1.0)", 1.0, at_least(0))
    limit_test_batches: float | None = rule("a number >= 0 (a count, or a fraction <= 1.0)", 1.0, at_least(0))
    num_sanity_val_steps: int | None = rule("an integer >= -1", 2, at_least(-1))
    num_nodes: int | None = rule(POSITIVE, 1, at_least(1))
    accumulate_grad_batches: int | None = rule(POSITIVE, 1, at_least(1))
    fast_dev_run: bool | int | None = rule("true, false or a number of batches", "true", lambda v: v is True or v >= 0)
    enable_progress_bar: bool | None = rule("true or false", "false")
    detect_anomaly: bool | None = rule("true or false", "false")


@dataclass
class OptimizerSchema:
    lr: float | None = rule("a positive finite number", 1e-3, positive_finite)
    betas: tuple[float, float] | None = rule("two numbers in [0, 1)", "[0.9,0.999]", each(lambda b: 0 <= b < 1))
    eps: float | None = rule("a positive finite number", 1e-8, positive_finite)
    weight_decay: float | None = rule("a number >= 0", 0.0, lambda v: math.isfinite(v) and v >= 0)
    momentum: float | None = rule("a number in [0, 1)", 0.9, lambda v: 0 <= v < 1)


@dataclass
class SamplesSchema:
    n: int | None = rule("an integer >= 0 (0: no sample grids)", 64, at_least(0))
    temperatures: list[float] | None = rule(f"a non-empty list of {TEMPERATURE}", "[0.5,0.7,1.0]", each(is_temperature))
    seed: int | None = rule("an integer", 1234)


@dataclass
class CommonSchema:
    seed: int | None = rule("an integer, or null for no seeding", 0)
    compile: bool | str | None = rule("true, false or a torch.compile backend name (e.g. eager, aot_eager)", "false")
    num_threads: int | None = rule("a positive integer, or null for PyTorch's default", 1, at_least(1))
    keep_freed_memory: bool | None = rule("true or false", "true")


@dataclass
class TrainSchema(CommonSchema):
    train: bool | None = rule("true or false", "true", required=True)
    test: bool | None = rule("true or false", "true", required=True)
    atomic_checkpoints: bool | None = rule("true or false", "true", required=True)
    global_batch_size: int | None = rule("a positive integer, or null to use data.batch_size per process", 128,
                                         at_least(1))
    resume: str | None = rule("full (continue the run in its folder) or weights (a new run from its weights)", "full",
                              one_of(("full", "weights")))
    trainer: TrainerSchema | None = None
    optimizer: OptimizerSchema | None = None
    samples: SamplesSchema | None = None


@dataclass
class EvalSchema(CommonSchema):
    split: str | None = rule("test or val", "test", one_of(SPLITS))
    use_ema: bool | None = rule("true or false", "true")
    batch_size: int | None = rule("a positive integer, or null for the data's", 64, at_least(1))
    dequant_samples: int | None = rule("a positive integer (the number of dequantisation draws)", 10, at_least(1))
    ood_max_images: int | None = rule("a positive integer, or null for every image", 1000, at_least(1))
    ood_scores: str | list[str] | None = rule(f"a score name or a list of them ({', '.join(SCORE_NAMES)}), or null for "
                                              f"every score that applies", "[bpd,s_png,typicality]",
                                              lambda v: each(one_of(SCORE_NAMES))([v] if isinstance(v, str) else v))
    ood_reference_ckpt: str | None = rule("a checkpoint of a second model (the likelihood ratio), or null",
                                          "outputs/<task>/<run>/checkpoints/last.ckpt")
    ood_typicality_batch: int | None = rule("a positive integer (M images per batch of the typicality test)", 10,
                                            at_least(1))
    ood_typicality_bootstrap: int | None = rule("a positive integer (bootstrapped training batches)", 1000, at_least(1))
    ood_typicality_quantile: float | None = rule("a number strictly between 0 and 1", 0.99, lambda v: 0 < v < 1)
    ood_train_images: int | None = rule("a positive integer (training images of the typicality test), or null for all",
                                        2000, at_least(1))
    ckpt_task: str | None = rule("a task name (an outputs/<task>/ folder), or null", "quickstart")
    trainer: TrainerSchema | None = None


@dataclass
class SampleSchema(CommonSchema):
    n: int | None = rule("a positive integer", 64, at_least(1), required=True)
    temperature: float | list[float] | None = rule(
        "a finite number >= 0 or a non-empty list of them (1: the model's distribution, below 1: sharper, "
        "0: the mode of each latent)", 0.7,
        lambda v: each(is_temperature)(v) if isinstance(v, list) else is_temperature(v), required=True)
    batch_size: int | None = rule("a positive integer", 64, at_least(1))
    nrow: int | None = rule("a positive integer, or null for a square grid", 8, at_least(1))
    use_ema: bool | None = rule("true or false", "true")
    device: str | None = rule("auto, cpu or cuda[:index]", "auto")
    output: str | None = rule("a file path, or null for <output_dir>/samples.png", "samples.png")
    reconstructions: int | None = rule("an integer >= 0", 16, at_least(0))
    interpolations: int | None = rule("an integer >= 0", 4, at_least(0))
    interpolation_steps: int | None = rule("an integer >= 2 (both end points included)", 8, at_least(2))
    split: str | None = rule("test or val", "test", one_of(SPLITS))
    float64_fallback: bool | None = rule("true or false", "true")
    ckpt_task: str | None = rule("a task name (an outputs/<task>/ folder), or null", "quickstart")


SCHEMAS = {"train": TrainSchema, "eval": EvalSchema, "sample": SampleSchema}


def conforms(value: Any, tp: Any) -> bool:
    """Whether ``value`` (plain Python, as parsed by Hydra) has type ``tp``; bool is not a number,
    an int is a float; types the schema does not describe (tensors, callables) always conform."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(conforms(value, arg) for arg in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float):
        allowed = (int,) if tp is int else (int, float)
        return isinstance(value, allowed) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
        return not args or all(conforms(v, args[0]) for v in value)
    return True


def describe(tp: Any) -> str:
    """'an integer', 'true or false', ... for a type of the schema (for messages)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        parts = [describe(a) for a in get_args(tp) if a is not type(None)]
        return " or ".join(parts) + (", or null" if type(None) in get_args(tp) else "")
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    if origin in (list, tuple):
        return "a list" + (f" of {len(get_args(tp))} numbers" if origin is tuple else "")
    return getattr(tp, "__name__", str(tp))


def plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def as_override(value: Any) -> str:
    """``value`` as written on the command line (true, null, [0.9,0.999])."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(as_override(v) for v in value) + "]"
    return str(value)


def shown(value: Any) -> str:
    return "an empty value" if value in ("", None) else repr(value)


def check_value(key: str, value: Any, tp: Any, meta: dict, where: str) -> None:
    """ConfigError unless ``value`` of ``key`` has type ``tp`` and passes the rule ``meta``."""
    ok = conforms(value, tp) and (value is None or meta.get("ok") is None or meta["ok"](value))
    if not ok:
        name = key.rsplit(".", 1)[-1]
        must = meta.get("must") or describe(tp)
        hint = f" ({meta['hint']})" if meta.get("hint") else ""
        raise ConfigError(f"invalid {where}configuration: {name} must be {must}, got {shown(value)}: "
                          f"set e.g. {key}={as_override(meta.get('example'))}{hint}")


def check_node(node: Any, schema: type, prefix: str = "") -> None:
    """Check the keys of ``node`` (a DictConfig) that ``schema`` lists, nested schemas included."""
    if not isinstance(node, DictConfig):
        return
    hints = get_type_hints(schema)
    where = f"{prefix.split('.')[0]} " if prefix else ""
    for f in fields(schema):
        if f.name not in node:
            if f.metadata.get("required"):
                raise missing_setting(f"{prefix}{f.name}", example=as_override(f.metadata["example"]))
            continue
        sub = [a for a in get_args(hints[f.name]) if is_dataclass(a)]
        if sub:
            check_node(node[f.name], sub[0], f"{prefix}{f.name}.")
        else:
            check_value(f"{prefix}{f.name}", plain(node[f.name]), hints[f.name], dict(f.metadata), where)
