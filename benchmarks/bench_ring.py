"""Benchmark of the shared-memory ring against the usual inter-process queues.

Producer and consumer always run in separate spawned processes and move 64-byte records
(seq, send time, symbol id, OHLCV). For every transport it measures, in one run:

- one-way latency p50/p99/p99.9/max at a paced rate (default 20k records/s, 100k samples),
  stamped with ``time.perf_counter_ns()`` on both sides (CLOCK_MONOTONIC, shared);
- round-trip p50/p99 (ping, echo on a second channel, pong);
- saturated throughput over 1M records;
- the consumer's CPU% while idle (before the latency run starts);
- loss and order for every run (a lost record hangs the receiver into a timeout error).

Peers: ``multiprocessing.Queue``, ``multiprocessing.Pipe``, ``faster_fifo.Queue`` and pyzmq
PUSH/PULL over ``ipc://``, each moving one 64-byte message per record. Machine noise (a fixed
calibration loop's spread, load average) is measured before and after. Run alone with
``python -m benchmarks.bench_ring``; ``AEGIS_BENCH_QUICK=1`` uses few samples. Keys of the
returned dict are documented in ``benchmarks/README.md`` (section "ring").
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import statistics
import tempfile
import time
import uuid

import numpy as np

from benchmarks import ring_transports as rt

SPAWN = multiprocessing.get_context("spawn")
RING_CAPACITY = 1 << 16
BATCH = 1024
CHILD_TIMEOUT_S = 180.0


def _config() -> dict:
    quick = os.environ.get("AEGIS_BENCH_QUICK") == "1"
    return {
        "quick": quick,
        "record_bytes": rt.BENCH_DTYPE.itemsize,
        "paced_rate_per_s": 20_000,
        "latency_samples": 10_000 if quick else 100_000,
        "roundtrip_samples": 2_000 if quick else 20_000,
        "throughput_records": 100_000 if quick else 1_000_000,
        "throughput_runs": 1 if quick else 3,
        "idle_seconds": 0.5 if quick else 1.0,
        "ring_capacity": RING_CAPACITY,
        "ring_batch_size": BATCH,
    }


# Transport rows: (name, kind, producer wait, consumer wait, batch API?)
RING_ROWS = (
    ("ring_record", "BusySpinWait", "BusySpinWait", False),
    ("ring_record_default", "BlockingWait", "BlockingWait", False),
    ("ring_record_yielding", "YieldingWait", "YieldingWait", False),
    ("ring_batch", "BusySpinWait", "BusySpinWait", True),
)
PEERS = ("mp_queue", "mp_pipe", "faster_fifo", "zmq_ipc")
DESCRIPTIONS = {
    "ring_record": "aegis ring, per-record publish from producer.slot, consumer busy-spins",
    "ring_record_default": "aegis ring, per-record publish, consumer in the default BlockingWait",
    "ring_record_yielding": "aegis ring, per-record publish, consumer in YieldingWait",
    "ring_batch": f"aegis ring, publish_batch (chunks of {BATCH} in the throughput run, one "
    "record per call when paced), consumer busy-spins",
    "mp_queue": "multiprocessing.Queue put/get of 64-byte bytes",
    "mp_pipe": "multiprocessing.Pipe(duplex=False) send_bytes/recv_bytes",
    "faster_fifo": "faster_fifo.Queue put/get of 64-byte bytes (64 MB buffer)",
    "zmq_ipc": "pyzmq PUSH/PULL over ipc://, one 64-byte frame per record",
}


class _Channel:
    """One producer->consumer channel of a transport; ``close`` frees what the parent made."""

    def __init__(self, transport: str, tmpdir: str) -> None:
        self._rings = []
        if transport.startswith("ring"):
            from aegis.ringbuffer import Ring

            _, producer_wait, consumer_wait, batch = next(r for r in RING_ROWS if r[0] == transport)
            name = f"aegis-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._rings.append(Ring.create(name, rt.BENCH_DTYPE, RING_CAPACITY, consumers=1))
            self.send_spec = ("ring", name, producer_wait, batch)
            self.recv_spec = ("ring", name, consumer_wait)
        elif transport == "mp_queue":
            q = SPAWN.Queue()
            self.send_spec = self.recv_spec = ("mp_queue", q)
        elif transport == "mp_pipe":
            receiving, sending = SPAWN.Pipe(duplex=False)
            self.send_spec, self.recv_spec = ("mp_pipe", sending), ("mp_pipe", receiving)
        elif transport == "faster_fifo":
            import faster_fifo

            q = faster_fifo.Queue(max_size_bytes=64 * 1024 * 1024)
            self.send_spec = self.recv_spec = ("faster_fifo", q)
        elif transport == "zmq_ipc":
            os.makedirs(tmpdir, exist_ok=True)  # survive a /tmp sweep by a parallel job
            address = f"ipc://{tmpdir}/{uuid.uuid4().hex[:8]}.sock"
            self.send_spec = self.recv_spec = ("zmq", address)
        else:
            raise ValueError(transport)

    def close(self) -> None:
        for ring in self._rings:
            ring.close()


def _run_pair(first, first_args, second, second_args) -> dict:
    """Run two child roles sharing a ready event and a result queue; return their results."""
    ready, results = SPAWN.Event(), SPAWN.Queue()
    children = [
        SPAWN.Process(target=first, args=(*first_args, ready, results), daemon=True),
        SPAWN.Process(target=second, args=(*second_args, ready, results), daemon=True),
    ]
    for child in children:
        child.start()
    collected: dict = {}
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    try:
        while len(collected) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark child timed out (lost records or a hang)")
            try:
                role, payload = results.get(timeout=1.0)
            except queue.Empty:
                failed = [c.exitcode for c in children if c.exitcode not in (None, 0)]
                if failed:
                    raise RuntimeError(f"benchmark child exited with {failed}") from None
                continue
            collected[role] = payload
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join(5)
    return collected


def _us(values_ns: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values_ns, q)) / 1e3, 2)


def _latency(transport: str, cfg: dict, tmpdir: str) -> dict:
    channel = _Channel(transport, tmpdir)
    try:
        out = _run_pair(
            rt.latency_receiver, (channel.recv_spec, cfg["latency_samples"], cfg["idle_seconds"]),
            rt.paced_sender, (channel.send_spec, cfg["latency_samples"], cfg["paced_rate_per_s"]),
        )  # fmt: skip
    finally:
        channel.close()
    lat = out["receiver"]["latencies_ns"]
    return {
        "latency_us": {"p50": _us(lat, 50), "p99": _us(lat, 99), "p999": _us(lat, 99.9),
                       "max": round(float(lat.max()) / 1e3, 2), "samples": len(lat),
                       "out_of_order": out["receiver"]["disorder"],
                       "achieved_rate_per_s": round(out["sender"]["achieved_rate_per_s"]),
                       "late_sends_over_20us": out["sender"]["late_over_20us"]},
        "idle_cpu_pct": round(out["receiver"]["idle_cpu_pct"], 3),
    }  # fmt: skip


def _round_trip(transport: str, cfg: dict, tmpdir: str) -> dict:
    there, back = _Channel(transport, tmpdir), _Channel(transport, tmpdir)
    count = cfg["roundtrip_samples"]
    try:
        out = _run_pair(
            rt.echoer, (there.recv_spec, back.send_spec, count),
            rt.pinger, (there.send_spec, back.recv_spec, count),
        )  # fmt: skip
    finally:
        there.close()
        back.close()
    trips = out["sender"]["round_trips_ns"]
    return {"p50": _us(trips, 50), "p99": _us(trips, 99), "samples": len(trips),
            "out_of_order": out["sender"]["disorder"]}  # fmt: skip


def _throughput(transport: str, cfg: dict, tmpdir: str) -> dict:
    count = cfg["throughput_records"]
    runs, disorder = [], 0
    for _ in range(cfg["throughput_runs"]):
        channel = _Channel(transport, tmpdir)
        try:
            out = _run_pair(
                rt.flood_receiver, (channel.recv_spec, count),
                rt.flood_sender, (channel.send_spec, count),
            )  # fmt: skip
        finally:
            channel.close()
        runs.append((out["receiver"]["finished_ns"] - out["sender"]["started_ns"]) / 1e9)
        disorder += out["receiver"]["disorder"]
    seconds = statistics.median(runs)
    return {"records": count, "runs": len(runs), "seconds": round(seconds, 4),
            "records_per_s": round(count / seconds),
            "best_records_per_s": round(count / min(runs)),
            "runs_records_per_s": [round(count / r) for r in runs],
            "out_of_order": disorder}  # fmt: skip


def _noise(samples: int = 15) -> dict:
    timings = []
    for _ in range(samples):
        start = time.perf_counter_ns()
        acc = 0
        for i in range(200_000):
            acc += i * i
        timings.append((time.perf_counter_ns() - start) / 1e6)
    timings.sort()
    return {"calibration_loop_ms_min": round(timings[0], 3),
            "calibration_loop_ms_p50": round(statistics.median(timings), 3),
            "calibration_loop_ms_max": round(timings[-1], 3),
            "calibration_spread_pct": round((timings[-1] - timings[0]) / timings[0] * 100, 1),
            "loadavg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}  # fmt: skip


def _idle_only(wait: str, seconds: float) -> float:
    """Idle CPU% of a ring consumer with ``wait`` (for the strategies not used above)."""
    channel = _Channel("ring_record", tempfile.gettempdir())
    try:
        spec = ("ring", channel.recv_spec[1], wait)
        out = _run_pair(rt.latency_receiver, (spec, 1, seconds),
                        rt.paced_sender, (channel.send_spec, 1, 1000.0))  # fmt: skip
    finally:
        channel.close()
    return round(out["receiver"]["idle_cpu_pct"], 3)


def _measure(transport: str, cfg: dict, tmpdir: str) -> dict:
    row: dict = {"description": DESCRIPTIONS[transport]}
    if transport.startswith("ring"):
        producer_wait, consumer_wait = next((r[1], r[2]) for r in RING_ROWS if r[0] == transport)
        row["wait"] = {"producer": producer_wait, "consumer": consumer_wait}
    else:
        row["wait"] = {"producer": "blocking put/send", "consumer": "blocking get/recv"}
    for key, fn in (("one_way", _latency), ("round_trip_us", _round_trip),
                    ("throughput", _throughput)):  # fmt: skip
        try:
            result = fn(transport, cfg, tmpdir)
        except Exception as exc:  # a failing peer must not hide the other figures
            row[key if key != "one_way" else "latency_us"] = {"error": repr(exc)}
            continue
        if key == "one_way":
            row.update(result)
        else:
            row[key] = result
        print(f"  {transport:<20} {key:<14} done at {time.strftime('%H:%M:%S')}", flush=True)
    return row


def _ratio(peer: float | None, ring: float | None) -> float | None:
    if not peer or not ring:
        return None
    return round(peer / ring, 3)


def _get(row: dict, *path: str) -> float | None:
    for key in path:
        if not isinstance(row, dict) or key not in row:
            return None
        row = row[key]
    return row if isinstance(row, int | float) else None


def _ratios(transports: dict) -> dict:
    ring, batch = transports["ring_record"], transports["ring_batch"]
    ratios = {}
    for name in PEERS:
        peer = transports[name]
        ratios[name] = {
            "latency_p50_x": _ratio(_get(peer, "latency_us", "p50"), _get(ring, "latency_us", "p50")),
            "latency_p99_x": _ratio(_get(peer, "latency_us", "p99"), _get(ring, "latency_us", "p99")),
            "round_trip_p50_x": _ratio(_get(peer, "round_trip_us", "p50"),
                                       _get(ring, "round_trip_us", "p50")),
            "throughput_record_x": _ratio(_get(ring, "throughput", "records_per_s"),
                                          _get(peer, "throughput", "records_per_s")),
            "throughput_batch_x": _ratio(_get(batch, "throughput", "records_per_s"),
                                         _get(peer, "throughput", "records_per_s")),
        }  # fmt: skip
    return ratios


def _targets(transports: dict) -> dict:
    ring = transports["ring_record"]
    p50, p99 = _get(ring, "latency_us", "p50"), _get(ring, "latency_us", "p99")
    queue_p50 = _get(transports["mp_queue"], "latency_us", "p50")
    default_idle = _get(transports["ring_record_default"], "idle_cpu_pct")
    record_tp = _get(ring, "throughput", "records_per_s")
    batch_tp = _get(transports["ring_batch"], "throughput", "records_per_s")
    return {
        "record_latency_p50_le_3us": p50 is not None and p50 <= 3.0,
        "record_latency_p99_le_20us": p99 is not None and p99 <= 20.0,
        "record_latency_p50_10x_below_mp_queue": bool(p50 and queue_p50 and queue_p50 >= 10 * p50),
        "record_throughput_ge_1_5M": record_tp is not None and record_tp >= 1.5e6,
        "batch_throughput_ge_50M": batch_tp is not None and batch_tp >= 50e6,
        "default_idle_cpu_le_2pct": default_idle is not None and default_idle <= 2.0,
    }


def _print_table(result: dict) -> None:
    def cell(row, *path, fmt="{:.2f}"):
        value = _get(row, *path)
        return "err" if value is None else fmt.format(value)

    print(f"{'transport':<20}{'p50':>8}{'p99':>9}{'p99.9':>9}{'max':>10}{'rt p50':>9}"
          f"{'rt p99':>9}{'rec/s':>14}{'idle%':>8}  wait (consumer)")  # fmt: skip
    for name, row in result["transports"].items():
        print(f"{name:<20}{cell(row, 'latency_us', 'p50'):>8}{cell(row, 'latency_us', 'p99'):>9}"
              f"{cell(row, 'latency_us', 'p999'):>9}{cell(row, 'latency_us', 'max'):>10}"
              f"{cell(row, 'round_trip_us', 'p50'):>9}{cell(row, 'round_trip_us', 'p99'):>9}"
              f"{cell(row, 'throughput', 'records_per_s', fmt='{:,.0f}'):>14}"
              f"{cell(row, 'idle_cpu_pct'):>8}  {row['wait']['consumer']}")  # fmt: skip
    print("latencies in microseconds; ratios = peer / ring_record (latency), ring / peer (rec/s)")
    for name, ratio in result["ratios"].items():
        print(f"  {name:<12} " + "  ".join(f"{k}={v}" for k, v in ratio.items()))
    print("idle CPU% of other ring strategies:", result["ring_idle_cpu_pct_by_wait"])
    print("targets:", result["targets"])
    print("noise before:", result["noise_before"], "\nnoise after: ", result["noise_after"])


def run() -> dict:
    """Measure every transport; print the table and return the JSON-able results."""
    cfg = _config()
    result: dict = {"config": cfg, "noise_before": _noise(), "transports": {}}
    with tempfile.TemporaryDirectory(prefix="ringbench-", ignore_cleanup_errors=True) as tmpdir:
        for transport in [r[0] for r in RING_ROWS] + list(PEERS):
            result["transports"][transport] = _measure(transport, cfg, tmpdir)
    result["ring_idle_cpu_pct_by_wait"] = {
        wait: _idle_only(wait, cfg["idle_seconds"]) for wait in ("SleepingWait", "YieldingWait")
    }
    result["ring_idle_cpu_pct_by_wait"]["BusySpinWait"] = _get(
        result["transports"]["ring_record"], "idle_cpu_pct"
    )
    result["ring_idle_cpu_pct_by_wait"]["BlockingWait"] = _get(
        result["transports"]["ring_record_default"], "idle_cpu_pct"
    )
    result["noise_after"] = _noise()
    result["ratios"] = _ratios(result["transports"])
    result["targets"] = _targets(result["transports"])
    _print_table(result)
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
