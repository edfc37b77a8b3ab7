"""The event-loop durability waiter: answers only once durable, one wake-up per group commit,
failures reach every waiter, nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ordonum import IdGenerator, InvalidRecord, Store, StoreFailed
from ordonum.service.durable import DurableWaiter
from store_helpers import CODE, T0, dispensation, record

HERE = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.anyio


def created(store: Store, n: int, units: int = 10) -> list[str]:
    gen = IdGenerator(77)
    ids = [gen.new() for _ in range(n)]
    for rx in ids:
        store.create(record(rx, lines=[(units, 0)], valid_until_ms=T0 + 10**9), now_ms=T0)
    return ids


async def dispense(store: Store, waiter: DurableWaiter, rx: str, key: str) -> bytes:
    submitted = store.dispense_submit(
        rx, dispensation((0, 1)), idempotency_key=key, access_code=CODE, now_ms=T0
    )
    assert submitted is not None  # one write per prescription at a time here
    answer, lsn = submitted
    await waiter.wait(lsn)
    return answer


async def test_concurrent_writes_share_wake_ups_and_are_durable(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    ids = created(store, 64)
    waiter = DurableWaiter(store, asyncio.get_running_loop())
    before = store.stats()["batches"]
    answers = await asyncio.gather(*(dispense(store, waiter, rx, "k1") for rx in ids))
    batches = store.stats()["batches"] - before
    assert 1 <= batches < len(ids)  # queued on the loop, written together
    for rx, answer in zip(ids, answers, strict=True):
        doc = json.loads(answer)
        assert doc["dispensation_id"] == f"{rx}/1"
        assert (doc["replayed"], doc["lines"][0]["remaining"]) == (False, 9)
        # Durable means applied: the state a reader sees already has it.
        assert json.loads(store.get(rx, now_ms=T0))["lines"][0]["remaining"] == 9
    # The same key again: the first answer, replayed, with nothing to wait for.
    replay = store.dispense_submit(
        ids[0], dispensation((0, 1)), idempotency_key="k1", access_code=CODE, now_ms=T0
    )
    assert replay is not None
    assert replay[1] == 0
    assert json.loads(replay[0])["replayed"] is True
    waiter.close()
    store.close()
    with Store.open(tmp_path / "store") as again:
        assert all(len(json.loads(again.dispensations(rx))["dispensations"]) == 1 for rx in ids)


async def test_create_submit_is_visible_once_durable(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    waiter = DurableWaiter(store, asyncio.get_running_loop())
    rx = IdGenerator(78).new()
    got, lsn = store.create_submit(record(rx, valid_until_ms=T0 + 10**9), now_ms=T0)
    assert got == rx
    assert lsn > 0
    await waiter.wait(lsn)
    assert json.loads(store.get(rx, now_ms=T0))["id"] == rx
    waiter.close()
    store.close()


async def test_a_memory_store_needs_no_waiting() -> None:
    store = Store.memory()
    (rx,) = created(store, 1)
    waiter = DurableWaiter(store, asyncio.get_running_loop())
    assert store.wake_fd() is None
    answer = await dispense(store, waiter, rx, "k")
    assert json.loads(answer)["lines"][0]["remaining"] == 9


def test_waiting_for_an_lsn_never_issued_is_refused(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store") as store:
        (rx,) = created(store, 1)
        sub = store.dispense_submit(
            rx, dispensation((0, 1)), idempotency_key="k", access_code=CODE, now_ms=T0
        )
        assert sub is not None
        store.wait(sub[1])
        with pytest.raises(InvalidRecord, match=r"^lsn: \d+ was never issued"):
            store.wait(sub[1] + 1)


async def test_after_close_waiting_fails(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    waiter = DurableWaiter(store, asyncio.get_running_loop())
    waiter.close()
    with pytest.raises(StoreFailed, match="durability waiter is closed"):
        await waiter.wait(10**6)
    store.close()


DISK_FULL_CHILD = textwrap.dedent(
    """
    import asyncio, json, resource, signal, sys
    from store_helpers import CODE, dispensation, T0
    from ordonum import Store, StoreFailed
    from ordonum.service.durable import DurableWaiter

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    directory, *ids = sys.argv[1:]
    store = Store.open(directory)
    size = store.stats()["journal_bytes"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 20_000, resource.RLIM_INFINITY))

    async def main():
        waiter = DurableWaiter(store, asyncio.get_running_loop())
        acked, failed_waits, refused = [], 0, 0

        async def one(rx, key):
            nonlocal failed_waits, refused
            try:
                sub = store.dispense_submit(rx, dispensation((0, 1)), idempotency_key=key,
                                            access_code=CODE, now_ms=T0)
            except StoreFailed:
                refused += 1
                return
            if sub is None:
                return
            try:
                await waiter.wait(sub[1])
            except StoreFailed:
                failed_waits += 1
                return
            acked.append(json.loads(sub[0])["dispensation_id"])

        for round in range(400):
            await asyncio.gather(*(one(rx, f"{rx}/{round}") for rx in ids))
            if refused:
                break
        return {"acked": acked, "failed_waits": failed_waits, "refused": refused}

    print(json.dumps(asyncio.run(main())))
    """
)


def test_a_journal_failure_reaches_the_waiters_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "store"
    with Store.open(directory) as s:
        ids = created(s, 16, units=1000)
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL_CHILD, str(directory), *ids],
        capture_output=True,
        cwd=HERE,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert result["failed_waits"] > 0  # the failing batch's waiters were told
    assert result["refused"] > 0  # and later writes refused
    assert len(result["acked"]) > 16
    with Store.open(directory) as s:
        keys = {
            d["dispensation_id"]
            for rx in ids
            for d in json.loads(s.dispensations(rx))["dispensations"]
        }
    assert set(result["acked"]) <= keys  # nothing acknowledged is lost


class _FailingJournal:
    """A store whose journal made LSN 5 durable, then failed (what a disk error does)."""

    def __init__(self) -> None:
        import socket

        self.rx, self.tx = socket.socketpair()
        self.rx.setblocking(False)
        self.durable, self.failed = 0, 0

    def wake_fd(self) -> int:
        return self.rx.fileno()

    def durable_lsn(self) -> int:
        return self.durable

    def stats(self) -> dict[str, int]:
        return {"failed": self.failed}

    def wait(self, lsn: int) -> None:
        if lsn > self.durable and self.failed:
            raise StoreFailed("journal fdatasync failed")


async def test_writes_durable_before_a_failure_are_still_acknowledged() -> None:
    journal = _FailingJournal()
    waiter = DurableWaiter(journal, asyncio.get_running_loop())  # type: ignore[arg-type]
    before, after = waiter.wait(5), waiter.wait(8)
    journal.durable, journal.failed = 5, 1  # batch up to 5 durable, the next one failed
    journal.tx.send(b"\x01")
    await asyncio.sleep(0.05)
    assert before.done()
    assert before.exception() is None
    with pytest.raises(StoreFailed, match="fdatasync failed"):
        await after
    with pytest.raises(StoreFailed):  # and every later wait above the durable LSN
        await waiter.wait(9)
    assert waiter.wait(4).done()
    waiter.close()
    journal.rx.close()
    journal.tx.close()


async def test_callbacks_are_settled_by_a_poll_without_the_wake_up_and_fail_alike(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = _FailingJournal()
    waiter = DurableWaiter(journal, asyncio.get_running_loop())  # type: ignore[arg-type]
    calls: list[tuple[int, BaseException | None]] = []

    def broken(_: BaseException | None) -> None:
        raise RuntimeError("a callback that fails")

    waiter.then(3, lambda exc: calls.append((3, exc)))
    waiter.then(1, broken)  # logged; the others are settled all the same
    waiter.then(1, lambda exc: calls.append((1, exc)))
    future = waiter.wait(2)
    waiter.poll()
    assert calls == []  # nothing durable yet
    journal.durable = 2
    waiter.poll()  # no wake-up byte was sent: the poll alone settles what is durable
    assert calls == [(1, None)]
    assert future.done()
    assert "settling a durability waiter failed" in caplog.text
    journal.failed = 1  # the next batch failed
    journal.tx.send(b"\x01")
    await asyncio.sleep(0.05)
    assert [n for n, _ in calls] == [1, 3]
    assert isinstance(calls[1][1], StoreFailed)
    at_once: list[BaseException | None] = []
    waiter.then(9, at_once.append)  # above the durable LSN after a failure: failed at once
    waiter.then(2, at_once.append)  # durable before the failure: acknowledged at once
    assert isinstance(at_once[0], StoreFailed)
    assert at_once[1] is None
    waiter.close()
    waiter.then(10, at_once.append)
    assert isinstance(at_once[2], StoreFailed)
    journal.rx.close()
    journal.tx.close()
