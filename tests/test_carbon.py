"""gCO2e beside the energy figures: the intensity rule checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from telemetry_service.carbon import Intensity, add_carbon, from_settings, read_series
from telemetry_service.config import Settings

SERIES = Intensity("test", np.array([0.0, 10.0, 20.0]), np.array([100.0, 300.0, 200.0]))


def test_constant_intensity():
    c = Intensity.constant(400)
    assert c.source == "constant 400 gCO2e/kWh"
    assert c.mean([123.0], [456.0]) == pytest.approx(400.0)


@pytest.mark.parametrize("starts, ends, want", [
    ([5.0], [15.0], (5 * 100 + 5 * 300) / 10),  # across a change
    ([-5.0], [5.0], 100.0),  # before the first row: the first holds
    ([25.0], [30.0], 200.0),  # after the last: the last holds
    ([5.0, 18.0], [15.0, 22.0], (500 + 1500 + 2 * 300 + 2 * 200) / 14),  # several intervals, by time
    ([12.0], [12.0], 300.0),  # a mark takes the value at its instant
])
def test_series_mean_is_time_weighted(starts, ends, want):
    assert SERIES.mean(starts, ends) == pytest.approx(want)


def _answer() -> dict:
    return {"total": {"energy_j": 3.6e6}, "run_share": {"energy_j": 1.8e6},
            "phases": [{"energy_j": 7.2e6, "run_share_j": None}, {"energy_j": 3.6e5, "run_share_j": 1.8e5}]}


def test_add_carbon_weights_each_phase_by_its_own_time():
    answer = _answer()
    # phase 0 runs [5, 15] (mean 200), phase 1 runs [12, 13] and [21, 22] (mean 250); the run [0, 20] (mean 200)
    add_carbon(answer, SERIES, np.array([0, 1, 1]), np.array([5.0, 12.0, 21.0]), np.array([15.0, 13.0, 22.0]),
               0.0, 20.0)
    assert answer["total"]["co2e_g"] == pytest.approx(200.0)  # 1 kWh x 200 g/kWh
    assert answer["run_share"]["co2e_g"] == pytest.approx(100.0)
    assert answer["phases"][0]["co2e_g"] == pytest.approx(400.0) and answer["phases"][0]["run_share_co2e_g"] is None
    assert answer["phases"][1]["co2e_g"] == pytest.approx(0.1 * 250) and answer["phases"][1]["run_share_co2e_g"] == pytest.approx(0.05 * 250)
    assert answer["carbon"]["source"] == "test" and answer["carbon"]["configured"] is True


def test_none_configured_says_so_and_adds_no_figures():
    answer = _answer()
    add_carbon(answer, None, np.array([0]), np.array([0.0]), np.array([1.0]), 0.0, 1.0)
    assert answer["carbon"]["configured"] is False and "no gCO2e" in answer["carbon"]["note"]
    assert "co2e_g" not in answer["total"] and "co2e_g" not in answer["phases"][0]
    assert from_settings(None, None) is None


def test_series_file_with_header_comments_and_any_order(tmp_path):
    f = tmp_path / "grid.csv"
    f.write_text("unix_time,gco2e_per_kwh\n# from the utility's export\n20,200\n0,100\n10,300\n")
    s = read_series(f)
    assert s.times.tolist() == [0, 10, 20] and s.values.tolist() == [100, 300, 200]
    assert s.source.startswith(f"file {f}")
    f.write_text("0,100\nten,300\n")
    with pytest.raises(ValueError, match="line 2"):
        read_series(f)


def test_settings_take_one_source(tmp_path):
    f = tmp_path / "grid.csv"
    f.write_text("0,100\n")
    with pytest.raises(ValidationError, match="not both"):
        Settings(carbon_intensity=300, carbon_intensity_file=f)
    with pytest.raises(ValidationError, match="cannot read"):
        Settings(carbon_intensity_file=tmp_path / "missing.csv")
    with pytest.raises(ValidationError):
        Settings(carbon_intensity=-1)
