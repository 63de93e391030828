"""Specification of the kernel-wide REST weight budget (aegis.binance.weight), across processes."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from aegis.binance.weight import WeightBudget, WeightBudgetError, request_weight_limit

# A child process drawing weight 1 as fast as the budget allows, logging the clock reading at
# which each grant was decided (read under the lock), until its deadline.
CHILD = r"""
import json, os, sys, time
from aegis.binance.weight import WeightBudget
path, limit, window_s, until = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
stop = sys.argv[5] if len(sys.argv) > 5 else None
last = [0.0]
def clock():
    last[0] = time.time()
    return last[0]
budget = WeightBudget(path, limit=limit, share=0.5, window_s=window_s, clock=clock)
grants = []
while time.time() < until and not (stop and os.path.exists(stop)):
    if budget.try_acquire(1) == 0.0:
        grants.append(last[0])
    else:
        time.sleep(0.002)
print(json.dumps(grants))
"""


def _spawn(path, limit, window_s, until, stop=None):
    args = [sys.executable, "-c", CHILD, str(path), str(limit), str(window_s), str(until)]
    args += [str(stop)] if stop else []
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def _grants(proc) -> list[float]:
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return json.loads(out)


def test_weight_budget_two_processes_never_exceed_shared_cap(tmp_path):
    path, window_s = tmp_path / "run" / "weight.bin", 0.25
    WeightBudget(path, limit=40, share=0.5).close()  # cap 20 per window
    until = time.time() + 2.0
    procs = [_spawn(path, 40, window_s, until) for _ in range(2)]
    per_proc = [_grants(p) for p in procs]
    per_window = Counter(int(t // window_s) for grants in per_proc for t in grants)
    assert max(per_window.values()) == 20  # the cap is reached...
    assert all(n <= 20 for n in per_window.values())  # ...and never exceeded
    assert all(len(g) > 0 for g in per_proc)  # both processes were served
    assert sum(per_window.values()) >= 20 * 5  # the budget refills every window


def test_weight_budget_ban_in_one_process_silences_the_other(tmp_path):
    path = tmp_path / "weight.bin"
    WeightBudget(path, limit=100_000).close()
    until = time.time() + 10.0
    stop = tmp_path / "stop"
    child = _spawn(path, 100_000, 60.0, until, stop)
    with WeightBudget(path, limit=100_000) as here:
        while here.state().used == 0:  # wait until the child is sending
            assert time.time() < until - 3, "child never started"
            time.sleep(0.01)
        time.sleep(0.1)
        banned_until = time.time() + 1.0
        here.ban(banned_until)
        ban_applied = time.time()
        assert here.state().banned_until == pytest.approx(banned_until, abs=1e-3)
    time.sleep(max(banned_until - time.time(), 0) + 0.3)
    stop.touch()
    grants = _grants(child)
    assert any(t < ban_applied for t in grants)  # it was sending before the ban
    assert not [t for t in grants if ban_applied < t < banned_until]  # silent during it
    assert any(t >= banned_until for t in grants)  # and resumes after


def test_weight_budget_ban_never_lifts_before_its_exact_end(tmp_path):
    now = [1_000.0]
    with WeightBudget(tmp_path / "w.bin", limit=100, clock=lambda: now[0]) as budget:
        budget.ban(1_000.0004)  # not a whole millisecond: storing it must round up, never down
        now[0] = 1_000.0003
        assert budget.try_acquire(1) > 0
        now[0] = 1_000.001
        assert budget.try_acquire(1) == 0.0


class FakeClock:
    def __init__(self, now: float = 16_000 * 60.0) -> None:  # the start of a minute
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def budget(tmp_path, clock):
    with WeightBudget.for_home(tmp_path, limit=6000, share=0.5, clock=clock) as b:
        yield b


def test_weight_budget_for_home_lives_under_run(tmp_path, budget):
    assert budget.path == tmp_path / "run" / "weight.bin" and budget.cap == 3000


def test_weight_budget_full_window_waits_until_next_window(budget, clock):
    assert budget.try_acquire(3000) == 0.0
    clock.now += 20
    assert budget.try_acquire(1) == pytest.approx(40.0)
    clock.now += 40
    assert budget.try_acquire(1) == 0.0


def test_weight_budget_header_raises_count_but_never_lowers_it(budget, clock):
    budget.try_acquire(100)
    budget.observe_used_weight(2990)
    assert budget.state().used == 2990
    assert budget.try_acquire(20) > 0  # 2990 + 20 > 3000
    budget.observe_used_weight(5)
    assert budget.state().used == 2990


def test_weight_budget_429_holds_everyone_for_retry_after(budget, clock, tmp_path):
    with WeightBudget.for_home(tmp_path, clock=clock) as other:
        other.back_off(30)
    assert budget.try_acquire(1) == pytest.approx(30.0)
    clock.now += 30
    assert budget.try_acquire(1) == 0.0


def test_weight_budget_ban_outlasts_window_and_backoff(budget, clock):
    budget.back_off(5)
    budget.ban(clock.now + 300)
    clock.now += 120
    assert budget.try_acquire(1) == pytest.approx(180.0)
    budget.ban(clock.now + 10)  # a shorter ban never shortens the standing one
    assert budget.try_acquire(1) == pytest.approx(180.0)


async def test_weight_budget_acquire_sleeps_until_granted(budget, clock):
    budget.back_off(2.5)
    slept = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    await budget.acquire(10, sleep=fake_sleep)
    assert slept == [1.0, 1.0, pytest.approx(0.5)] and budget.state().used == 10


def test_weight_budget_weight_above_cap_is_an_error(budget):
    with pytest.raises(WeightBudgetError, match="exceeds"):
        budget.try_acquire(3001)


def test_weight_budget_foreign_file_is_refused(tmp_path):
    path = tmp_path / "weight.bin"
    path.write_bytes(b"x" * 64)
    with pytest.raises(WeightBudgetError, match="not a weight budget"):
        WeightBudget(path)


@pytest.mark.parametrize("share", [0, -0.5, 1.5])
def test_weight_budget_bad_share_is_refused(tmp_path, share):
    with pytest.raises(ValueError, match="share"):
        WeightBudget(tmp_path / "w.bin", share=share)


def test_request_weight_limit_read_from_real_exchange_info(data_dir):
    with gzip.open(data_dir / "exchange_info" / "binance_spot_exchangeInfo_20240908.json.gz") as fh:
        assert request_weight_limit(json.load(fh)) == 6000
    with gzip.open(data_dir / "exchange_info" / "binance_spot_exchangeInfo_20211012.json.gz") as fh:
        assert request_weight_limit(json.load(fh)) == 1200
    assert request_weight_limit({}) == 6000
