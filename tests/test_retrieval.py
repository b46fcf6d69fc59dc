"""The Retriever against the in-process emulator, without a mount: jobs are
paid once, the cost guard holds under concurrency, each output is downloaded
once, and only bytes that fail verification condemn a job."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from glacierfs import errors
from glacierfs.cache import ContentCache
from glacierfs.catalog import CACHED, UNVERIFIED, Catalog
from glacierfs.emulator import Emulator
from glacierfs.glacier import GlacierClient
from glacierfs.retrieval import Retriever, Target
from glacierfs.testing import wait_for

from .conftest import MiB, boto_client

VAULT = "r"
KiB = 1 << 10


class Rig:
    """A catalog, a cache and a Retriever on them; more retrievers may share the catalog."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.catalog = Catalog(tmp_path / "state" / "catalog.sqlite")
        self.boto = boto_client(url)
        self.boto.create_vault(vaultName=VAULT)
        self._opened: list[tuple[Retriever, ContentCache]] = []

    def retriever(
        self, cache_dir: str = "cache", cache_size: int = 64 * MiB, start: bool = True, **options: object
    ) -> Retriever:
        glacier = GlacierClient(self.url, "us-east-1", max_attempts=1)
        cache = ContentCache(self.tmp_path / cache_dir, cache_size)
        options.setdefault("poll_interval", 0.05)
        retriever = Retriever(glacier, self.catalog, cache, **options)  # type: ignore[arg-type]
        if start:
            retriever.start()
        self._opened.append((retriever, cache))
        return retriever

    def stop(self, retriever: Retriever) -> None:
        for pair in list(self._opened):
            if pair[0] is retriever:
                self._opened.remove(pair)
                retriever.stop()
                pair[1].close()

    def close(self) -> None:
        for retriever, cache in self._opened:
            retriever.stop()
            cache.close()
        self.catalog.close()

    def upload(self, data: bytes) -> Target:
        response = self.boto.upload_archive(vaultName=VAULT, body=data)
        return Target(VAULT, response["archiveId"], len(data), response["checksum"])


