"""AsyncClient has Client's methods, as coroutines, with the same answers."""
import asyncio
import inspect

import numpy as np

import emberdb
from data import clusters

PUBLIC = [n for n in dir(emberdb.Client) if not n.startswith("_")]


def test_same_methods_and_signatures():
    for name in PUBLIC:
        assert hasattr(emberdb.AsyncClient, name), name
        if name in ("close",):
            continue
        sync_sig = inspect.signature(getattr(emberdb.Client, name))
        async_sig = inspect.signature(getattr(emberdb.AsyncClient, name))
        assert sync_sig.parameters.keys() == async_sig.parameters.keys(), name


def test_async_parity(server, client, collection):
    ids, xs, labels = clusters(n_per=30)
    client.create_version(collection, "sync", dim=16)
    client.upsert(collection, "sync", ids, xs, labels=labels)

    async def run():
        async with emberdb.AsyncClient(server.addr, timeout=120) as ac:
            info = await ac.create_version(collection, "async", dim=16)
            assert info.version == "async"
            n = await ac.upsert(collection, "async", ids, xs, labels=labels, batch_size=37)
            assert n == len(ids)
            d = await ac.describe(collection, "async")
            hits = await ac.search(collection, "async", xs[3], k=5, exact=True)
            batch = await ac.search_batch(collection, "async", xs[:20], k=5, exact=True, batch_size=6)
            got = await ac.get(collection, "async", ids[:3], with_vectors=True)
            conf = await ac.confusion(collection, "async")
            marg = await ac.margin(collection, "async", lowest_n=5)
            rec = await ac.recall(collection, "async", k=5, sample_size=30, seed=2)
            acts = await ac.actions(collection, "async")
            proj = await ac.project(collection, "async", sample_size=50, seed=1)
            drift = await ac.drift(collection, "sync", "async", seed=1)
            canary = await ac.compare_versions(collection, "sync", "async", k=5)
            cons = await ac.check_consistency(collection, "async")
            await ac.set_monitor(collection, "async", interval_s=3600)
            mons = await ac.list_monitors(collection)
            await ac.delete_monitor(collection, "async")
            await ac.set_alias(collection, "a", "async")
            await ac.delete_alias(collection, "a")
            cols = await ac.list_collections()
            deleted = await ac.delete(collection, "async", ids[:2])
            await ac.drop_version(collection, "async")
            return d, hits, batch, got, conf, marg, rec, acts, proj, drift, canary, cons, mons, cols, deleted

    d, hits, batch, got, conf, marg, rec, acts, proj, drift, canary, cons, mons, cols, deleted = asyncio.run(run())
    assert d.points == len(ids)
    s_hits = client.search(collection, "sync", xs[3], k=5, exact=True)
    assert hits.ids.tolist() == s_hits.ids.tolist()
    np.testing.assert_array_equal(hits.distances, s_hits.distances)
    s_batch = client.search_batch(collection, "sync", xs[:20], k=5, exact=True)
    np.testing.assert_array_equal(batch.ids, s_batch.ids)
    np.testing.assert_array_equal(got.vectors, xs[:3].astype(np.float32))
    s_conf = client.confusion(collection, "sync")
    assert conf.raw == s_conf.raw
    assert marg.raw == client.margin(collection, "sync", lowest_n=5).raw
    assert rec.query_ids.tolist() == client.recall(collection, "sync", k=5, sample_size=30, seed=2).query_ids.tolist()
    assert [a.subject for a in acts] == [a.subject for a in client.actions(collection, "sync")]
    assert proj.xy.shape == (50, 2)
    assert drift.baseline_points == drift.current_points == len(ids) and not drift.drifted
    assert canary.shared_ids == len(ids) and canary.verdict in ("PROMOTE", "HOLD", "ROLLBACK")
    assert cons.stored_points == len(ids)
    assert len(mons) == 1 and mons[0].spec.version == "async"
    assert collection in [c.name for c in cols]
    assert deleted == 2
    assert [v.version for c in client.list_collections() if c.name == collection for v in c.versions] == ["sync"]
