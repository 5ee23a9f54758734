"""Bad arguments end with a clear one-line message and exit code 2, before any run is registered."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_proc import ROOT
from tests.distill_fixtures import ModelFolders, model_folders, run_cli  # noqa: F401  (fixture)


def _distill(folders, *extra: str) -> list[str]:
    return ["distill", "--teacher-name", str(folders.teacher), "--student-name", str(folders.student),
            "--dataset", str(folders.csv), "--telemetry-url", "http://127.0.0.1:9", *extra]


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "one"])
def test_kd_alpha_outside_unit_interval(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["distill", "--demo", "--kd-alpha", value], capsys)
    assert code == 2
    assert "argument --kd-alpha:" in err and ("must be in [0, 1]" in err or "expected a" in err)


def test_other_ranges_are_checked_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, flag in [(["--kd-T", "0"], "--kd-T"), (["--epochs", "0"], "--epochs"),
                       (["--grad-accum", "0"], "--grad-accum"), (["--warmup-ratio", "1"], "--warmup-ratio"),
                       (["--feat-beta", "-1"], "--feat-beta"), (["--feat-pool", "max"], "--feat-pool")]:
        code, _, err = run_cli(["distill", "--demo", *argv], capsys)
        assert code == 2 and f"argument {flag}" in err, (argv, err)


def test_required_and_conflicting_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["distill", "--teacher-name", "x"], capsys)
    assert code == 2 and "--student-name, --dataset required (or --demo)" in err
    code, _, err = run_cli(["compare", "--demo", "--teacher-name", "bert-base-uncased"], capsys)
    assert code == 2 and "--demo builds its own models and data; drop --teacher-name" in err
    code, _, err = run_cli(["distill", "--teacher-name", "a", "--student-name", "b", "--dataset", "c",
                            "--simulate-gpus"], capsys)
    assert code == 2 and "--simulate-gpus and --keep-daemon apply to the demo's own daemon" in err


def test_unknown_layer_index(model_folders, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    code, _, err = run_cli(_distill(model_folders, "--feat-beta", "1", "--t-layer", "9"), capsys)
    assert code == 2
    assert err.strip() == ("error: --t-layer 9 is out of range: the teacher has 5 hidden states (embeddings + 4 "
                           "layers), so valid indices are -5..4")
    code, _, err = run_cli(_distill(model_folders, "--s-layer", "-4"), capsys)
    assert code == 2 and err.startswith("error: --s-layer -4 is out of range: the student has 3 hidden states")


def test_mismatched_tokenizers(model_folders, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    argv = _distill(model_folders)
    argv[argv.index("--student-name") + 1] = str(model_folders.other_student)
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.startswith("error: the teacher and student tokenizers disagree: vocabularies of")
    assert len(err.strip().splitlines()) == 1


def test_missing_data_folder_and_model_folder(model_folders, tmp_path: Path,  # noqa: F811
                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = _distill(model_folders)
    argv[argv.index("--dataset") + 1] = str(tmp_path / "no-such-folder")
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.strip() == f"error: no such data folder: {tmp_path / 'no-such-folder'}"
    argv = _distill(model_folders)
    argv[argv.index("--teacher-name") + 1] = str(tmp_path / "no-teacher")
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.strip() == f"error: no model folder {str(tmp_path / 'no-teacher')!r}"


def test_precision_needs_a_gpu(model_folders, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    code, _, err = run_cli(_distill(model_folders, "--device", "cpu", "--precision", "bf16"), capsys)
    assert code == 2 and err.strip() == "error: --precision bf16 needs a CUDA device (this run uses cpu); use fp32"


def test_module_entry_point_exits_2_with_the_message() -> None:
    proc = subprocess.run([sys.executable, "-m", "trainer", "compare", "--demo", "--kd-alpha", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "error: argument --kd-alpha: must be in [0, 1], got 2" in proc.stderr


def test_teacher_without_a_trained_head_must_be_fine_tuned_first(model_folders,  # noqa: F811
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.cli import build_parser
    from trainer.distill.job import prepare
    from trainer.distill.options import Options

    argv = _distill(model_folders)
    argv[argv.index("--teacher-name") + 1] = str(model_folders.bare_teacher)
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.startswith(f"error: the teacher {str(model_folders.bare_teacher)!r} has no trained "
                                        "classification head")
    job = prepare(Options.from_args(build_parser().parse_args([*argv, "--teacher-epochs", "1", "--output-dir",
                                                                str(model_folders.csv.parent / "out")])))
    assert job.teacher_train is not None and job.teacher_train.epochs == 1
    assert job.teacher.config.num_labels == 2
