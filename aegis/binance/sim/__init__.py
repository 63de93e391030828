"""A Binance spot simulator on loopback that replays recorded real 1m klines.

Public API:

* ``BinanceSimulator(config: SimConfig | None = None, faults: FaultPlan | None = None)`` — an
  async context manager (``start()`` / ``stop()``) exposing ``rest_url`` (REST under
  ``/api/v3``), ``ws_url`` (``/stream?streams=...`` and ``/ws/<stream>``), ``ws_api_url``
  (``/ws-api/v3``), ``stream_url(streams)``, ``clock`` (``SimClock``: ``now_ms``, ``pause``,
  ``resume``, ``advance_to``), ``faults`` (``FaultPlan``), ``request_log`` (``RequestLog``),
  ``account(api_key=None)``, ``engine``, ``market``, ``server_time_ms()``, ``status()``,
  ``drop_stream_connections()``, ``drop_ws_api_connections()``,
  ``shut_down_connections(notice_s)``.
* ``SimConfig`` / ``AccountSpec`` — frozen run configuration.
* ``FaultPlan`` — faults to inject, changeable while running.
* ``SimulatorProcess(args)`` — the same server in a child process, controlled over
  ``/_sim/status``, ``/_sim/faults``, ``/_sim/request_log``, ``/_sim/clock``.
* ``main(argv) -> int`` — ``aegis-kernel simulate`` (also ``python -m aegis.binance.sim``).
"""

from aegis.binance.sim.config import AccountSpec, SimConfig
from aegis.binance.sim.faults import FaultPlan
from aegis.binance.sim.process import SimulatorProcess


def main(argv: list[str] | None = None) -> int:
    """Run ``aegis-kernel simulate`` with ``argv``; return the exit code."""
    from aegis.binance.sim.cli import main as cli_main

    return cli_main(argv)


def __getattr__(name: str):
    # The server pulls in aiohttp; import it only when asked for.
    if name == "BinanceSimulator":
        from aegis.binance.sim.server import BinanceSimulator

        return BinanceSimulator
    raise AttributeError(name)


__all__ = ["AccountSpec", "BinanceSimulator", "FaultPlan", "SimConfig", "SimulatorProcess", "main"]