@pytest.fixture
def rig(inprocess: Emulator, tmp_path: Path) -> Iterator[Rig]:
    made = Rig(inprocess.url, tmp_path)
    yield made
    made.close()


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def read(retriever: Retriever, target: Target, timeout: float = 20) -> bytes:
    """fetch() until the bytes come, as a reader retrying on EAGAIN would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with retriever.fetch(target, "f", wait_seconds=0.5) as handle:
                return handle.read()
        except errors.JobNotReady:
            assert time.monotonic() < deadline, "the bytes never came"


# 7: a job's output is downloaded again, never paid for again --------------------


def test_an_evicted_archive_is_downloaded_again_from_its_job(rig: Rig, inprocess: Emulator) -> None:
    retriever = rig.retriever(cache_size=400 * KiB)
    x, y = random_bytes(300 * KiB, 1), random_bytes(300 * KiB, 2)
    targets = {x: rig.upload(x), y: rig.upload(y)}
    for data in (x, y, x, y):
        assert read(retriever, targets[data]) == data
    assert inprocess.calls["InitiateJob"] == 2
    assert inprocess.calls["GetJobOutput"] == 4  # each read after an eviction downloads again


def test_a_new_cache_directory_reuses_the_job(rig: Rig, inprocess: Emulator) -> None:
    data = random_bytes(MiB + 3)
    first = rig.retriever(cache_dir="cache-1")
    target = rig.upload(data)
    assert read(first, target) == data
    [job] = rig.catalog.jobs_for(target.archive_id)
    assert job.status == CACHED and job.completed is not None
    rig.stop(first)
    second = rig.retriever(cache_dir="cache-2")  # same catalog, as after a remount with another --cache-dir
    assert read(second, target) == data
    assert inprocess.calls["InitiateJob"] == 1


def test_the_output_lives_a_day_from_the_jobs_completion_not_its_request(rig: Rig, inprocess: Emulator) -> None:
    data = random_bytes(MiB)
    retriever = rig.retriever(cache_dir="cache-1")
    target = rig.upload(data)
    assert read(retriever, target) == data
    rig.stop(retriever)
    [job] = rig.catalog.jobs_for(target.archive_id)
    now = time.time()  # a Bulk job: requested 30 h ago, completed 2 h ago
    rig.catalog.put_job(job.but(requested=now - 30 * 3600, completed=now - 2 * 3600))
    again = rig.retriever(cache_dir="cache-2")
    assert read(again, target) == data
    assert inprocess.calls["InitiateJob"] == 1


# 8: the cost guard's check and spend are one step --------------------------------


def test_parallel_requests_start_no_more_jobs_than_the_guard_allows(rig: Rig, inprocess: Emulator) -> None:
    retriever = rig.retriever(max_jobs=5, start=False)
    targets = [rig.upload(random_bytes(1000, i)) for i in range(30)]
    inprocess.settings.fault_rate = 1.0  # a refused InitiateJob gives its reservation back
    with pytest.raises(errors.ServiceUnavailable):
        retriever.request(targets[0])
    inprocess.settings.fault_rate = 0.0
    inprocess.settings.latency_ms = 300
    outcomes: list[str] = []
    barrier = threading.Barrier(len(targets))

    def open_one(target: Target) -> None:
        barrier.wait()
        try:
            retriever.request(target)
            outcomes.append("job")
        except errors.RetrievalBudgetExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=open_one, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert inprocess.calls["InitiateJob"] == 5
    assert sorted(outcomes) == ["job"] * 5 + ["refused"] * 25
    assert retriever.budget_left()[1] == 0


# 9: one download per job output --------------------------------------------------


def test_a_stale_round_of_the_poller_downloads_nothing_twice(rig: Rig, inprocess: Emulator) -> None:
    retriever = rig.retriever(start=False, chunk_size=MiB)
    data = random_bytes(3 * MiB, 9)
    target = rig.upload(data)
    retriever.request(target)
    retriever.poll_once()  # the job is done: its download starts
    listing: Callable[..., object] = retriever.glacier.list_jobs

    def list_after_the_download(*args: object, **kwargs: object) -> object:
        # The next round read the active jobs before the download ended, and lists them after.
        wait_for(lambda: retriever.is_cached(target), what="the first download")
        return listing(*args, **kwargs)

    retriever.glacier.list_jobs = list_after_the_download  # type: ignore[method-assign]
    retriever.poll_once()
    retriever.glacier.list_jobs = listing  # type: ignore[method-assign]
    retriever.stop()  # waits for any download it started
    assert inprocess.calls["GetJobOutput"] == 3  # three chunks, each fetched once
    with retriever.fetch(target, "f", 0) as handle:
        assert handle.read() == data


# 10: transient failures are retried; only bad bytes condemn a job ----------------


def test_an_outage_of_get_job_output_is_waited_out(rig: Rig, inprocess: Emulator) -> None:
    retriever = rig.retriever()
    data = random_bytes(2 * MiB, 3)
    target = rig.upload(data)
    inprocess.settings.fail_operation = "GetJobOutput"
    inprocess.settings.fail_until = time.time() + 2.5
    with pytest.raises(errors.JobNotReady):
        retriever.fetch(target, "f", 0)
    wait_for(lambda: inprocess.calls["GetJobOutput"] >= 1, what="a failed download")
    with pytest.raises(errors.JobNotReady) as raised:
        retriever.fetch(target, "f", 0.3)
    assert "its last download failed" in str(raised.value)
    assert read(retriever, target) == data
    assert inprocess.calls["InitiateJob"] == 1
    assert [job.status for job in rig.catalog.jobs_for(target.archive_id)] == [CACHED]


def test_a_cache_directory_that_refuses_writes_for_a_while(rig: Rig, inprocess: Emulator) -> None:
    retriever = rig.retriever()
    data = random_bytes(MiB, 4)
    target = rig.upload(data)
    refusals = [PermissionError(13, "Permission denied", "incoming")] * 4
    make_scratch = retriever.cache.scratch_file

    def scratch_file(size: int = 0) -> Path:
        if refusals:
            raise refusals.pop()
        return make_scratch(size)

    retriever.cache.scratch_file = scratch_file  # type: ignore[method-assign]
    assert read(retriever, target, timeout=30) == data
    assert not refusals
    assert inprocess.calls["InitiateJob"] == 1


def test_after_a_failed_verification_an_explicit_request_starts_a_new_job(rig: Rig, inprocess: Emulator) -> None:
    retriever = rig.retriever()
    data = random_bytes(MiB, 5)
    target = rig.upload(data)
    inprocess.settings.corrupt_outputs = 1000
    with pytest.raises(errors.RetrievalFailed):
        read(retriever, target)
    assert [job.status for job in rig.catalog.jobs_for(target.archive_id)] == [UNVERIFIED]
    with pytest.raises(errors.RetrievalFailed):
        retriever.request(target)  # an open() does not pay again on its own
    inprocess.settings.corrupt_outputs = 0
    assert retriever.request(target, explicit=True) is not None
    assert read(retriever, target) == data
    assert inprocess.calls["InitiateJob"] == 2


# 11 and fetch(): what the cache holds is checked at every open --------------------


def test_fetch_names_the_job_and_serves_only_verified_bytes(rig: Rig, inprocess: Emulator) -> None:
    retriever = rig.retriever()
    data = random_bytes(MiB, 6)
    target = rig.upload(data)
    inprocess.settings.job_delay = 1.0
    with pytest.raises(errors.JobNotReady) as raised:
        retriever.fetch(target, "v/file.bin", 0)
    [job] = rig.catalog.jobs_for(target.archive_id)
    message = str(raised.value)
    assert message.startswith("v/file.bin: bytes 0-1048575 are being retrieved by job " + job.job_id)
    assert "Standard tier" in message and "usually 3-5 hours" in message
    with retriever.fetch(target, "v/file.bin", 10) as handle:
        assert handle.read() == data
    path = Path(handle.name)
    with open(path, "r+b") as cached:  # one byte flipped behind the cache's back
        cached.seek(100)
        byte = cached.read(1)
        cached.seek(100)
        cached.write(bytes([byte[0] ^ 1]))
    assert read(retriever, target) == data
    for stored in (rig.tmp_path / "cache" / "content").rglob("*.val"):
        stored.unlink()  # deleted by hand
    assert read(retriever, target) == data
    assert inprocess.calls["InitiateJob"] == 1
