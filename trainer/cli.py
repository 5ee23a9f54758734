"""`joulemeter-train` / `python -m trainer`: distill, compare and export-data.

Argument checks that need no model happen in argparse (exit 2 with its message); those that do (layer indices,
tokenizers, data) raise UsageError before any run is registered, printed as one `error: ...` line (exit 2).
Heavy imports (torch, transformers, datasets) wait until the arguments are known to be sane.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from trainer.distill.options import DEMO_DEFAULTS, REAL_DEFAULTS


def _defaults(name: str) -> str:
    """Help text's defaults, read from the tables the options use, so they cannot disagree."""
    return f"default {REAL_DEFAULTS[name]}; demo {DEMO_DEFAULTS[name]}"


def _bounded(kind: Callable[[str], float], lo: float | None = None, hi: float | None = None,
             lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if too_low or too_high:
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(
                f"must be in {left}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}{right}, "
                f"got {text}")
        return value

    return parse


unit = _bounded(float, 0.0, 1.0)
positive = _bounded(float, 0.0, lo_open=True)
non_negative = _bounded(float, 0.0)


def _int_at_least(lo: int) -> Callable[[str], int]:
    return _bounded(int, lo)  # type: ignore[return-value]


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="amazon_polarity, ag_news (or another hub name with text/label columns), a "
                                     "folder saved with save_to_disk or by export-data, a .csv/.jsonl file with "
                                     "text,label, or 'synthetic'")
    g.add_argument("--train-split", default="train", help="split to train on (default train)")
    g.add_argument("--eval-split", default="test", help="held-out split (default test; single-split sources hold "
                                                        "out 10%%)")
    g.add_argument("--max-train-samples", type=_int_at_least(1), help="use at most this many training examples")
    g.add_argument("--max-eval-samples", type=_int_at_least(1), help="use at most this many held-out examples")
    g.add_argument("--max-length", type=_int_at_least(4), help=f"tokens per example ({_defaults('max_length')})")
    g.add_argument("--seed", type=int, default=0, help="seed for sampling, initialisation and shuffling")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("models")
    m.add_argument("--demo", action="store_true",
                   help="tiny BERT teacher (4 layers, width 128) and student (2 layers, width 64) built from configs, "
                        "synthetic sentiment data, the daemon started if none answers; runs the full comparison")
    m.add_argument("--teacher-name", help="teacher: hub name (e.g. bert-base-uncased) or local folder")
    m.add_argument("--student-name", help="student: hub name (e.g. distilbert-base-uncased) or local folder")
    m.add_argument("--teacher-epochs", type=_int_at_least(0),
                   help=f"fine-tune the teacher for this many epochs first, under its own run ({_defaults('teacher_epochs')})")
    _add_data_args(p)
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=_int_at_least(1), help=f"student epochs ({_defaults('epochs')})")
    t.add_argument("--lr", type=positive, help=f"peak learning rate of AdamW ({_defaults('lr')})")
    t.add_argument("--teacher-lr", type=positive,
                   help="peak learning rate while fine-tuning the teacher (default: --lr; demo 5e-4, as the deeper "
                        "model trained from scratch needs a gentler rate)")
    t.add_argument("--batch-size", type=_int_at_least(1), help=f"examples per batch ({_defaults('batch_size')})")
    t.add_argument("--eval-batch-size", type=_int_at_least(1), default=128, help="examples per eval batch")
    t.add_argument("--grad-accum", type=_int_at_least(1), default=1,
                   help="batches per optimizer step; the schedule counts optimizer steps")
    t.add_argument("--weight-decay", type=non_negative, default=0.01)
    t.add_argument("--warmup-ratio", type=_bounded(float, 0.0, 1.0, hi_open=True), default=0.1,
                   help="share of optimizer steps spent warming up, then linear decay to 0")
    t.add_argument("--max-grad-norm", type=non_negative, default=1.0, help="gradient clipping (0: off)")
    t.add_argument("--early-stopping-patience", dest="patience", type=_int_at_least(0),
                   help=f"stop after this many epochs without a better eval accuracy, 0: off ({_defaults('patience')})")
    t.add_argument("--keep-checkpoints", type=_int_at_least(1), default=2, help="checkpoints kept (the last N)")
    t.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, cuda:N, mps or cpu")
    t.add_argument("--cpu-threads", type=_int_at_least(1),
                   help=f"PyTorch intra-op threads when training on the CPU (default: PyTorch's choice; demo {DEMO_DEFAULTS['cpu_threads']})")
    t.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast on CUDA (auto: bf16 where supported, else fp16); fp32 elsewhere")
    k = p.add_argument_group("distillation")
    k.add_argument("--kd-T", dest="kd_T", type=positive, default=2.0, help="softmax temperature T (> 0)")
    k.add_argument("--kd-alpha", type=unit, default=0.5,
                   help="loss = alpha*CE + (1-alpha)*T^2*KL; in [0, 1], 1 is CE only")
    k.add_argument("--feat-beta", type=non_negative,
                   help=f"weight of the FitNets feature loss, 0 turns it off ({_defaults('feat_beta')})")
    k.add_argument("--t-layer", type=int, default=-1, help="teacher hidden-state index (0 = embeddings; negative "
                                                            "counts from the last layer)")
    k.add_argument("--s-layer", type=int, default=-1, help="student hidden-state index")
    k.add_argument("--feat-pool", choices=["cls", "mean"], default="cls",
                   help="pool over positions before the MSE (mean ignores padding)")
    k.add_argument("--feat-normalize", action="store_true", help="L2-normalise both vectors before the MSE")
    o = p.add_argument_group("output and telemetry")
    o.add_argument("--output-dir", help="checkpoints, logs, hparams.json, results.json (default runs/<command>; "
                                        "demo runs/demo)")
    o.add_argument("--run-name", help="prefix of the run names in the daemon")
    o.add_argument("--telemetry-url", help="daemon URL (default: TELEMETRY_URL or http://127.0.0.1:8765)")
    o.add_argument("--simulate-gpus", type=_int_at_least(1), nargs="?", const=1, default=0, metavar="N",
                   help="demo only: a daemon the demo starts gets N simulated GPUs (default 1); otherwise it uses "
                        "this node's real sensors")
    o.add_argument("--keep-daemon", action="store_true",
                   help="demo only: leave a daemon the demo starts running afterwards, so the dashboard stays up")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="joulemeter-train",
                                     description="Distil a sequence classifier and measure every phase's energy.")
    sub = parser.add_subparsers(dest="command", required=True)
    distill = sub.add_parser("distill", help="distil a student from a teacher (with --demo: the full demo)")
    _add_train_args(distill)
    compare = sub.add_parser("compare", help="teacher vs CE-only student vs distilled student: accuracy and energy")
    _add_train_args(compare)
    export = sub.add_parser("export-data", help="tokenise a data set once and save it (HF save_to_disk format)")
    _add_data_args(export)
    export.add_argument("--tokenizer", help="the models' tokenizer (hub name or folder); for 'synthetic', a "
                                            "WordPiece tokenizer is built and saved with the data when omitted")
    export.add_argument("--output", type=Path, required=True, help="folder to write (must be empty or absent)")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command == "export-data":
        if not args.dataset:
            parser.error("--dataset is required")
        return
    if args.demo:
        given = [f for f, v in (("--teacher-name", args.teacher_name), ("--student-name", args.student_name),
                                ("--dataset", args.dataset)) if v]
        if given:
            parser.error(f"--demo builds its own models and data; drop {', '.join(given)}")
        return
    missing = [f for f, v in (("--teacher-name", args.teacher_name), ("--student-name", args.student_name),
                              ("--dataset", args.dataset)) if not v]
    if missing:
        parser.error(f"{', '.join(missing)} required (or --demo)")
    if args.simulate_gpus or args.keep_daemon:
        parser.error("--simulate-gpus and --keep-daemon apply to the demo's own daemon; run yours with "
                     "`python -m telemetry_service serve`")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)

    from trainer.distill.errors import UsageError
    from trainer.distill.quiet import quiet_libraries

    quiet_libraries()
    try:
        if args.command == "export-data":
            from trainer.distill.commands import run_export

            run_export(args.dataset, args.tokenizer, args.output, args.max_length or 128, args.train_split,
                       args.eval_split, args.max_train_samples, args.max_eval_samples, args.seed)
            return 0
        from trainer.distill.commands import run_compare, run_distill
        from trainer.distill.options import Options

        opts = Options.from_args(args)
        (run_distill if args.command == "distill" else run_compare)(opts)
        return 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
