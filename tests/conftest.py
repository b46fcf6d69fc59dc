"""Shared fixtures: fake credentials, the emulator in-process and over HTTP, plain boto3."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

# Never reach a real account from the tests, whatever the environment holds.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_name, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
)

from glacierfs.emulator import Emulator  # noqa: E402

MiB = 1 << 20


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """The in-process emulator (one per test process: moto's state is global)."""
    with Emulator() as running:
        yield running


@pytest.fixture
def inprocess(emulator: Emulator) -> Iterator[Emulator]:
    """The in-process emulator, empty and with default settings."""
    emulator.reset()
    yield emulator
    emulator.reset()


class ServedEmulator:
    """``glacierfs emulator`` in a subprocess, stopped by its own PID."""

    def __init__(self, *extra: str, data_dir: Path | None = None) -> None:
        command = [sys.executable, "-m", "glacierfs", "emulator", "--port", "0", *extra]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"emulator did not start: {line!r} {self.process.stderr.read()}")
        self.url = line.rsplit(" ", 1)[-1].strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()


@pytest.fixture(scope="session")
def served() -> Iterator[ServedEmulator]:
    server = ServedEmulator()
    yield server
    server.stop()


@pytest.fixture(params=["inprocess", "http"])
def endpoint(request: pytest.FixtureRequest) -> str:
    """Each test using this runs against both the in-process and the subprocess emulator."""
    if request.param == "inprocess":
        return request.getfixturevalue("inprocess").url
    return request.getfixturevalue("served").url


def boto_client(url: str, attempts: int = 1) -> "boto3.client":
    return boto3.client(
        "glacier",
        endpoint_url=url,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )


@pytest.fixture
def boto(endpoint: str):  # type: ignore[no-untyped-def]
    """Plain boto3, no retries: what reached the emulator, seen without our own code."""
    return boto_client(endpoint)


_vault_counter = iter(range(1_000_000))


@pytest.fixture
def vault(boto) -> str:  # type: ignore[no-untyped-def]
    name = f"test-vault-{os.getpid()}-{next(_vault_counter)}"
    boto.create_vault(vaultName=name)
    return name
