"""AEGIS_CPU_AFFINITY: which CPUs the feed, the brain and the executor are pinned to."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aegis.config import ConfigError, Settings
from aegis.cpu_affinity import AffinityError, cpus_for, parse_affinity


def plan(spec: str, available) -> dict[str, frozenset[int] | None]:
    return {name: cpus_for(name, spec, available) for name in ("feed", "brain", "executor")}


def test_auto_on_two_cpus_gives_the_brain_one_and_the_feed_and_executor_the_other():
    assert plan("auto", {0, 1}) == {"feed": {0}, "brain": {1}, "executor": {0}}


def test_auto_on_three_or_more_cpus_gives_each_its_own_from_the_available_ones():
    assert plan("auto", {2, 5, 7, 9}) == {"feed": {2}, "brain": {5}, "executor": {7}}


def test_auto_on_one_cpu_and_off_pin_nothing():
    assert set(plan("auto", {3}).values()) == {None}
    assert set(plan("off", {0, 1, 2}).values()) == {None}


def test_an_explicit_map_pins_what_it_names_and_nothing_else():
    assert plan("brain=2+3, feed=0", range(4)) == {"feed": {0}, "brain": {2, 3}, "executor": None}


def test_processes_other_than_the_three_are_never_pinned():
    assert cpus_for("watchdog", "auto", {0, 1}) is None


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("fast", "expected auto, off or process=cpu pairs"),
        ("brain=1,postgres=0", "'postgres=0': expected auto"),
        ("brain=1,brain=0", "brain is given twice"),
        ("brain=one", "CPUs must be numbers joined by +"),
        ("brain=-1", "cannot be negative"),
    ],
)
def test_a_malformed_value_is_refused_with_what_is_wrong(spec, why):
    with pytest.raises(AffinityError, match=why):
        parse_affinity(spec)


def test_a_cpu_the_kernel_cannot_use_is_refused_by_name():
    with pytest.raises(AffinityError, match=r"brain: CPU \[8\] is not available"):
        cpus_for("brain", "brain=8", {0, 1})


def test_settings_refuse_a_bad_value_naming_the_variable(monkeypatch):
    monkeypatch.setenv("AEGIS_CPU_AFFINITY", "brain:1")
    with pytest.raises(ConfigError, match="AEGIS_CPU_AFFINITY: 'brain:1'"):
        Settings.load()


PIN = """
import json, os, sys
from aegis.processes.runtime import pin_cpus
got = pin_cpus(sys.argv[1], sys.argv[2])
print(json.dumps([sorted(got) if got is not None else None, sorted(os.sched_getaffinity(0))]))
"""


def pinned(name: str, spec: str):
    out = subprocess.run([sys.executable, "-c", PIN, name, spec], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_process_started_with_auto_runs_only_on_its_cpus():
    second = sorted(os.sched_getaffinity(0))[1]  # auto gives the brain the second CPU
    assert pinned("brain", "auto") == [[second], [second]]


def test_a_cpu_this_process_cannot_use_leaves_it_unpinned_and_running():
    everything = sorted(os.sched_getaffinity(0))
    assert pinned("brain", "brain=4096") == [None, everything]
