"""Reproduce the paper's tables: train every configuration, evaluate, write results/<scale>/.

    python src/reproduce.py                  # full scale (GPUs, days): make reproduce
    python src/reproduce.py --scale smoke    # CPU, offline, ~20 min: make reproduce SCALE=smoke
    python src/reproduce.py --scale smoke --only cifar10_cinc_quad cifar10_cinc_affine
    python src/reproduce.py --scale full --runs results/full/runs/cluster   # evaluate finished runs only
"""
import argparse
import subprocess
import sys

import _entry  # noqa: E402,F401  (sets up sys.path and PROJECT_ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="full", choices=["full", "smoke", "tiny"])
    parser.add_argument("--out", default="results", help="results folder (default: results/)")
    parser.add_argument("--only", nargs="*", help="a subset of configurations, e.g. cifar10_cinc_quad")
    parser.add_argument("--device", default="auto", help="device for the timing: auto | cpu | cuda")
    parser.add_argument("--reps", type=int, default=3, help="timing repetitions (median)")
    parser.add_argument("--runs", help="only evaluate the finished runs in this folder (<runs>/paper_<name>/)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. trainer.max_steps=100")
    args = parser.parse_args()
    from cincflow.reproduce.run import reproduce

    try:
        reproduce(args.scale, args.out, args.only, args.device, args.reps, args.overrides, args.runs)
    except subprocess.CalledProcessError as err:  # train.py has printed its own error line
        sys.exit(f"error: the training runs stopped (exit status {err.returncode}); see the message above")
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
