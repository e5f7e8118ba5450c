"""Thread pools shared by the whole process, made on first use.

A pool's worker threads do not survive `fork`: a child that inherited the parent's pool
object would hand work to threads it does not have, or believe one idle and never start
another (a hang). Each pool here is made afresh in a forked child.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import concurrent.futures


class SharedPool:
    """`size` worker threads named `prefix-N`, shared by every caller in the process;
    call it for the executor (made on first call; each thread starts when needed)."""

    def __init__(self, size: int, prefix: str) -> None:
        self.size = size
        self.prefix = prefix
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def __call__(self) -> concurrent.futures.ThreadPoolExecutor:
        import concurrent.futures  # with asyncio, only once a caller needs a pool

        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.size, thread_name_prefix=self.prefix
                )
            return self._pool

    def _forget(self) -> None:
        self._pool = None
        self._lock = threading.Lock()  # the parent's may have been held mid-fork
