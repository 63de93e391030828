"""The ring kernels, on both backends: Numba's JIT and the ahead-of-time module built from the
same source. Each kernel is checked against a real ring segment; the loader never runs a module
built from other sources; a process on the ahead-of-time kernels never loads Numba.

Run the other ring tests on one backend with ``AEGIS_RING_KERNELS=jit`` or ``=aot``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from aegis.ringbuffer import Ring, aot, kernels
from aegis.ringbuffer.layout import (
    CURSOR,
    WAKE_ON_COMMIT,
    WAKE_ON_PUBLISH,
    consumer_sequence_word,
    consumer_wake_word,
)

REPO = Path(__file__).resolve().parents[1]
DTYPE = np.dtype([("v", np.int64)])


def aot_kernels() -> kernels.RingKernels:
    try:
        return kernels.load("aot")
    except ImportError as exc:
        pytest.skip(f"{exc} (build them with `python -m aegis.ringbuffer.aot`)")


@pytest.fixture(params=["jit", "aot"])
def k(request) -> kernels.RingKernels:
    chosen = kernels.load("jit") if request.param == "jit" else aot_kernels()
    assert chosen.backend == request.param
    return chosen


@pytest.fixture
def ring():
    with Ring.create(f"aegis-test-{uuid.uuid4().hex[:12]}", DTYPE, capacity=4, consumers=2) as r:
        yield r


def values(ring: Ring) -> list[int]:
    return [int(v) for v in ring._records["v"]]


def test_store_release_then_load_acquire_round_trip_a_word(k):
    words = np.zeros(8, np.int64)
    k.store_release(words.ctypes.data, 3, -42)
    assert words.tolist() == [0, 0, 0, -42, 0, 0, 0, 0]
    assert k.load_acquire(words.ctypes.data, 3) == -42


def test_try_publish_fills_the_ring_then_refuses_until_the_slowest_consumer_commits(k, ring):
    base, record = ring._base, np.zeros(1, DTYPE)
    results = []
    for v in range(1, 6):
        record["v"] = v
        results.append(k.try_publish(base, record.ctypes.data))
    assert results == [0, 0, 0, 0, -1]  # no sleepers, then full: nothing written
    assert (k.load_acquire(base, CURSOR), values(ring)) == (4, [1, 2, 3, 4])
    k.store_release(base, consumer_sequence_word(0), 2)
    assert k.try_publish(base, record.ctypes.data) == -1  # consumer 1 still holds slot 0
    k.store_release(base, consumer_sequence_word(1), 1)
    assert k.try_publish(base, record.ctypes.data) == 0
    assert (k.load_acquire(base, CURSOR), values(ring)) == (5, [5, 2, 3, 4])


def test_publishing_returns_the_mask_of_consumers_asleep_until_a_publish(k, ring):
    base, record = ring._base, np.zeros(1, DTYPE)
    ring._meta[consumer_wake_word(0)] = WAKE_ON_COMMIT  # a publish is not what it waits for
    ring._meta[consumer_wake_word(1)] = WAKE_ON_PUBLISH
    assert k.try_publish(base, record.ctypes.data) == 0b10
    assert k.publish_batch(base, np.zeros(2, DTYPE).ctypes.data, 0, 2) == (2, 0b10)


def test_publish_batch_publishes_what_fits_and_resumes_from_start(k, ring):
    base = ring._base
    records = np.array([(v,) for v in range(10, 16)], DTYPE)
    address = records.ctypes.data
    assert k.publish_batch(base, address, 0, 6) == (4, 0)
    assert k.publish_batch(base, address, 4, 6) == (0, 0)  # full
    assert k.publish_batch(base, address, 6, 6) == (0, 0)  # nothing asked
    for index in (0, 1):
        k.store_release(base, consumer_sequence_word(index), 3)
    assert k.publish_batch(base, address, 4, 6) == (2, 0)
    assert (k.load_acquire(base, CURSOR), values(ring)) == (6, [14, 15, 12, 13])


def test_spin_until_returns_the_word_once_beyond_target_else_the_last_value_read(k):
    words = np.array([0, 5], np.int64)
    assert k.spin_until(words.ctypes.data, 1, 4, 1_000_000) == 5
    assert k.spin_until(words.ctypes.data, 1, 5, 100) == 5


def test_arm_wake_raises_the_flag_it_is_given_and_returns_the_cursor(k, ring):
    base = ring._base
    ring._meta[CURSOR] = 7
    assert k.arm_wake(base, consumer_wake_word(1), CURSOR, WAKE_ON_COMMIT) == 7
    assert int(ring._meta[consumer_wake_word(1)]) == WAKE_ON_COMMIT


def test_commit_sequence_stores_it_and_returns_every_raised_wake_flag(k, ring):
    base = ring._base
    ring._meta[consumer_wake_word(0)] = WAKE_ON_PUBLISH
    ring._meta[consumer_wake_word(1)] = WAKE_ON_COMMIT
    assert k.commit_sequence(base, consumer_sequence_word(0), 3) == 0b11
    assert int(ring._meta[consumer_sequence_word(0)]) == 3


def test_a_kernel_called_without_a_segment_raises_instead_of_crashing(k):
    with pytest.raises(TypeError):
        k.load_acquire(None, CURSOR)


def test_an_unknown_mode_is_refused_with_the_variable_name():
    with pytest.raises(ValueError, match="AEGIS_RING_KERNELS='fast'"):
        kernels.load("fast")


def test_a_stale_ahead_of_time_module_is_never_run_auto_falls_back_to_jit(caplog):
    aot_kernels()
    # What the installed sources would hash to under another Numba: the module is stale.
    other = aot.source_digest(numba="0.0.0")
    with caplog.at_level(logging.INFO, logger=kernels.__name__):
        chosen = kernels.load("auto", digest=other)
    assert chosen.backend == "jit"
    [warning] = [r for r in caplog.records if r.name == kernels.__name__]
    assert warning.levelno == logging.WARNING and "stale" in warning.getMessage()
    with pytest.raises(ImportError, match="stale"):
        kernels.load("aot", digest=other)


def test_source_digest_changes_with_any_source_byte_and_with_the_numba_version(tmp_path):
    for name in aot.SOURCES:
        shutil.copy(Path(aot.__file__).with_name(name), tmp_path / name)
    digest = aot.source_digest(tmp_path, numba="1.0")
    assert aot.source_digest(tmp_path, numba="1.0") == digest
    assert aot.source_digest(tmp_path, numba="1.1") != digest
    for name in aot.SOURCES:
        original = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(original.replace(b"=", b"= ", 1))
        assert aot.source_digest(tmp_path, numba="1.0") != digest, name
        (tmp_path / name).write_bytes(original)


ROUND_TRIP = """
import json, sys
import numpy as np
from aegis.ringbuffer import BlockingWait, Ring, kernels
dtype = np.dtype([("v", "<i8")])
with Ring.create({name!r}, dtype, 8, 1) as ring:
    producer, consumer = ring.producer(), ring.consumer(0, wait=BlockingWait())
    producer.publish(np.array([(41,)], dtype))
    producer.publish_batch(np.array([(42,), (43,)], dtype))
    read = [int(v) for v in consumer.wait_for(5.0)["v"]]
    consumer.commit()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite"))
print(json.dumps({{"backend": kernels.BACKEND, "read": read, "loaded": loaded}}))
"""


def test_a_process_on_the_ahead_of_time_kernels_never_loads_numba_or_llvmlite():
    aot_kernels()
    code = ROUND_TRIP.format(name=f"aegis-test-{uuid.uuid4().hex[:12]}")
    env = {**os.environ, kernels.ENV_VAR: "aot"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out == {"backend": "aot", "read": [41, 42, 43], "loaded": []}


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler")
def test_build_writes_a_module_reporting_the_installed_sources_digest(tmp_path):
    path = aot.build(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing left behind
    probe = f"""
import importlib.util, json, numpy as np
spec = importlib.util.spec_from_file_location("{aot.MODULE_NAME}", {str(path)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
words = np.zeros(2, np.int64)
module.store_release(words.ctypes.data, 1, 9)
print(json.dumps([module.source_digest(), module.load_acquire(words.ctypes.data, 1)]))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert json.loads(done.stdout) == [aot.source_digest(), 9]
