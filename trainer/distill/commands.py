"""The subcommands' work: distill, compare (with the demo's daemon handling) and export-data."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from trainer.distill import compare as cmp
from trainer.distill import report
from trainer.distill.job import Job, prepare
from trainer.distill.local_daemon import ensure_daemon, ledger_url
from trainer.distill.options import Options
from trainer.distill.telemetry import TelemetryFactory, client_factory, daemon_url


@contextlib.contextmanager
def _daemon(opts: Options, console: Console) -> Iterator[str]:
    url = daemon_url(opts.telemetry_url)
    if not opts.demo:
        yield url
        return
    with ensure_daemon(url, Path(opts.output_dir), opts.simulate_gpus, keep=opts.keep_daemon) as handle:
        if handle.started:
            kind = f"{opts.simulate_gpus} simulated GPU(s) and this node's sensors" if opts.simulate_gpus else \
                "this node's sensors"
            console.print(f"Started a telemetry daemon at {url} ({kind}); ledger and log in {opts.output_dir}. "
                          f"To see these runs again later: python -m telemetry_service serve --db "
                          f"{ledger_url(Path(opts.output_dir))}")
        elif opts.simulate_gpus:
            console.print(f"A daemon already answers at {url}; --simulate-gpus only applies to one the demo starts")
        yield url
        if handle.pid is not None:
            console.print(f"The daemon keeps running so the dashboard stays up (pid {handle.pid}; stop it with "
                          f"`kill {handle.pid}`, it writes everything before it exits)")


def _print_outcomes(console: Console, job: Job, outcomes: list[cmp.Outcome], url: str, results: Path) -> None:
    distilled = next(o for o in outcomes if o.role == "distilled")
    if distilled.energy is not None:
        console.print(report.phase_table(distilled.energy, f"Energy per phase: {job.run_prefix}/distilled "
                                                           f"(run {distilled.run_id})"))
    else:
        console.print(f"[yellow]No energy figures: the daemon at {url} did not answer.[/yellow]")
    rows = cmp.summarise(outcomes)
    console.print(report.comparison_table(rows, f"Comparison on {job.data.source} ({len(job.data.eval)} held-out "
                                                f"examples, {job.device}, {job.precision.name})"))
    if any(r["train_method"] == "estimated" for r in rows):
        console.print("CPU energy is an estimate (an idle floor plus utilisation × the rest of the TDP): RAPL is "
                      "not readable on this machine.")
    cmp.write_results(results, job, outcomes, rows, url)
    console.print(f"Results: {results}")
    console.print(f"Dashboard: {url}/")


def run_distill(opts: Options, factory: TelemetryFactory | None = None, console: Console | None = None) -> list[cmp.Outcome]:
    """`distill`: the distilled student (after fine-tuning the teacher, if asked); the demo runs the comparison."""
    if opts.demo:
        return run_compare(opts, factory, console)
    console = console or Console()
    job = prepare(opts)
    _save_hparams(job)
    with _daemon(opts, console) as url:
        factory = factory or client_factory(url)
        outcomes = [cmp.teacher_outcome(job, factory)] if job.teacher_train is not None else []
        outcomes.append(cmp.distilled_outcome(job, factory))
        _print_outcomes(console, job, outcomes, url, job.output_dir / "results.json")
    return outcomes


def run_compare(opts: Options, factory: TelemetryFactory | None = None, console: Console | None = None) -> list[cmp.Outcome]:
    """`compare` (and the demo): teacher, CE-only student and distilled student, each under its own run."""
    console = console or Console()
    began = time.monotonic()
    job = prepare(opts)
    _save_hparams(job)
    with _daemon(opts, console) as url:
        factory = factory or client_factory(url)
        outcomes = [cmp.teacher_outcome(job, factory), cmp.baseline_outcome(job, factory),
                    cmp.distilled_outcome(job, factory)]
        _print_outcomes(console, job, outcomes, url, job.output_dir / "results.json")
    if opts.demo:
        console.print(f"Demo finished in {time.monotonic() - began:.0f} s.")
    return outcomes


def _save_hparams(job: Job) -> None:
    (job.output_dir / "hparams.json").write_text(json.dumps(job.hparams(), indent=2, default=str))


def run_export(dataset: str, tokenizer_name: str | None, output: Path, max_length: int, train_split: str,
               eval_split: str, max_train: int | None, max_eval: int | None, seed: int,
               console: Console | None = None) -> dict[str, Any]:
    """`export-data`: tokenise once and save (HF format) with what is needed to check it is used consistently."""
    from trainer.distill import data as data_mod
    from trainer.distill.errors import UsageError
    from trainer.distill.models import load_tokenizer

    console = console or Console()
    if output.exists() and any(output.iterdir()):
        raise UsageError(f"the output folder {output} is not empty")
    text = data_mod.load_text(dataset, train_split, eval_split, max_train, max_eval, seed)
    if tokenizer_name is not None:
        tokenizer = load_tokenizer(tokenizer_name)
    elif dataset == data_mod.SYNTHETIC:
        tokenizer = data_mod.build_wordpiece_tokenizer(list(text.train["text"]), output / "tokenizer")
    else:
        raise UsageError("--tokenizer is required (the models' tokenizer: a hub name or a local folder)")
    tokenized = data_mod.tokenize(text, tokenizer, max_length)
    data_mod.save_tokenized(tokenized, output)
    console.print(f"Saved {len(tokenized.train)} training and {len(tokenized.eval)} held-out examples "
                  f"({tokenized.num_labels} labels, max length {max_length}) to {output}")
    return tokenized.meta()
