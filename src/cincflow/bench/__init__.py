"""Sampling-versus-forward speed benchmark (``make bench``; entry point ``src/benchmark.py``).

Models: conv in {cinc, emerging, glow} x coupling in {affine, quad}, CIFAR-10 shape 32 x 32 x 3, with
random weights perturbed away from their zero initialisation (ActNorm initialised on random images,
then every parameter + N(0, 0.003^2), the centres' log-diagonals + N(0, 0.1^2); the invertible convs'
off-centre taps keep their N(0, 0.01^2) initialisation), so every layer does real work; no dataset
needed. (Larger perturbations of the coupling networks make random models' samples overflow, with
every solver alike.) For each: the forward pass x -> z and a sampling pass z -> x for ``n`` images
with every solver (:mod:`cincflow.layers.solvers`, selected through ``layer.solver``) including the
published sequential one for reference; the inverse/forward time of the model's invertible
convolutions alone; the reconstruction error; the sampling pass's worst inverse residual and the
forward-error bound of its worst layer; peak memory. Plus a single CInC layer at 16 x 16 x 12 and
32 x 32 x 12, and the first (cold) call of each solver in a fresh process. Timing: the measurements of
one table are interleaved (each round runs every one of them once, so that a change of machine load
hits them alike), one warm-up round, then the median of ``reps`` rounds; CUDA synchronised.

Modules: :mod:`.measure` (timing, memory, free solves, cold calls), :mod:`.models`, :mod:`.suite`
(what is measured), :mod:`.report` (targets, markdown), :mod:`.cold` (the fresh-process first call).
Issue #22's suite: :mod:`.speed_suite` with :mod:`.compare` (against normflows, :mod:`.normflows`),
:mod:`.solver_table`, :mod:`.throughput`, :mod:`.speed_report` (targets, markdown); profiler tables:
:mod:`.profile`; bf16-mixed against float32: :mod:`.mixed_precision`.
"""
from . import speed_suite
from .measure import free_inverse
from .models import build_model
from .report import COUPLINGS, TARGETS, markdown, write
from .suite import SIZES, run

__all__ = ["COUPLINGS", "SIZES", "TARGETS", "build_model", "free_inverse", "markdown", "run", "speed_suite", "write"]
