"""Reproduce the paper's tables: train every configuration, evaluate, write outputs/reproduce/<scale>/.

    python src/reproduce.py                  # full scale, 18 runs (GPUs, weeks): make reproduce
    python src/reproduce.py --scale smoke    # CPU, offline, ~15 min, 6 configurations x 2 seeds: make reproduce SCALE=smoke
    python src/reproduce.py --scale smoke --only cifar10_cinc_quad cifar10_cinc_affine --seeds 0 1 2
    python src/reproduce.py --scale full --runs outputs/reproduce/full/runs/cluster   # evaluate finished runs only
    python src/reproduce.py --scale smoke --runs outputs/reproduce/smoke/runs/<time> --publish   # copy to results/smoke/

Results (tables.md, results.json, plots) and the runs go to <out>/<scale>/ (default
outputs/reproduce/, ignored by git). --publish also writes the copy kept in the repository,
results/<scale>/, without run folders. Bad arguments print one line `error: ...` and exit with 2.
"""
import argparse
import subprocess
import sys

import _entry  # noqa: E402,F401  (sets up sys.path and PROJECT_ROOT)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="full", choices=["full", "smoke", "tiny"])
    parser.add_argument("--out", default="outputs/reproduce", help="output folder (default: outputs/reproduce/)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="a subset of configurations, e.g. cifar10_cinc_quad")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                        help="run every configuration once per seed (default: smoke 0 1; full: each config's own seed)")
    parser.add_argument("--imagenet-epochs", type=int,
                        help="full scale: epochs of the ImageNet rows, which the paper trained until stopped (default 100)")
    parser.add_argument("--device", default="auto", help="device for the timing: auto | cpu | cuda")
    parser.add_argument("--reps", type=int, default=3, help="timing repetitions (median)")
    parser.add_argument("--runs", help="only evaluate the finished runs in this folder (<runs>/paper_<name>/[seed_<seed>/])")
    parser.add_argument("--publish", nargs="?", const="results", metavar="DIR",
                        help="also write the copy without run folders into DIR/<scale>/ (default DIR: results)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. trainer.max_steps=100")
    parser.error = _fail  # one line, as for the other bad arguments (argparse also prints its usage)
    args = parser.parse_args()
    from cincflow.reproduce.run import experiments, reproduce

    try:
        experiments(args.scale, args.only)  # an unknown name fails here, before anything starts
        reproduce(args.scale, args.out, args.only, args.device, args.reps, args.overrides, args.runs,
                  args.seeds, args.imagenet_epochs, args.publish)
    except subprocess.CalledProcessError as err:  # train.py has printed its own error line
        sys.exit(f"error: the training runs stopped (exit status {err.returncode}); see the message above")
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))


if __name__ == "__main__":
    main()
