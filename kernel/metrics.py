"""Prometheus ``/metrics`` and a ``/healthz`` for container health checks, on 127.0.0.1.

Served by a daemon thread of the watchdog; every scrape reads the control block and the ring
headers at that instant, so the watchdog's loop never does any metrics work.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from aegis.kernel.status import KernelSnapshot, health

log = logging.getLogger(__name__)


class KernelCollector:
    """Turn one ``KernelSnapshot`` per scrape into metric families."""

    def __init__(self, take_snapshot: Callable[[], KernelSnapshot]) -> None:
        self._take = take_snapshot

    def collect(self) -> Iterator[object]:
        snap = self._take()
        restarts = CounterMetricFamily(
            "aegis_process_restarts", "Restarts of a process", labels=["process"]
        )
        stalls = CounterMetricFamily(
            "aegis_process_stalls", "Hangs detected (heartbeat or start)", labels=["process"]
        )
        up = GaugeMetricFamily(
            "aegis_process_up", "1 when the process is RUNNING", labels=["process"]
        )
        hb = GaugeMetricFamily(
            "aegis_process_heartbeat_age_seconds",
            "Seconds since the process's last heartbeat",
            labels=["process"],
        )
        rss = GaugeMetricFamily("aegis_process_rss_bytes", "Resident memory", labels=["process"])
        cpu = GaugeMetricFamily(
            "aegis_process_cpu_percent", "CPU use (100 = one core)", labels=["process"]
        )
        spare = GaugeMetricFamily(
            "aegis_process_spare_ready",
            "1 when a warm spare is ready to replace the process",
            labels=["process"],
        )
        for p in snap.processes:
            spare.add_metric([p.name], 1.0 if p.spare == "ready" else 0.0)
            restarts.add_metric([p.name], p.restarts)
            stalls.add_metric([p.name], p.stalls)
            up.add_metric([p.name], 1.0 if p.state == "RUNNING" else 0.0)
            if p.heartbeat_age_s is not None:
                hb.add_metric([p.name], p.heartbeat_age_s)
            rss.add_metric([p.name], p.rss_mb * 1024 * 1024)
            cpu.add_metric([p.name], p.cpu_pct)
        lag = GaugeMetricFamily(
            "aegis_ring_lag", "Records published but not yet consumed", labels=["ring", "consumer"]
        )
        cursor = CounterMetricFamily(
            "aegis_ring_published", "Records published to the ring", labels=["ring"]
        )
        full = CounterMetricFamily(
            "aegis_ring_stalls",
            "Times the producer found the ring full (a slow consumer)",
            labels=["ring"],
        )
        for r in snap.rings:
            cursor.add_metric([r.ring], r.cursor)
            full.add_metric([r.ring], r.stalls)
            for c in r.consumers:
                lag.add_metric([r.ring, c.consumer], c.lag)
        healthy = GaugeMetricFamily("aegis_kernel_healthy", "1 when /healthz answers 200")
        healthy.add_metric([], 0.0 if health(snap) else 1.0)
        yield from (restarts, stalls, up, hb, rss, cpu, spare, lag, cursor, full, healthy)


class MetricsServer:
    """``/metrics`` and ``/healthz`` on ``127.0.0.1:port`` in a daemon thread."""

    def __init__(self, take_snapshot: Callable[[], KernelSnapshot], port: int) -> None:
        self._take = take_snapshot
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(KernelCollector(take_snapshot))
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="kernel-metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://127.0.0.1:%d/metrics and /healthz", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry, take = self.registry, self._take

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    if self.path.split("?")[0] == "/metrics":
                        self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                    elif self.path.split("?")[0] == "/healthz":
                        problems = health(take())
                        body = json.dumps({"healthy": not problems, "problems": problems})
                        self._send(503 if problems else 200, "application/json", body.encode())
                    else:
                        self._send(404, "text/plain", b"not found\n")
                except Exception as exc:  # the kernel is shutting down under us
                    self._send(503, "text/plain", f"unavailable: {exc}\n".encode())

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # scrapes are not business events
                pass

        return Handler
