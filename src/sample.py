"""Samples from a checkpoint into a PNG grid (+ reconstructions, interpolations).

    python src/sample.py ckpt_path=... n=64 temperature=0.7 [reconstructions=16] [interpolations=4]

ckpt_path=last: with hydra.run.dir=<a training run> its last.ckpt (the files go to <run>/sample/<time>/),
else the newest outputs/<ckpt_task>/*/checkpoints/last.ckpt (also multirun/) below paths.log_dir.
Errors: one line `error: ...` on stderr, exit status 2 (HYDRA_FULL_ERROR=1: with the traceback).
"""

import _entry  # noqa: E402,F401  (sets up sys.path and PROJECT_ROOT)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    from cincflow.errors import report_errors
    from cincflow.jobs import sample

    report_errors(sample, cfg)  # known errors: one line `error: ...` on stderr, exit 2 (3: runtime fault)


if __name__ == "__main__":
    import sys

    from cincflow.config.choices import check_choices
    from cincflow.errors import report_errors

    report_errors(check_choices, sys.argv[1:])  # an unknown config-group option: one line, exit 2
    main()
