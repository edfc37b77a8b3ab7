"""The QR token vault: durable before acknowledged, group-committed, refuses after a failure."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from ordonum import StoreFailed
from ordonum.service.vault import TokenVault, VaultClosed


def rows_in(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT id, token FROM tokens").fetchall())


def test_a_row_is_on_disk_when_put_returns(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite3"
    vault = TokenVault(path)
    vault.put("A", "RX1:A")
    assert rows_in(path) == {"A": "RX1:A"}  # another connection sees it: committed
    assert vault.get("A") == "RX1:A"
    assert vault.get("B") is None
    vault.close()
    assert (path.stat().st_mode & 0o777) == 0o600


def test_concurrent_puts_share_one_transaction(tmp_path: Path) -> None:
    vault = TokenVault(tmp_path / "v.sqlite3")
    commits = 0

    def count(sql: str) -> None:
        nonlocal commits
        commits += sql == "COMMIT"

    vault._db.set_trace_callback(count)
    enqueued = threading.Semaphore(0)
    enqueue = vault._enqueue

    def counted(rx_id: str, token: str) -> None:
        enqueue(rx_id, token)
        enqueued.release()

    vault._enqueue = counted  # type: ignore[method-assign]
    with vault._lock:  # the writer cannot start a transaction: every put queues up
        threads = [threading.Thread(target=vault.put, args=(f"{i}", f"t{i}")) for i in range(32)]
        for t in threads:
            t.start()
        for _ in threads:
            assert enqueued.acquire(timeout=10)
    for t in threads:
        t.join()
    assert {vault.get(f"{i}") for i in range(32)} == {f"t{i}" for i in range(32)}
    assert 1 <= commits <= 2
    vault.close()


@pytest.mark.anyio
async def test_put_async_wakes_the_loop_once_the_rows_are_durable(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite3"
    vault = TokenVault(path)
    await asyncio.gather(*(vault.put_async(f"{i}", f"t{i}") for i in range(200)))
    assert len(rows_in(path)) == 200
    vault.close()


def test_close_writes_what_is_pending_and_refuses_later_puts(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite3"
    vault = TokenVault(path)
    vault.put("A", "x")
    vault.close()
    with pytest.raises(VaultClosed, match=r"^the QR token vault is closed$"):
        vault.put("B", "y")
    assert rows_in(path) == {"A": "x"}


def test_a_failed_write_fails_its_callers_and_every_later_put(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite3"
    vault = TokenVault(path)
    with sqlite3.connect(path) as db:  # the disk says no, for one row
        db.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON tokens WHEN NEW.id = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'disk said no'); END"
        )
    with pytest.raises(VaultClosed, match="QR token vault write failed: disk said no") as exc:
        vault.put("boom", "x")
    assert isinstance(exc.value, StoreFailed)  # so the service answers 503
    with pytest.raises(VaultClosed, match=r"^the QR token vault refuses writes after a failed"):
        vault.put("fine", "y")
    assert "fine" not in rows_in(path)
    vault.close()
