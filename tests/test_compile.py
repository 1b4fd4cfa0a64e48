"""cincflow.compiled.compile_flow on the CPU: a compiled model trains (forward and backward), evaluates
and samples as the eager one does, initialises its ActNorms eagerly on the first batch, and a deep
copy (the EMA) computes with its own weights. Traced as one graph each (``fullgraph``: no graph
break); the default suite traces with dynamo's ``eager`` backend (seconds), the slow one compiles
with inductor (minutes on 2 cores)."""
from __future__ import annotations

import copy

import pytest
import torch

from cincflow import Glow
from cincflow.compiled import compile_flow


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
@pytest.mark.parametrize("conv", ["cinc", "emerging"])
def test_compiled_flow_trains_evaluates_and_samples_like_the_eager_one(conv, backend):
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8) - 0.5
    eager = Glow(3, 8, 1, 1, 8, conv, "affine")
    compiled = compile_flow(copy.deepcopy(eager), backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled.log_prob(x), eager.log_prob(x))  # first batch: eager ActNorm init in both
    assert all(bool(a.initialized) for a in (m for m in compiled.modules() if hasattr(m, "initialized")))
    with torch.no_grad():
        for p, q in zip(eager.parameters(), compiled.parameters()):
            p.add_(0.05 * torch.randn_like(p))
            q.copy_(p)
    for model in (eager, compiled):
        (-model.log_prob(x).mean()).backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4, msg=name)
    noise = [torch.randn(2, *s) for s in eager.latent_shapes()]
    with torch.no_grad():
        torch.testing.assert_close(compiled.sample(2, 1.0, noise), eager.sample(2, 1.0, noise), rtol=1e-4, atol=1e-5)
        twin = copy.deepcopy(compiled)
        for p in twin.parameters():
            p.mul_(0.5)
        assert twin._log_prob.__self__ is twin
        assert not torch.allclose(twin.log_prob(x), compiled.log_prob(x))
        torch.testing.assert_close(compiled.log_prob(x), eager.log_prob(x))


@pytest.mark.slow  # compiles three times through the command line (~25-50 s): `make test-slow`
def test_compile_option_of_train_eval_and_sample(tmp_path):
    """module.compile= (training, validation, test) and compile= of eval.py / sample.py, through the command line;
    dynamo's eager backend (what is compiled is the same, in seconds) gives the uncompiled run's numbers."""
    import json

    from cli import run_cases
    from test_reliability import TINY

    runs = {name: tmp_path / name for name in ("eager", "compiled")}
    cases = [("train", [*TINY, f"hydra.run.dir={runs['eager']}"]),
             ("train", [*TINY, "module.compile=eager", f"hydra.run.dir={runs['compiled']}"])]
    ckpt = runs["compiled"] / "checkpoints" / "last.ckpt"
    cases += [("eval", [f"ckpt_path={ckpt}", "compile=eager", f"hydra.run.dir={tmp_path / 'eval'}"]),
              ("eval", [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval_eager'}"]),
              ("sample", [f"ckpt_path={ckpt}", "compile=eager", "n=2", f"hydra.run.dir={tmp_path / 'sample'}"])]
    results = run_cases(cases)
    for case, result in zip(cases, results):
        assert result["code"] == 0, (case, result["stderr"][-3000:])
    eager, compiled = (json.loads((runs[n] / "metrics.json").read_text()) for n in ("eager", "compiled"))
    assert compiled["test/bpd"] == pytest.approx(eager["test/bpd"], abs=1e-5)
    evaluated = [json.loads((tmp_path / d / "metrics.json").read_text())["test/bpd"] for d in ("eval", "eval_eager")]
    assert evaluated[0] == pytest.approx(evaluated[1], abs=1e-5)
    assert (tmp_path / "sample" / "samples.png").is_file()
