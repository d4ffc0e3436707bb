"""Property: any sequence of writes, failed writes, deletes, replaces and reopens leaves the
store equal to a plain dict model, with used bytes equal to the sum of object sizes per lease
and exactly one blob file per distinct content."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nuclux.errors import ObjectNotFound, QuotaExceeded
from nuclux.node.store import ShardStore
from tests.node.test_store_support import blob_files, get, open_store, put, sha, tmp_files

QUOTA = 75_000
LEASES = (1, 2)
OIDS = (b"a", b"b", b"c", b"d")
CONTENTS = (b"", b"1", b"x" * 100, b"y" * 2000, bytes(range(256)) * 20, b"z" * 70_000)

Key = tuple[int, bytes]
lease_ids = st.sampled_from(LEASES)
oids = st.sampled_from(OIDS)
contents = st.sampled_from(CONTENTS)
ops = st.one_of(
    st.tuples(st.just("put"), lease_ids, oids, contents, st.sampled_from([1000, 1 << 16])),
    st.tuples(st.just("fail"), lease_ids, oids, contents, st.just(500)),
    st.tuples(st.just("delete"), lease_ids, oids, st.just(b""), st.just(0)),
    st.tuples(st.just("reopen"), st.just(1), st.just(b"a"), st.just(b""), st.just(0)),
)


class Abandon(Exception):
    pass


def used(model: dict[Key, bytes], lease: int) -> int:
    return sum(len(v) for (lid, _), v in model.items() if lid == lease)


async def check(store: ShardStore, root: Path, model: dict[Key, bytes]) -> None:
    for lease in LEASES:
        listed = await store.list_objects(lease)
        expected = {oid: v for (lid, oid), v in model.items() if lid == lease}
        assert [o.object_id for o in listed] == sorted(expected)
        for info in listed:
            data = expected[info.object_id]
            assert (info.size, info.sha256) == (len(data), sha(data))
            assert await get(store, lease, info.object_id) == data
        usage = await store.lease_usage(lease)
        assert (usage.used_bytes, usage.objects) == (used(model, lease), len(expected))
    assert blob_files(root) == {sha(v) for v in model.values()}
    assert tmp_files(root) == []


async def apply(
    store: ShardStore, model: dict[Key, bytes], op: tuple[str, int, bytes, bytes, int]
) -> None:
    kind, lease, oid, data, chunk = op
    key = (lease, oid)
    if kind == "delete":
        if key in model:
            await store.delete(lease, oid)
            del model[key]
        else:
            try:
                await store.delete(lease, oid)
            except ObjectNotFound:
                return
            raise AssertionError("deleting a missing object succeeded")
        return
    fits = used(model, lease) - len(model.get(key, b"")) + len(data) <= QUOTA
    try:
        if kind == "fail":
            async with store.writer(lease, oid) as w:
                await w.write(data[: len(data) // 2])
                raise Abandon
        await put(store, lease, oid, data, chunk=chunk)
    except Abandon:
        return
    except QuotaExceeded:
        assert not fits, "refused a write that fits the quota"
        event("write refused: quota")
        return
    assert fits, "accepted a write past the quota"
    event("replace" if key in model else "write")
    model[key] = data


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=25))
async def test_store_matches_model(steps: list[tuple[str, int, bytes, bytes, int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        store = await open_store(root)
        try:
            for lease in LEASES:
                await store.set_lease(lease, QUOTA, None)
            model: dict[Key, bytes] = {}
            for step in steps:
                if step[0] == "reopen":
                    await store.close()
                    store = await open_store(root)
                    report = store.check_report
                    assert report.objects_dropped == report.orphans_removed == 0
                    assert report.refs_repaired == report.usage_repaired == 0
                else:
                    await apply(store, model, step)
            await check(store, root, model)
        finally:
            await store.close()
