"""The jobs behind the entry scripts, each taking the composed Hydra config: :func:`train`
(``src/train.py``), :func:`evaluate` (``src/eval.py``) and :func:`sample` (``src/sample.py``)."""
from .evaluate import evaluate
from .sample import sample
from .train import train

__all__ = ["evaluate", "sample", "train"]
