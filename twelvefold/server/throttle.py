"""Bounded guessing: failed sign-ins and bad bearer tokens, counted per client address.

A token is 256 random bits, so guessing one is hopeless; the limit is there so that a
flood of guesses costs the server nothing and shows up in the log, not in the token
table's lookups. `Throttle` counts failures per client address in fixed windows: once an
address has failed `attempts` times in a window, every attempt from it (a right token
too: otherwise the guessing goes on) is refused until the window ends, with `429 Too Many
Requests` and `Retry-After` (RFC 6585 section 4, RFC 9110 section 10.2.3).

IPv6 addresses are counted by their /64 prefix (one host usually holds a whole /64). The
memory is bounded: at most `max_addresses` addresses are counted apart; when that many
are counted and none of their windows has ended, a new address is counted with every
other such address in one shared bucket, so a flood from many addresses is limited as
one client and never grows the table.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable

ATTEMPTS = 10
"""Failures allowed per client address in each window."""
WINDOW_SECONDS = 60.0
MAX_ADDRESSES = 10_000
SHARED = "*"
"""The bucket of the addresses that find the table full."""


def client_key(address: str | None) -> str:
    """What failures are counted under: an IPv4 address as it is, an IPv6 address by its
    /64 prefix, anything else (a Unix socket, no address) as given."""
    if not address:
        return "?"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


class Throttle:
    """Failures per client address in fixed windows of `window` seconds (`clock`:
    monotonic seconds). Safe to call from several threads."""

    def __init__(
        self,
        attempts: int = ATTEMPTS,
        window: float = WINDOW_SECONDS,
        *,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if attempts < 1 or window <= 0 or max_addresses < 1:
            raise ValueError("attempts, window and max_addresses must be positive")
        self.attempts, self.window, self.max_addresses = attempts, window, max_addresses
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[float, int]] = {}
        """key -> (when its window started, failures in it), least recently failed first."""

    def __len__(self) -> int:
        return len(self._counts)

    def retry_after(self, address: str | None) -> int | None:
        """Whole seconds until `address` may try again, or None when it may now."""
        with self._lock:
            now = self.clock()
            found = self._counts.get(self._key(client_key(address), now))
            if found is None or found[1] < self.attempts or now - found[0] >= self.window:
                return None
            return max(1, math.ceil(found[0] + self.window - now))

    def failed(self, address: str | None) -> None:
        """Count one failure of `address`."""
        with self._lock:
            now = self.clock()
            key = self._key(client_key(address), now)
            started, count = self._counts.get(key, (now, 0))
            if now - started >= self.window:
                started, count = now, 0
            self._counts.pop(key, None)  # re-inserted last: the table stays oldest first
            self._counts[key] = (started, count + 1)

    def _key(self, key: str, now: float) -> str:
        """`key`, or SHARED when the table is full of live windows (ended ones are let go
        first, from the least recently failed on: amortised constant time)."""
        if key in self._counts:
            return key
        while self._counts:
            oldest = next(iter(self._counts))
            if now - self._counts[oldest][0] < self.window:
                break
            del self._counts[oldest]
        return key if len(self._counts) < self.max_addresses else SHARED
