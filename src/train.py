"""Train a flow: fit, then test with the best checkpoint.

    python src/train.py coupling=quad conv=cinc            # CInC + quad coupling (paper defaults)
    python src/train.py experiment=quickstart              # offline digits, CPU, minutes (make train)
    python src/train.py -m coupling=affine,quad conv=cinc,emerging   # 4 jobs
    python src/train.py ckpt_path=outputs/.../checkpoints/last.ckpt  # resume
    python src/train.py experiment=quickstart ckpt_path=last  # resume (in its folder) the newest last.ckpt of the task + architecture
    python src/train.py ckpt_path=... resume=weights       # a new run from a checkpoint's weights (fresh optimizer)
    python src/train.py -m hparams_search=quickstart_optuna  # Optuna search (README: search and cluster sweeps)

Bad input (missing/corrupt data, invalid model config, unusable checkpoint) prints one line
`error: <what is wrong and how to fix it>` on stderr and exits with status 2; a fault while training
(max_bad_steps consecutive non-finite steps, a checkpoint that cannot be written) exits with 3; SIGTERM/SIGINT
save last.ckpt, print how to resume and exit with 143/130. A new run never writes into another run's folder.
HYDRA_FULL_ERROR=1 (or CINCFLOW_DEBUG=1) also prints the traceback.
"""

import _entry  # noqa: E402,F401  (sets up sys.path and PROJECT_ROOT)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from cincflow.jobs import train
    from cincflow.config.search import run_task

    # known errors: one line `error: ...` on stderr, exit 2 (3: runtime fault); in a multirun the job fails
    # alone. Returns the value of optimized_metric (what a sweeper such as Optuna optimises).
    return run_task(train, cfg)


if __name__ == "__main__":
    import sys

    from cincflow.config.choices import check_choices
    from cincflow.errors import report_errors

    report_errors(check_choices, sys.argv[1:])  # an unknown config-group option: one line, exit 2
    main()
