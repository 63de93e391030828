"""What keeps the kernel's memory down: no Numba where no ring role is taken, no LightGBM in the
brain, warm spares made one at a time. Real processes, real shared memory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from aegis.kernel import supervised
from aegis.kernel.control import ControlBlock, ProcessState
from aegis.kernel.supervised import SupervisedChild, keep_spares
from aegis.kernel.topology import ProcessSpec
from aegis.ringbuffer import kernels

REPO = Path(__file__).resolve().parents[1]
NAMES = ("feed", "brain", "executor")


def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON document."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


RING_WITHOUT_ROLES = """
import json, os, sys
import numpy as np
import aegis.kernel.watchdog, aegis.kernel.status, aegis.kernel.rings
from aegis.ringbuffer import Ring
dtype = np.dtype([("v", "<i8")])
name = {name!r}
owner = Ring.create(name, dtype, 8, 2)
other = Ring.attach(name, dtype)
stats = Ring.inspect(name)
other.close()
owner.close()
out = {{"numba_before_roles": "numba" in sys.modules, "capacity": stats.capacity,
        "unlinked": not os.path.exists("/dev/shm/" + name)}}
from aegis.ringbuffer import BlockingWait, Producer
with Ring.create(name, dtype, 8, 1) as ring:
    producer, consumer = ring.producer(), ring.consumer(0, wait=BlockingWait())
    producer.publish(np.array([(41,)], dtype))
    batch = consumer.wait_for(5.0)
    out["read"] = [int(v) for v in batch["v"]]
    consumer.commit()
    out["producer_type"] = type(producer) is Producer
out["numba_after_roles"] = "numba" in sys.modules
from aegis.ringbuffer import kernels
out["backend"] = kernels.BACKEND
print(json.dumps(out))
"""


def test_ring_create_attach_inspect_unlink_never_import_numba_and_roles_still_work():
    out = run_python(RING_WITHOUT_ROLES.format(name=f"aegis-test-lazy-{uuid.uuid4().hex[:10]}"))
    assert out["numba_before_roles"] is False  # what the watchdog and the status CLI do
    assert out["capacity"] == 8 and out["unlinked"]
    assert out["read"] == [41] and out["producer_type"]
    # Only the JIT fallback loads Numba for the roles; the ahead-of-time kernels never do.
    assert out["numba_after_roles"] is (out["backend"] == "jit")


# What a brain warm spare does before it is needed (``aegis.kernel.child.standby``), then the
# modules it holds. Numba imports the bare ``scipy`` package itself (a few small modules);
# scipy.sparse and pandas come only with lightgbm, which only the training job needs.
BRAIN_SPARE = """
import json, sys
from aegis.kernel.child import load_entry
from aegis.kernel.topology import DEFAULT_TABLE
spec = next(p for p in DEFAULT_TABLE.processes if p.name == "brain")
load_entry(spec.entry)
load_entry(spec.prepare)()
print(json.dumps(sorted(sys.modules)))
"""


def test_brain_and_its_warm_spare_never_load_lightgbm_or_pandas():
    modules = set(run_python(BRAIN_SPARE))
    assert {"aegis.processes.brain", "aegis.ml.registry", "aegis.ml.training"} <= modules
    assert not {"lightgbm", "pandas", "scipy.sparse", "sklearn"} & modules


# What a feed or executor warm spare does before it is needed (import, then ``prepare``, which
# runs every ring kernel on a private ring), then whether Numba or llvmlite (~100 MB of private
# RSS each process) came with it. Only the ring kernels' JIT fallback would bring them.
FEED_EXECUTOR_SPARES = """
import json, sys
from aegis.kernel.child import load_entry
from aegis.kernel.topology import DEFAULT_TABLE
from aegis.ringbuffer import kernels
specs = [p for p in DEFAULT_TABLE.processes if p.name in ("feed", "executor")]
for spec in specs:
    load_entry(spec.entry)
    load_entry(spec.prepare)()
from aegis.binance.protocol import KlineParser
KlineParser({"BTCUSDT": 1}).warm()  # what the feed does before its first frame
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite"))
print(json.dumps({"backend": kernels.BACKEND, "entries": [p.entry for p in specs],
                  "loaded": loaded}))
"""


def test_feed_executor_and_their_warm_spares_never_load_numba_on_the_aot_ring_kernels():
    if kernels.BACKEND != "aot":  # the child inherits this environment, hence this choice
        pytest.skip("the ring kernels run on Numba's JIT in this environment")
    out = run_python(FEED_EXECUTOR_SPARES)
    assert out["entries"] == ["aegis.processes.feed:main", "aegis.processes.executor:main"]
    assert (out["backend"], out["loaded"]) == ("aot", [])


@pytest.fixture
def children():
    block = ControlBlock.create(f"aegis-test-control-{uuid.uuid4().hex[:10]}", NAMES)
    made: list[SupervisedChild] = []

    def make(prepare: dict[str, str]) -> list[SupervisedChild]:
        for slot, name in enumerate(NAMES):
            spec = ProcessSpec(name, "kernel_spare_support:main", prepare.get(name))
            child = SupervisedChild(spec, slot, block, lambda spec, slot: None)
            child.set_state(ProcessState.RUNNING)  # only running children get a spare
            made.append(child)
        return made

    yield make
    for child in made:
        child.close(timeout_s=0.5)
    block.close()


def _drive(children: list[SupervisedChild], until, timeout_s: float = 30.0) -> int:
    """Call ``keep_spares`` like the watchdog's loop; return the most spares preparing at once."""
    most = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        keep_spares(children, time.monotonic())
        preparing = sum(c.spare is not None and not c.slot_view().spare_ready for c in children)
        most = max(most, preparing)
        if until():
            break
        time.sleep(0.01)
    return most


def test_warm_spares_are_made_one_at_a_time_until_every_running_child_has_one(children):
    kids = children({name: "kernel_spare_support:prepare" for name in NAMES})
    most = _drive(kids, lambda: all(c.slot_view().spare_ready for c in kids))
    assert all(c.slot_view().spare_ready for c in kids)
    assert most == 1


def test_a_spare_stuck_preparing_holds_the_others_back_only_for_the_bound(children, monkeypatch):
    monkeypatch.setattr(supervised, "SPARE_PREPARE_BOUND_S", 1.0)
    kids = children({"feed": "kernel_spare_support:prepare_forever",
                     "brain": "kernel_spare_support:prepare",
                     "executor": "kernel_spare_support:prepare"})  # fmt: skip
    _drive(kids, lambda: all(c.slot_view().spare_ready for c in kids[1:]))
    assert [c.slot_view().spare_ready for c in kids] == [False, True, True]
    assert kids[0].spare is not None  # still there, still preparing: not replaced
