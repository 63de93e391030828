"""The AEGIS kernel: a watchdog that supervises feed, brain and executor.

Entry points (kept out of this module so a child importing ``aegis.kernel.control`` pays for
nothing else):

* ``aegis.kernel.run.run_main(settings, process_table=None, *, reload=None) -> int``
  — ``aegis-kernel run``; exit codes in ``aegis.kernel.exitcodes``.
* ``aegis.kernel.status.status_main(settings, as_json=False) -> int`` — ``aegis-kernel status``.
* ``aegis.kernel.topology``: ``ProcessTable``, ``ProcessSpec``, ``RingSpec``, ``DEFAULT_TABLE``
  and ``ProcessConfig``, the object every child's ``main(config) -> int`` receives.

Modules: ``topology`` (what runs), ``control`` (shared-memory control block), ``lock`` (one
kernel per home), ``child`` (dead man's switch, warm spares), ``supervised`` (one child's
handle), ``backoff``, ``events`` (``kernel_events`` rows + log lines), ``rings`` (ring
ownership), ``watchdog`` (the loop), ``status``, ``metrics``, ``run``.
"""
