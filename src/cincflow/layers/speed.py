"""How fast each inverse solver is on a given input shape: predicted from multiply-adds, measured
only where the prediction cannot decide, on slices of the batch, inside a time budget.

The table is shared by every layer that uses it (the measurement depends only on the shape, dtype and
device, not on the weights); whether a solver is accurate enough is each layer's own decision
(:class:`cincflow.layers.solvers.Auto`). Rules, for the options of one key, batch B:
- an option whose multiply-add count is more than ``threshold`` times the smallest one is predicted to
  lose and never run (e.g. the direct H x W convolution of the inverse kernel at 32 x 32);
- the others, fewest multiply-adds first, run once on one image (a warm-up that builds the
  precomputations), then on s = ceil(B / 4) and 2s images, and the time at B is extrapolated linearly,
  t(B) = t(2s) + (B - 2s) (t(2s) - t(s)) / s. Slices this large keep the per-call overheads, which
  dominate a few images, from deciding (B / 16 and B / 8 did: a method that is cheap on 6 images
  can be 8x slower on 100). An option slower on s images than the best prediction for B so far
  cannot win and is not run on 2s;
- a close call (the two best predictions within ``close`` of each other) is decided on the whole
  batch: both run on all B images, twice each, alternately, and the smaller of each one's two timings
  replaces its prediction. Extrapolating from slices misjudges what only the whole batch shows (its
  working set outgrowing a cache: on a 2-core AMD EPYC the wavefront at 100 x 12 x 16 x 16 was
  predicted 2.6 ms from its slices and took 3.7, the tiled one 2.0 and 2.7), and one slow timing
  (another process taking the core for a moment) no longer decides between two options of about the
  same speed. Skipped where those four calls would take more than ``whole_s`` seconds (predicted):
  there the slices are long enough to be steady;
- once the probes of a key have taken ``budget_s`` seconds, the options not yet timed are predicted
  from their multiply-adds at the measured options' rate.
So the probes of an option cost at most 3/4 of its time on the whole batch, only the options that
can still win pay all of it, and a close call adds at most ``whole_s``: the first call stays within
2 warm calls + 0.5 s.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable

import torch

from ..timing import wall_time
from .causal import reach_rows


def substitution_macs(c: int, h: int, w: int, k: int, tile: int) -> float:
    """Multiply-adds per image of the tile wavefront with b x b tiles: per tile, one n x n product for
    the unpacking and one (hi - lo) x n product per neighbour tap (:func:`reach_rows`), n = b * b * C."""
    n, tiles = tile * tile * c, math.ceil(h / tile) * math.ceil(w / tile)
    kt = math.ceil((k - 1) / tile) + 1
    halo = sum(hi - lo for lo, hi in (reach_rows(k, tile, c, p, q) for p in range(kt) for q in range(kt) if p or q))
    return tiles * n * (n + halo)


def exact_inverse_macs(c: int, h: int, w: int, k: int) -> float:
    """Multiply-adds per image that any exact inverse of one k x k causal factor does at the least, by
    substitution: each off-centre tap applied once to every pixel it reaches (C^2 per tap and pixel) and
    the triangular centre solved at every pixel (C (C + 1) / 2). A lower bound for every solver here
    (the inverse kernel's dense H x W convolution does more)."""
    reached = sum((h - p) * (w - q) for p in range(min(k, h)) for q in range(min(k, w))) - h * w
    return float(c * c * reached + h * w * c * (c + 1) / 2)


def kernel_macs(c: int, h: int, w: int) -> dict[str, float]:
    """Multiply-adds per image of applying the H x W inverse kernel: ``direct`` (a dense H x W
    convolution, C^2 H^2 W^2) and ``fft`` (two real FFTs of the (2H, 2W) grid per channel, about
    5 N log2 N with N = 4 H W, and a C x C complex product per frequency)."""
    n = 4 * h * w
    return {"direct": float(c * c * h * w * h * w), "fft": 5.0 * c * n * math.log2(n) + 4.0 * c * c * 2 * h * (w + 1)}


class SpeedTable:
    """Options ranked fastest first, per key (see the module docstring for how)."""

    def __init__(self, budget_s: float = 0.1, threshold: float = 16.0, timer: Callable = wall_time, close: float = 1.5,
                 whole_s: float = 0.25):
        self.budget_s, self.threshold, self.timer, self.close, self.whole_s = budget_s, threshold, timer, close, whole_s
        self._ranking: dict[Hashable, list[str]] = {}

    def ranking(self, key: Hashable) -> list[str] | None:
        """The measured order for ``key`` (None: not measured yet)."""
        return self._ranking.get(key)

    def fastest_first(
        self, key: Hashable, y: torch.Tensor, costs: dict[str, float], run: Callable[[str, torch.Tensor], object]
    ) -> list[str]:
        """The option names of ``costs`` (multiply-adds per image), fastest first for inputs like ``y``
        [B, ...]; ``run(name, y_slice)`` runs one option on a slice of the batch."""
        if key not in self._ranking:
            with torch.no_grad():
                self._ranking[key] = self._measure(y, costs, run)
        return self._ranking[key]

    def _measure(self, y: torch.Tensor, costs: dict[str, float], run: Callable) -> list[str]:
        least = min(costs.values())
        plausible = sorted((n for n in costs if costs[n] <= self.threshold * least), key=costs.get)
        losers = sorted((n for n in costs if n not in plausible), key=costs.get)
        if len(plausible) == 1:
            return plausible + losers
        batch = y.shape[0]
        s1 = -(-batch // 4)
        s2 = min(batch, 2 * s1)
        predicted, spent = {}, 0.0

        def probe(name: str, images: int) -> float:
            nonlocal spent
            t = self.timer(lambda: run(name, y[:images]), y.device)
            spent += t
            return t

        def extrapolate(t1: float, t2: float) -> float:
            return t2 + (batch - s2) * max(0.0, t2 - t1) / (s2 - s1)

        for name in plausible:
            if spent > self.budget_s:
                break
            probe(name, 1)  # warm-up, builds the precomputations
            t1 = probe(name, s1)
            if s2 == s1 or t1 >= min(predicted.values(), default=math.inf):
                predicted[name] = t1 * batch / s1  # s1 = B, or slower on s1 images than the best on B
                continue
            predicted[name] = extrapolate(t1, probe(name, s2))
        best = sorted(predicted, key=predicted.get)[:2]
        close = len(best) == 2 and predicted[best[1]] <= self.close * predicted[best[0]]
        if close and 2 * sum(predicted[name] for name in best) <= self.whole_s:
            whole = {name: math.inf for name in best}  # the better of two timings on the whole batch
            for _ in range(2):
                for name in best:
                    whole[name] = min(whole[name], probe(name, batch))
            predicted |= whole
        rate = min(predicted[n] / costs[n] for n in predicted)
        predicted |= {n: rate * costs[n] for n in plausible if n not in predicted}
        return sorted(plausible, key=predicted.get) + losers


SPEEDS = SpeedTable()  # the default table, shared by every layer: speed only, never accuracy
