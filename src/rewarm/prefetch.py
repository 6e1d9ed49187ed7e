"""Work done ahead in a thread: the next items of an iterator produced while the caller works on the
current one (prepare's reading and encoding, training's next batch)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator


def prefetch(items: Iterator, depth: int = 4, name: str = "prefetch") -> Iterator:
    """Produce the next items in a thread while the caller works on the current one (reading and
    parsing while the tokenizer, which releases the GIL, encodes; encoding while the caller packs;
    a training step's next batch while the step runs). Order is kept; errors are re-raised in the
    caller's thread, after the items before them. Stopping early closes `items` (and so a prefetch
    it wraps)."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)
        finally:
            if hasattr(items, "close"):
                items.close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
