"""How torch's OpenMP threads wait for each other, set before torch loads (libgomp reads it once, at load).

At the end of every op each thread waits for the others. Waiting by spinning is fastest when every thread has a
core; on a machine whose cores other jobs hold, a spinning thread burns its time slice while the thread it waits
for is descheduled. Measured with the tiny SFT (2 threads, 2 cores; the loss curve is the same in every case):

| waiting | idle machine, 200 steps | 3 busy loops beside it, 60 steps |
|---|---:|---:|
| spin (libgomp's ACTIVE) | 11.5 s | 40.7 s |
| spin 30,000 rounds, then sleep | 12.1 s | 23.8 s |
| sleep at once (PASSIVE) | 18.6 s | 13.8 s |

and at load 14 the default spin took 7.8 s per SFT step against 0.36-0.43 s passive. So: passive always, plus a
short spin (``GOMP_SPINCOUNT``) when the stage starts on a machine with cores to spare. An explicit
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` in the environment is the user's choice and is kept. Results never depend
on it.
"""

from __future__ import annotations

import os

SHORT_SPIN = "30000"


def set_omp_wait(*, spin_when_idle: bool) -> None:
    """``OMP_WAIT_POLICY=PASSIVE``; with ``spin_when_idle`` and a 1-minute load average at least half a core below
    the core count, also ``GOMP_SPINCOUNT`` = :data:`SHORT_SPIN`. Call it before anything imports torch."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if spin_when_idle and os.getloadavg()[0] <= (os.cpu_count() or 1) - 0.5:
        os.environ["GOMP_SPINCOUNT"] = SHORT_SPIN
