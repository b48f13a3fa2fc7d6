"""An exclusive lock on the outbox file, held for the agent's life: two agents on one outbox would each
write their own view of it over the other's, and a restart would then resend or forget what the other
had stored. The lock is the operating system's (flock on POSIX, msvcrt on Windows, where the agent runs),
so it goes with the process, however that ends: nothing stale to clear by hand."""

from __future__ import annotations

import os
from pathlib import Path


class LockHeld(OSError):
    """Another process holds the lock."""


class FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock at once or raise `LockHeld` (naming the holder's pid when it wrote one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            raise LockHeld(f"held by process {holder}" if holder else "held by another process") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the lock on both systems


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


if os.name == "nt":  # pragma: no cover - the agent's home, not this test machine
    import msvcrt

    def _lock(fd: int) -> None:
        # A byte far past the pid, so the holder's pid stays readable (Windows locks are mandatory).
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        os.lseek(fd, 0, os.SEEK_SET)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
