"""Progress of a long decode (CIFAR-10's 60,000 images take minutes): a tqdm bar on a terminal,
plain lines elsewhere.

``progress=None`` (the loaders' default) shows it: a tqdm bar when stderr is a terminal and tqdm
is installed (it is optional), otherwise a plain line on stderr at most every
:data:`PLAIN_INTERVAL` seconds (the first after that long, so a quick decode prints nothing).
``progress=False`` shows nothing (experiments pass their ``--no-progress`` here);
``progress=True`` is the same as None.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["Progress", "PLAIN_INTERVAL"]

PLAIN_INTERVAL = 5.0


class Progress:
    """``with Progress(total, "decoding x.tar.gz", enabled) as p: ... p.update()``."""

    def __init__(self, total: int, desc: str, enabled: bool | None = None) -> None:
        if enabled is not None and not isinstance(enabled, bool):
            raise TypeError(f"progress must be True, False or None, got {enabled!r}")
        self.total, self.desc, self.done = total, desc, 0
        self.enabled = enabled is not False and total > 0
        self._bar: Any = None
        self._last = time.monotonic()
        self._printed = False
        if self.enabled and _isatty(sys.stderr):
            self._bar = _tqdm_bar(total, desc)

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= PLAIN_INTERVAL:
            self._last = now
            self._line()

    def _line(self) -> None:
        pct = 100 * self.done // max(1, self.total)
        print(f"{self.desc}: {self.done}/{self.total} images ({pct}%)", file=sys.stderr, flush=True)
        self._printed = True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._printed and self.done == self.total:
            self._line()  # the last line says it finished

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tqdm_bar(total: int, desc: str) -> Any:
    try:
        from tqdm import tqdm  # optional: plain lines without it
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False
