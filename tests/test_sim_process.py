"""The simulator as its own process (CLI entry) and the /_sim control endpoints."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from aegis.binance.sim import SimulatorProcess, main

DAY2 = 1679097600000


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_simulator_process_serves_and_is_controlled_over_http():
    args = ["--symbols", "BTCUSDT", "--speed", "0", "--start-paused", "--start", "2023-03-18T00:00"]
    with SimulatorProcess(args) as proc:
        assert proc.info["symbols"] == 1 and proc.info["sim_time_ms"] == DAY2
        assert get_json(proc.rest_url + "/api/v3/time") == {"serverTime": DAY2}
        proc.set_faults(clock_skew_ms=1500)
        assert get_json(proc.rest_url + "/api/v3/time") == {"serverTime": DAY2 + 1500}
        log = proc.request_log()
        assert [e["path"] for e in log] == ["/api/v3/time", "/api/v3/time"]
        assert proc.status()["paused"] is True
        with pytest.raises(urllib.error.HTTPError) as bad:
            proc.set_faults(explode=1)
        assert bad.value.code == 400
        pid = proc.pid
    assert proc.proc.returncode == 0  # SIGTERM → clean exit
    assert pid > 0


def test_cli_bad_arguments_return_exit_code_2(capsys):
    assert main(["--speed", "fast"]) == 2
    assert main(["--symbols", "NOPEUSDT", "--port", "0"]) == 2
    assert "no kline file for ['NOPEUSDT']" in capsys.readouterr().err
    assert main(["--balance", "USDT=lots"]) == 2


def test_cli_lifetime_in_wall_time_scales_binances_24h_cut_by_the_speed():
    from aegis.binance.sim.cli import build_parser, config_from_args

    simulated = config_from_args(build_parser().parse_args(["--speed", "2000"]))
    wall = config_from_args(
        build_parser().parse_args(["--speed", "2000", "--lifetime-in-wall-time"])
    )
    assert simulated.connection_lifetime_ms == 86_400_000
    assert wall.connection_lifetime_ms == 86_400_000 * 2000
