"""`make bench`: run every benchmark area, print its table, write benchmarks/results/latest.json.

Each area lives in ``benchmarks/bench_<area>.py`` and exposes ``run() -> dict``. Areas run one
after another in fresh subprocesses so one area's threads, caches and garbage never colour the
next. Machine noise is measured before and after (see ``noise``) and written with the results,
so a figure can be read against how busy the machine was.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def areas() -> list[str]:
    """Modules ``bench_<area>.py`` with a ``run()`` (others are legs that an area imports)."""
    return sorted(
        p.stem.removeprefix("bench_")
        for p in HERE.glob("bench_*.py")
        if "\ndef run() -> dict:" in p.read_text()
    )


def noise(samples: int = 30) -> dict:
    """Time a fixed CPU-bound loop repeatedly: its spread is the machine's noise right now."""
    timings = []
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        acc = 0
        for i in range(200_000):
            acc += i * i
        timings.append((time.perf_counter_ns() - t0) / 1e6)
    timings.sort()
    return {
        "calibration_loop_ms_p50": statistics.median(timings),
        "calibration_loop_ms_min": timings[0],
        "calibration_loop_ms_max": timings[-1],
        "calibration_spread_pct": (timings[-1] - timings[0]) / timings[0] * 100.0,
        "loadavg_1m": os.getloadavg()[0],
    }


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_area_in_subprocess(area: str) -> dict:
    out = RESULTS / f".{area}.json"
    code = (
        "import json, sys; from benchmarks.run import run_area; "
        f"json.dump(run_area({area!r}), open({str(out)!r}, 'w'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=HERE.parent)
    if proc.returncode != 0 or not out.exists():
        return {"error": f"benchmark area {area!r} failed with exit code {proc.returncode}"}
    result = json.loads(out.read_text())
    out.unlink()
    return result


def run_area(area: str) -> dict:
    module = importlib.import_module(f"benchmarks.bench_{area}")
    print(f"\n=== {area} ===", flush=True)
    t0 = time.perf_counter()
    result = module.run()
    result.setdefault("elapsed_s", round(time.perf_counter() - t0, 2))
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the named areas (default: all). A partial run replaces only its areas in
    latest.json; each area keeps the time, the machine and its noise of the run that measured
    it."""
    wanted = (argv if argv is not None else sys.argv[1:]) or areas()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "latest.json"
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    before = noise()
    report = {"generated_at": now, "machine": machine(), "noise_before": before, "areas": {}}
    if set(wanted) != set(areas()) and path.exists():
        report["areas"] = json.loads(path.read_text()).get("areas", {})
    for area in wanted:
        result = run_area_in_subprocess(area)
        result["measured_at"] = now
        result["machine"] = report["machine"]
        result["noise_before"] = before
        report["areas"][area] = result
    report["noise_after"] = noise()
    path.write_text(json.dumps(report, indent=2, sort_keys=True))
    failed = [a for a, r in report["areas"].items() if "error" in r]
    print(
        f"\nwrote {path.relative_to(HERE.parent)}"
        + (f"; FAILED areas: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
