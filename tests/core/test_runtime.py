"""The round loop over the memory transport: resume from checkpoints, counted rejections, other swarms ignored."""

from __future__ import annotations

import json

import pytest
import torch
import trio

from helpers import fedavg_manifest, run_swarm
from quinkgl import wire
from quinkgl.runtime.options import PeerOptions
from quinkgl.runtime.peerview import encode_announcement
from quinkgl.script import ScriptPlugin
from quinkgl.transport import TransportConfig, TransportError
from quinkgl.transports.memory import MemoryParams, MemoryTransport


def options(node, rounds, mnist_root, **extra):
    return PeerOptions(node_id=node, rounds=rounds, local_steps=10, max_eval_batches=10,
                       script_args={"data_root": str(mnist_root)}, **extra)


def test_restart_resumes_from_the_last_completed_round(tmp_path, guide_script, mnist_root):
    manifest = fedavg_manifest()
    script = ScriptPlugin.from_file(guide_script)
    ckpt = tmp_path / "ckpt"
    first = run_swarm(manifest, [script], [options("p", 2, mnist_root, checkpoint_dir=str(ckpt))])[0]
    assert [m["round"] for m in first.history] == [1, 2]
    trained = {k: v.clone() for k, v in first.p.model.state_dict().items()}

    second = run_swarm(manifest, [ScriptPlugin.from_file(guide_script)],
                       [options("p", 4, mnist_root, checkpoint_dir=str(ckpt))])[0]
    assert second.p.start_round == 2
    assert [m["round"] for m in second.history] == [3, 4]  # the round index continues; --rounds is the total
    lines = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2, 3, 4]

    # a third start with the same total does nothing but still loads the trained weights
    third = run_swarm(manifest, [ScriptPlugin.from_file(guide_script)],
                      [options("p", 4, mnist_root, checkpoint_dir=str(ckpt))])[0]
    assert third.history == [] and third.p.start_round == 4
    assert not torch.equal(third.p.model.state_dict()["net.1.weight"], trained["net.1.weight"])


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, guide_script, mnist_root):
    manifest = fedavg_manifest()
    ckpt = tmp_path / "ckpt"
    run_swarm(manifest, [ScriptPlugin.from_file(guide_script)], [options("p", 3, mnist_root, checkpoint_dir=str(ckpt))])
    newest = sorted(ckpt.glob("round-*"))[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a half-written file
    resumed = run_swarm(manifest, [ScriptPlugin.from_file(guide_script)],
                        [options("p", 3, mnist_root, checkpoint_dir=str(ckpt))])[0]
    assert resumed.p.start_round == 2 and [m["round"] for m in resumed.history] == [3]


def test_checkpoint_of_another_swarm_is_refused(tmp_path, guide_script, mnist_root):
    from quinkgl.errors import QuinkGLError

    ckpt = tmp_path / "ckpt"
    run_swarm(fedavg_manifest(), [ScriptPlugin.from_file(guide_script)],
              [options("p", 1, mnist_root, checkpoint_dir=str(ckpt))])
    with pytest.raises(QuinkGLError, match="belongs to swarm"):
        run_swarm(fedavg_manifest(name="other"), [ScriptPlugin.from_file(guide_script)],
                  [options("p", 2, mnist_root, checkpoint_dir=str(ckpt))])


def test_bad_updates_are_counted_and_foreign_peers_ignored(guide_script, mnist_root):
    manifest = fedavg_manifest()
    other_swarm = fedavg_manifest(name="elsewhere")
    sent = {}

    async def intruders(peers, hub):
        target = peers[0]
        while target.view is None:
            await trio.sleep(0.01)
        rogue = MemoryTransport(MemoryParams(hub=hub), TransportConfig(swarm_id=manifest.swarm_id, node_id="rogue",
                                                                        max_payload_bytes=1 << 20))
        foreign = MemoryTransport(MemoryParams(hub=hub), TransportConfig(swarm_id=other_swarm.swarm_id,
                                                                          node_id="foreign"))
        for t in (rogue, foreign):
            t.set_handlers(on_announcement=lambda s, d: None, on_payload=lambda s, d, t=t: sent.setdefault("to_" + t.peer_id, []).append(s))
        async with rogue, foreign:
            hello = dict(swarm_id=manifest.swarm_id, arch_hash=manifest.model.arch_hash, node_id="rogue", round_idx=0,
                         pushed=0, done=False, metrics={}, metadata={})
            await rogue.announce(encode_announcement(**hello))
            await foreign.announce(encode_announcement(**{**hello, "swarm_id": other_swarm.swarm_id, "node_id": "x"}))
            good = {k: v.detach().clone() for k, v in target.p.model.state_dict().items()}
            bad_shape = dict(good, **{"net.1.weight": torch.zeros(3, 3)})
            nan = dict(good, **{"net.1.weight": torch.full_like(good["net.1.weight"], float("nan"))})
            for payload in (
                b"garbage" * 10,
                wire.encode_update(good, swarm_id=manifest.swarm_id, sender=rogue.peer_id, round=1, num_samples=1)[:-10],
                wire.encode_update(bad_shape, swarm_id=manifest.swarm_id, sender=rogue.peer_id, round=1, num_samples=1),
                wire.encode_update(nan, swarm_id=manifest.swarm_id, sender=rogue.peer_id, round=1, num_samples=1),
                wire.encode_update(good, swarm_id=other_swarm.swarm_id, sender=rogue.peer_id, round=1, num_samples=1),
                wire.encode_update(good, swarm_id=manifest.swarm_id, sender="someone-else", round=1, num_samples=1),
            ):
                handled = target.counters.updates_accepted + target.counters.updates_rejected
                await rogue.send(target.peer_id, payload, timeout=5)
                with trio.fail_after(30):  # one at a time: a burst would be cut off as flooding (tested below)
                    while target.counters.updates_accepted + target.counters.updates_rejected == handled:
                        await trio.sleep(0.01)
            with pytest.raises(TransportError, match="does not admit"):  # refused before its bytes are delivered
                await foreign.send(target.peer_id,
                                   wire.encode_update(good, swarm_id=manifest.swarm_id, sender=foreign.peer_id,
                                                      round=1, num_samples=1), timeout=5)
            while target.completed < 2:
                await trio.sleep(0.05)

    peers = run_swarm(manifest, [ScriptPlugin.from_file(guide_script) for _ in range(2)],
                      [options(f"p{i}", 3, mnist_root) for i in range(2)], extra=intruders)
    target = peers[0]
    assert all(p.completed == 3 for p in peers)  # training went on
    rejected = target.counters.rejected
    for reason in ("bad_magic", "truncated", "shape_mismatch", "non_finite", "wrong_swarm", "sender_mismatch",
                   "announcement_other_swarm"):
        assert rejected.get(reason, 0) >= 1, (reason, rejected)
    assert target.p.transport.stats().rejected.get("not_admitted", 0) >= 1  # the foreign peer's update
    # nobody pushed to the foreign peer; only the honest peer's updates were aggregated
    assert not [k for k in sent if "foreign" in k]
    assert all(set(m["aggregated_from"]) <= {peers[1].peer_id} for m in target.history)


def test_isolated_peers_never_send(guide_script, mnist_root):
    peers = run_swarm(fedavg_manifest(), [ScriptPlugin.from_file(guide_script) for _ in range(2)],
                      [options(f"p{i}", 2, mnist_root, isolated=True) for i in range(2)])
    assert all(p.counters.updates_sent == 0 and p.p.transport.stats().bytes_sent == 0 for p in peers)
    assert all(m["aggregated_from"] == [] for p in peers for m in p.history)


def test_a_flooding_sender_is_cut_off_and_counted(guide_script, mnist_root):
    manifest = fedavg_manifest()

    async def flood(peers, hub):
        target = peers[0]
        while target.view is None:
            await trio.sleep(0.01)
        rogue = MemoryTransport(MemoryParams(hub=hub), TransportConfig(swarm_id=manifest.swarm_id, node_id="flood"))
        rogue.set_handlers(on_announcement=lambda s, d: None, on_payload=lambda s, d: None)
        async with rogue:
            # It announces first: a stranger's payloads are refused by the transport before any queueing.
            await rogue.announce(encode_announcement(swarm_id=manifest.swarm_id, arch_hash=manifest.model.arch_hash,
                                                     node_id="flood", round_idx=0, pushed=0, done=False, metrics={},
                                                     metadata={}))
            for _ in range(50):  # synchronous deliveries: the decoder gets no chance to drain in between
                await rogue.send(target.peer_id, b"x" * 1000, timeout=5)
            while target.completed < 1:
                await trio.sleep(0.05)

    target = run_swarm(manifest, [ScriptPlugin.from_file(guide_script) for _ in range(2)],
                       [options(f"p{i}", 2, mnist_root) for i in range(2)], extra=flood)[0]
    assert target.counters.rejected["sender_flooding"] >= 40
    assert target.completed == 2 and not target._pending
