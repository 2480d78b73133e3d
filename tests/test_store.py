"""The store on its own: migrations, group commit, failure semantics."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlite_utils

from builders import make_config
from monitor_manager.clock import ManualClock
from monitor_manager.converge.alerts import fingerprint
from monitor_manager.converge.convergence import Convergence, group_key
from monitor_manager.converge.ids import Ids
from monitor_manager.deliver.parts_log import StoredPartsLog
from monitor_manager.store import Store, StoreError, migrations


def test_memberships_move_from_the_old_table_into_alert_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m005_memberships_in_alert_rows")
    db.execute(
        "INSERT INTO alerts (fingerprint, labels, annotations, status, starts_at, updated_at) "
        "VALUES ('00000000000000f1', '{\"alertname\":\"A\"}', '{}', 'firing', 1, 1)"
    )
    db.execute(
        "INSERT INTO alert_groups (key, contact_group, group_labels, state, created_at, "
        "updated_at, next_flush_at) VALUES ('g1', 'default', '{\"alertname\":\"A\"}', 'open', "
        "1, 1, 100)"
    )
    db.execute("INSERT INTO group_alerts VALUES ('g1', '00000000000000f1', 'firing')")
    db.conn.commit()
    migrations.apply(db, stop_before="m010_unambiguous_identity")
    assert db.execute("SELECT memberships FROM alerts").fetchone()[0] == '{"g1":"firing"}'
    assert "group_alerts" not in db.table_names()
    migrations.apply(db)  # m010 then renames both by their labels
    conv = Convergence(make_config(tmp_path), ManualClock(), Ids())
    conv.load(db.conn)
    key, fp = group_key("default", {"alertname": "A"}), fingerprint({"alertname": "A"})
    assert conv.groups[key].members == {fp: "firing"}
    assert conv.alerts[fp].groups == (key,)


async def test_concurrent_writes_share_commits_and_all_become_durable(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    await store.run(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
    await asyncio.gather(*(store.write([("INSERT INTO t VALUES (?)", (i,))]) for i in range(200)))
    assert store.commits < 200
    await store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 200


async def test_a_failed_commit_fails_every_write_queued_with_it_and_keeps_none(
    tmp_path: Path,
) -> None:
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    failures: list[BaseException] = []
    store.on_failure = failures.append
    await store.run(lambda c: c.execute("CREATE TABLE t (x INTEGER UNIQUE)"))
    results = await asyncio.gather(
        store.write([("INSERT INTO t VALUES (1)", ())]),
        store.write([("INSERT INTO t VALUES (1)", ())]),  # violates UNIQUE: the batch fails
        store.write([]),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreError) for r in results)
    assert not store.healthy and len(failures) == 1
    assert (await store.query("SELECT COUNT(*) FROM t"))[0][0] == 0
    await store.write([("INSERT INTO t VALUES (2)", ())])
    assert store.healthy
    await store.close()


async def test_probe_fails_on_a_read_only_store(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    await store.probe(1.0)
    await store.run(lambda c: c.execute("PRAGMA query_only = ON"))
    with pytest.raises(StoreError):
        await store.probe(2.0)
    await store.close()


def test_alert_rows_get_ids_and_lose_the_fingerprint_index(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m006_alerts_by_row_id")
    for fp in ("ff01", "0a02"):
        db.execute(
            "INSERT INTO alerts (fingerprint, labels, annotations, status, starts_at, "
            "updated_at) VALUES (?, '{}', '{}', 'resolved', 1, 1)",
            (fp,),
        )
    db.conn.commit()
    migrations.apply(db, stop_before="m010_unambiguous_identity")
    assert db.execute("SELECT id, fingerprint FROM alerts ORDER BY id").fetchall() == [
        (1, "ff01"),
        (2, "0a02"),
    ]
    assert db.execute("PRAGMA index_list(alerts)").fetchall() == []
    migrations.apply(db)
    conv = Convergence(make_config(tmp_path), ManualClock(), Ids())
    conv.load(db.conn)
    ids = Ids()
    ids.load(db.conn)
    assert ids.alert() == 3


async def test_a_step_runs_in_order_inside_the_transaction(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    await store.run(lambda c: c.execute("CREATE TABLE t (x INTEGER UNIQUE)"))
    seen: list[int] = []

    def step(conn: sqlite3.Connection) -> None:  # sees the uncommitted insert before it
        seen.append(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
        conn.execute("INSERT INTO t VALUES (2)")

    await store.write([("INSERT INTO t VALUES (1)", ()), step, ("INSERT INTO t VALUES (3)", ())])
    assert seen == [1]

    def failing(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(StoreError):
        await store.write([("INSERT INTO t VALUES (4)", ()), failing])
    assert [r[0] for r in await store.query("SELECT x FROM t ORDER BY x")] == [1, 2, 3]
    await store.close()


async def test_api_reads_run_beside_a_commit_and_see_only_what_is_committed(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    await store.write([("CREATE TABLE t (x INTEGER)", ()), ("INSERT INTO t VALUES (1)", ())])
    inside, release = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> None:  # holds the writer inside its transaction
        inside.set()
        release.wait(10)

    write = asyncio.create_task(store.write([("INSERT INTO t VALUES (2)", ()), slow]))
    await asyncio.get_running_loop().run_in_executor(None, inside.wait, 10)
    rows = await asyncio.wait_for(store.read_query("SELECT COUNT(*) FROM t"), timeout=5)
    assert rows[0][0] == 1  # the uncommitted insert is not seen
    release.set()
    await write
    assert (await store.read_query("SELECT COUNT(*) FROM t"))[0][0] == 2
    await store.close()


async def test_the_parts_log_survives_a_reopen_and_forgets_what_is_old(tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    parts = StoredPartsLog(store, clock)
    await parts.load()
    await parts.set("robot:1:abc", 2)
    clock.advance(100)
    await parts.set("robot:2:def", 1)
    await store.close()
    store = Store(str(tmp_path / "s.db"))
    await store.open()
    parts = StoredPartsLog(store, clock)
    await parts.load()
    assert (parts.get("robot:1:abc"), parts.get("robot:2:def"), parts.get("x")) == (2, 1, 0)
    await store.write(parts.expire(1050.0))
    assert (parts.get("robot:1:abc"), parts.get("robot:2:def")) == (0, 1)
    assert [r[0] for r in await store.query("SELECT key FROM channel_parts")] == ["robot:2:def"]
    await store.close()


async def test_a_scratch_store_writes_inline_in_long_transactions_and_fails_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay's store: no store thread, no commit per write; what a failure costs is what was
    written since the last commit (the run ends there)."""
    from monitor_manager.store import writer

    monkeypatch.setattr(writer, "SCRATCH_BATCH", 10)
    failures: list[BaseException] = []
    store = Store(str(tmp_path / "scratch.db"), on_failure=failures.append, scratch=True)
    await store.open()
    assert await store.run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "memory"
    await store.run(lambda c: c.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
    main = threading.get_ident()
    seen: list[int] = []
    for i in range(25):
        await store.write(
            [("INSERT INTO t VALUES (?)", (i,)), lambda c: seen.append(threading.get_ident())]
        )
    assert set(seen) == {main}  # on the caller's thread
    assert store.commits == 5  # 50 ops, a commit every 10
    assert (await store.read_query("SELECT COUNT(*) FROM t"))[0][0] == 25  # read commits first
    await store.write([("INSERT INTO t VALUES (?)", (100,))])
    with pytest.raises(StoreError):
        await store.write([("INSERT INTO t VALUES (?)", (1,))])  # a duplicate key
    assert failures and not store.healthy
    assert (await store.query("SELECT COUNT(*) FROM t"))[0][0] == 25  # 100 went with it
    await store.write([("INSERT INTO t VALUES (?)", (101,))])
    assert store.healthy
    await store.close()
    assert sqlite3.connect(tmp_path / "scratch.db").execute("SELECT MAX(x) FROM t").fetchone() == (
        101,
    )


def test_message_json_is_what_asdict_gives() -> None:
    import dataclasses
    import json

    from monitor_manager.models import AlertView, GroupView, Member, Message

    alert = AlertView("f1", "firing", {"a": "1"}, {"summary": "s"}, 1.0, None, "http://g")
    done = AlertView("f2", "resolved", {"a": "2"}, {}, 1.0, 2.0)
    message = Message(
        7,
        "digest",
        "sre",
        (Member("Li Si", "lisi@example.com", wechat="lisi", feishu="ou_1"),),
        (GroupView("k1", "sre", {"a": "1"}, (alert, done), "http://mm/groups/k1"),),
        3.5,
        "mm-az1",
        "http://mm",
        {"merged": [1, 2]},
    )
    assert json.dumps(message.to_json()) == json.dumps(dataclasses.asdict(message))
    assert Message.from_json(json.loads(json.dumps(message.to_json()))) == message
