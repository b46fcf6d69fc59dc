"""Random sequences of file operations against a real mount and a model of
what should be there (hypothesis): they must always agree."""

from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from glacierfs.emulator import Emulator
from glacierfs.testing import Mount, read_when_ready

from .conftest import MiB

pytestmark = [pytest.mark.mount, pytest.mark.slow]

PATHS = ["a", "b", "d", "d/x", "d/y", "e", "e/z"]
_runs = itertools.count()


def attempt(action) -> int | None:  # type: ignore[no-untyped-def]
    try:
        action()
    except OSError as error:
        return error.errno
    return None


class MountAgainstModel(RuleBasedStateMachine):
    root: Path  # set per test run

    def __init__(self) -> None:
        super().__init__()
        self.top = self.root / f"run{next(_runs)}"
        self.top.mkdir()
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()

    def parent_exists(self, path: str) -> bool:
        parent = path.rpartition("/")[0]
        return not parent or parent in self.dirs

    def missing(self, path: str) -> int:
        """The errno for a path that is not there: ENOTDIR when its parent is a file."""
        return errno.ENOTDIR if path.rpartition("/")[0] in self.files else errno.ENOENT

    @rule(path=st.sampled_from(PATHS), data=st.binary(max_size=3000) | st.just(b"x" * (MiB + 7)))
    def write(self, path: str, data: bytes) -> None:
        result = attempt(lambda: (self.top / path).write_bytes(data))
        if not self.parent_exists(path):
            assert result == self.missing(path)
        elif path in self.dirs:
            assert result == errno.EISDIR
        else:
            assert result is None
            self.files[path] = data

    @rule(path=st.sampled_from(PATHS))
    def mkdir(self, path: str) -> None:
        result = attempt(lambda: (self.top / path).mkdir())
        if not self.parent_exists(path):
            assert result == self.missing(path)
        elif path in self.dirs or path in self.files:
            assert result == errno.EEXIST
        else:
            assert result is None
            self.dirs.add(path)

    @rule(path=st.sampled_from(PATHS))
    def rmdir(self, path: str) -> None:
        result = attempt(lambda: (self.top / path).rmdir())
        if path in self.files:
            assert result == errno.ENOTDIR
        elif path not in self.dirs:
            assert result == self.missing(path)
        elif any(p.startswith(path + "/") for p in [*self.files, *self.dirs]):
            assert result == errno.ENOTEMPTY
        else:
            assert result is None
            self.dirs.discard(path)

    @rule(path=st.sampled_from(PATHS))
    def unlink(self, path: str) -> None:
        result = attempt(lambda: (self.top / path).unlink())
        if path in self.files:
            assert result is None
            del self.files[path]
        elif path in self.dirs:
            assert result in (errno.EISDIR, errno.EPERM)
        else:
            assert result == self.missing(path)

    @rule(source=st.sampled_from(PATHS), destination=st.sampled_from(PATHS))
    def rename_file(self, source: str, destination: str) -> None:
        if (
            source not in self.files
            or destination in self.dirs
            or not self.parent_exists(destination)
            or source == destination
        ):
            return  # directory renames and refusals are covered by the other tests
        assert attempt(lambda: os.rename(self.top / source, self.top / destination)) is None
        self.files[destination] = self.files.pop(source)

    @rule(path=st.sampled_from(PATHS))
    def read(self, path: str) -> None:
        if path in self.files:
            assert read_when_ready(self.top / path) == self.files[path]

    @invariant()
    def tree_agrees(self) -> None:
        files, dirs = {}, set()
        for folder, subdirs, names in os.walk(self.top):
            base = Path(folder).relative_to(self.top)
            dirs.update(str(base / d) for d in subdirs)
            files.update({str(base / n): (self.top / base / n).stat().st_size for n in names})
        assert dirs == self.dirs
        assert files == {path: len(data) for path, data in self.files.items()}


def test_mount_agrees_with_a_model(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, "--poll-interval", "0.1", "--part-size", str(MiB))
    try:
        mount.path("model").mkdir()
        MountAgainstModel.root = mount.path("model")
        run_state_machine_as_test(
            MountAgainstModel, settings=settings(max_examples=25, stateful_step_count=25, deadline=None)
        )
    finally:
        mount.unmount()
