"""Every CLI error is one plain sentence on standard error, with status 2."""

from __future__ import annotations

import pytest

from telemetry_service.cli import main


def _error(capsys, *argv: str) -> str:
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse exits
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_bad_setting_names_its_flag_without_pydantic_text(capsys):
    err = _error(capsys, "serve", "--interval", "0")
    assert "--interval/TELEMETRY_INTERVAL 0.0: input should be greater than 0" in err
    assert "http" not in err and "validation error" not in err


def test_an_unknown_flag_points_at_the_subcommand(capsys):
    err = _error(capsys, "serve", "--prot")
    assert err == "error: unrecognized arguments: --prot (see python -m telemetry_service serve --help)\n"


@pytest.mark.parametrize("argv, words", [
    (["report"], "required: RUN"),
    (["serve", "--interval", "x"], "invalid float value"),
    (["serve", "--carbon-intensity", "1", "--carbon-intensity-file", "/nonexistent.csv"], "not both"),
])
def test_other_errors_are_one_sentence(capsys, argv, words):
    assert words in _error(capsys, *argv)
