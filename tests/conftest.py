"""Session fixtures shared by every test directory: the throwaway PostgreSQL cluster."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from pgcluster import PgCluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL server for the session (initdb in a temporary directory, a free port),
    stopped and deleted at the end. Started on first use only."""
    cluster = PgCluster.create()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_url(pg_cluster: PgCluster) -> str:
    """A database of the session's cluster, shared by the tests (they use fresh IDs)."""
    return pg_cluster.create_database("ordonum_tests")
