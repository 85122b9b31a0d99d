"""The one owner of background tasks: nothing dies in silence.

Every task that runs in the background (the store writer, the timer, claim workers, SMS lanes,
push deliveries, the redelivery on start, the receipt poller, retention, ...) is started
through a Supervisor. A task that ends by raising (anything but being cancelled) is a death:
the supervisor logs it with its traceback, records it in `failure`, sets `failed`, and calls
the `on_failure` callbacks (wiring turns health NOT_SERVING there, and `serve` stops the
process with a non-zero status so the orchestrator restarts it). Work that must go on after
an ordinary error (retry it, log it) catches that error itself; what escapes is a bug or a
broken dependency, and the process is not left running half alive.

To add a background task, one call:

    supervisor.spawn(coro, name="pushreach-something")            # ends when its work ends
    supervisor.spawn(loop(), name="pushreach-poller", forever=True)  # must not end before stop()

`forever=True` also counts a return as a death (a loop that fell out), unless its owner
called `supervisor.release(task)` first or the supervisor was stopped (`stop()`). A task
made elsewhere can be handed over with `supervisor.watch(task)`. Components take the
supervisor as a constructor argument (`supervisor: Supervisor | None = None`, a private one
when not given, which still logs deaths), never a global.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class TaskDied(RuntimeError):
    """A `forever` task returned before the supervisor was stopped."""


class Supervisor:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._forever: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.failure: BaseException | None = None  # the first death
        self.failed_task: str = ""
        self.on_failure: list[Callable[[str, BaseException], None]] = []
        self._failed: asyncio.Event | None = None

    @property
    def failed(self) -> asyncio.Event:
        """Set at the first death (created on first use, in the running loop)."""
        if self._failed is None:
            self._failed = asyncio.Event()
            if self.failure is not None:
                self._failed.set()
        return self._failed

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str, forever: bool = False) -> asyncio.Task[T]:
        """Start `coro` as a supervised task (see the module docstring)."""
        return self.watch(asyncio.get_running_loop().create_task(coro, name=name), forever=forever)

    def watch(self, task: asyncio.Task[T], *, forever: bool = False) -> asyncio.Task[T]:
        """Supervise a task started elsewhere."""
        self._tasks.add(task)
        if forever:
            self._forever.add(task)
        task.add_done_callback(self._ended)
        return task

    def release(self, task: asyncio.Task[Any]) -> None:
        """Its owner is ending a `forever` task on purpose: its end is not a death."""
        self._forever.discard(task)

    def stop(self) -> None:
        """Shutting down: from here on a `forever` task may end (cancelled or returned)."""
        self._stopping = True

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        forever = task in self._forever
        self._forever.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            if not forever or self._stopping:
                return
            exc = TaskDied(f"background task {task.get_name()} ended before the service stopped")
        self.fail(task.get_name(), exc)

    def fail(self, name: str, exc: BaseException) -> None:
        """Record a death (also for a component that learns of one outside a task)."""
        log.critical("background task %s died; the service stops", name, exc_info=(type(exc), exc, exc.__traceback__))
        if self.failure is None:
            self.failure = exc
            self.failed_task = name
            if self._failed is not None:
                self._failed.set()
        for callback in list(self.on_failure):
            try:
                callback(name, exc)
            except Exception:
                log.exception("a failure callback raised")

    @property
    def running(self) -> int:
        """Tasks under supervision that have not ended."""
        return len(self._tasks)
