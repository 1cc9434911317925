"""python -m shared.model train [--data F] [--out DIR] | evaluate [--model URI] [--data F]

Every flag also reads an environment variable, named in its help.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

from shared.errors import InvalidFeatures, ModelUnavailable
from shared.model import commands
from shared.model.dataset import InvalidDataset
from shared.model.synthetic import DEFAULT_SEED, DEFAULT_SIZE
from shared.settings import DEFAULT_MODEL_URI
from shared.settings_environment import setting_variable

DEFAULT_OUT = DEFAULT_MODEL_URI


def _parser() -> argparse.ArgumentParser:
    def env(name: str, default: str | None = None) -> str | None:
        # An empty variable is an unset one, as the service's settings read MODEL_URI:
        # MODEL_OUT= must not train into the working directory.
        return os.environ.get(name) or default

    parser = argparse.ArgumentParser(
        prog="python -m shared.model", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train", help="train, print held-out metrics, write the model and its card"
    )
    train.add_argument(
        "--data",
        type=Path,
        default=env("MODEL_TRAIN_DATA"),
        help="labelled CSV (see shared/model/dataset.py); synthetic ads when absent "
        "[MODEL_TRAIN_DATA]",
    )
    train.add_argument(
        "--out",
        type=Path,
        default=Path(env("MODEL_OUT", DEFAULT_OUT)),
        help=f"model directory [MODEL_OUT, default {DEFAULT_OUT}]",
    )
    # Defaults as strings, which argparse converts with `type` too: a bad variable is then
    # a usage error naming its flag, not a traceback.
    train.add_argument(
        "--seed",
        type=int,
        default=env("MODEL_SEED", str(DEFAULT_SEED)),
        help=f"synthetic data seed [MODEL_SEED, default {DEFAULT_SEED}]",
    )
    train.add_argument(
        "--size",
        type=_training_size,
        default=env("MODEL_TRAIN_SIZE", str(DEFAULT_SIZE)),
        help=f"synthetic ads to generate, {MIN_TRAIN_SIZE} or more [MODEL_TRAIN_SIZE, default"
        f" {DEFAULT_SIZE}]",
    )
    train.add_argument(
        "--date",
        type=_calendar_date,
        default=env("MODEL_DATE"),
        help="YYYY-MM-DD in the version; default: the synthetic rules' date, or "
        "today for --data [MODEL_DATE]",
    )
    evaluate = sub.add_parser("evaluate", help="load a model as the service does and score data")
    evaluate.add_argument(
        "--model",
        # In any case, as the service reads it: `model_uri=...` is the model it serves.
        default=setting_variable("MODEL_URI", os.environ) or DEFAULT_OUT,
        help=f"model directory or s3://bucket/prefix [MODEL_URI, default {DEFAULT_OUT}]",
    )
    evaluate.add_argument(
        "--data",
        type=Path,
        default=env("MODEL_EVAL_DATA"),
        help="labelled CSV; the model's synthetic holdout when absent [MODEL_EVAL_DATA]",
    )
    return parser


# Fewer ads leave too few of each label for the stratified holdout split.
MIN_TRAIN_SIZE = 200


def _training_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if size < MIN_TRAIN_SIZE:
        raise argparse.ArgumentTypeError(f"expected {MIN_TRAIN_SIZE} or more, got {size}")
    return size


def _calendar_date(text: str) -> str:
    """YYYY-MM-DD, a real day: checked before minutes of training, not after."""
    try:
        # fromisoformat also takes 20240101 and 2024-W01-1, which read back otherwise.
        written = date.fromisoformat(text).isoformat()
    except ValueError:
        written = None
    if written != text:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    progress = not args.no_progress
    try:
        if args.command == "train":
            commands.train(
                args.out,
                args.data,
                seed=args.seed,
                size=args.size,
                date=args.date,
                progress=progress,
                report=sys.stdout,
            )
        else:
            commands.evaluate(args.model, args.data, progress=progress, report=sys.stdout)
    except (
        InvalidDataset,
        InvalidFeatures,  # a row of --data the model cannot score (a category of -1, say)
        commands.MissingEvaluationData,
        ModelUnavailable,
        OSError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
