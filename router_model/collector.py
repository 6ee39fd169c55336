"""The cyclic garbage collector, paused where many small acyclic containers are made.

A served request's body and answer are a list or dict a row, and an explanation a few dozen
dicts and lists a row, none of them in a cycle. In a process holding MLflow, scikit-learn and
pandas, the collections that so many new containers trigger cost several times the building
itself, and in a server, where they trigger collections of the whole heap, more. The model
server's fast path (:mod:`router_model.server_guard`) pauses it for the whole request, and
:func:`router_model.explain.explanations` while it builds.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for the ``with`` block.

    Objects made meanwhile are freed by reference counting as usual; a cycle made meanwhile
    waits for the next collection. Nested pauses leave the collector as the outermost found it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
