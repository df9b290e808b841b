"""The seed's model signals, small: ``get_signals()``, ``receiver(signal, sender=Model)``.

Receivers are async functions ``(sender, instance, **kwargs)``; ``await
signal.send(Model, instance=obj, created=True)`` runs the receivers registered for
that model (or for every model, ``sender=None``) in order and awaits each one. An
exception in a receiver is logged, never raised into the ORM call that sent it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Tuple

_log = logging.getLogger("ormcache.signals")


class Signal:
    """One lifecycle event (``post_save``, ...)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._receivers: List[Tuple[Optional[type], Callable]] = []

    def connect(self, func: Callable, sender: Optional[type] = None) -> Callable:
        self._receivers.append((sender, func))
        return func

    def disconnect(self, func: Callable) -> None:
        self._receivers = [(s, f) for s, f in self._receivers if f is not func]

    async def send(self, sender: type, **kwargs: Any) -> None:
        for wanted, func in list(self._receivers):
            if wanted is None or wanted is sender:
                try:
                    await func(sender, **kwargs)
                except Exception:  # a receiver never fails the write that sent it
                    _log.exception("receiver %s of %s failed", getattr(func, "__name__", func), self.name)


class Signals:
    """The four lifecycle signals."""

    def __init__(self) -> None:
        self.pre_save = Signal("pre_save")
        self.post_save = Signal("post_save")
        self.pre_delete = Signal("pre_delete")
        self.post_delete = Signal("post_delete")


_signals = Signals()


def get_signals() -> Signals:
    """The process's signals."""
    return _signals


def receiver(signal: Signal, sender: Optional[type] = None) -> Callable[[Callable], Callable]:
    """Registers the decorated async function as a receiver of ``signal``."""

    def decorator(func: Callable) -> Callable:
        return signal.connect(func, sender)

    return decorator
