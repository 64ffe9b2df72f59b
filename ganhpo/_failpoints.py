"""Fault-injection points: make a process die or pause at one named instant, for tests.

The fault-tolerance tests must put a real worker process into every instant of a trial's life
(between two database calls, between two transactions), not only the comfortable ones. A
failpoint names such an instant; ``GANHPO_FAILPOINT=NAME:ACTION`` arms one in a process:

- ``kill``: SIGKILL this process there (a lost machine, the OOM killer);
- ``stop``: SIGSTOP it there (a frozen or suspended process; SIGCONT resumes it);
- ``sleep=S``: pause S seconds there (a window for the test to send a signal into);
- ``raise=MESSAGE``: raise ``RuntimeError(MESSAGE)`` there (a broken driver, say);
- ``dberror``: raise a database error that waiting cures (SQLAlchemy's ``OperationalError``, as
  when the connection drops) there: what was done before it stays done, its answer is lost.

Names may contain ``:``; the action is what follows the last one. ``NAME:ACTION`` acts every
time the process reaches ``NAME``; ``NAME#N:ACTION`` only the N-th time.

Unarmed, :func:`failpoint` is one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal
import time

__all__ = ["FAILPOINT_ENV", "failpoint"]

FAILPOINT_ENV = "GANHPO_FAILPOINT"

logger = logging.getLogger(__name__)

_reached: dict[str, int] = {}  # how many times this process reached each armed failpoint


def failpoint(name: str) -> None:
    """Act on the failpoint ``name`` if ``$GANHPO_FAILPOINT`` arms it; else do nothing."""
    armed = os.environ.get(FAILPOINT_ENV)
    if not armed:
        return
    point, _, action = armed.rpartition(":")
    point, _, nth = point.partition("#")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if nth and _reached[name] != int(nth):
        return
    logger.warning("failpoint %s: %s", name, action)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif action.startswith("sleep="):
        time.sleep(float(action.removeprefix("sleep=")))
    elif action.startswith("raise="):
        raise RuntimeError(action.removeprefix("raise="))
    elif action == "dberror":
        import sqlalchemy.exc

        raise sqlalchemy.exc.OperationalError(
            f"failpoint {name}", {}, ConnectionError("server closed the connection unexpectedly")
        )
    else:
        raise ValueError(
            f"{FAILPOINT_ENV}={armed!r}: use NAME:kill, :stop, :sleep=S, :raise=M or :dberror"
        )
