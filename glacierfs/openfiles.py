"""The table of open files, and the namespace lock.

The lock is held wherever a name and the paths of the files open under it must
change together (a rename), and where an upload's end is recorded (outcomes.py),
so neither sees the other half done. Lock order: a handle's lock, then this
one, then the catalog's.
"""

from __future__ import annotations

import itertools
import threading

from glacierfs import errors
from glacierfs.handles import Handle, ReadHandle, WriteHandle


class OpenFiles:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._handles: dict[int, Handle] = {}
        self._ids = itertools.count(1)

    def add(self, handle: Handle) -> int:
        with self.lock:
            handle_id = next(self._ids)
            self._handles[handle_id] = handle
        return handle_id

    def get(self, handle_id: int) -> Handle:
        with self.lock:
            handle = self._handles.get(handle_id)
        if handle is None:
            raise errors.NotFound(f"no open file {handle_id}")
        return handle

    def pop(self, handle_id: int) -> Handle | None:
        with self.lock:
            return self._handles.pop(handle_id, None)

    def take_all(self) -> list[Handle]:
        with self.lock:
            handles, self._handles = list(self._handles.values()), {}
        return handles

    def uploads(self) -> list[WriteHandle]:
        """The files open for writing whose upload is still under way."""
        with self.lock:
            return [h for h in self._handles.values() if isinstance(h, WriteHandle) and h.writing]

    def writing(self, vault: str, path: str) -> WriteHandle | None:
        for handle in self.uploads():
            if (handle.vault, handle.path) == (vault, path):
                return handle
        return None

    def readers_of(self, vault: str, path: str) -> list[int]:
        with self.lock:
            return [
                handle_id
                for handle_id, handle in self._handles.items()
                if isinstance(handle, ReadHandle) and (handle.vault, handle.path) == (vault, path)
            ]

    def move(self, vault: str, old: str, new: str) -> WriteHandle | None:
        """Open files follow a rename of ``old`` (a file or a directory) to ``new``;
        the one still uploading ``old`` itself, if any. Call under ``lock``."""
        writing = None
        for handle in self._handles.values():
            if handle.vault != vault:
                continue
            if handle.path == old:
                handle.path = new
                if isinstance(handle, WriteHandle) and handle.writing:
                    writing = handle
            elif handle.path.startswith(old + "/"):
                handle.path = new + handle.path[len(old) :]
        return writing
