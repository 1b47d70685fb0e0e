"""The round loop over the memory transport: resume from checkpoints, counted rejections, other swarms ignored."""

from __future__ import annotations

import json

import attrs
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
    return PeerOptions(
        node_id=node,
        rounds=rounds,
        local_steps=10,
        max_eval_batches=10,
        script_args={"data_root": str(mnist_root)},
        **extra,
    )


def test_restart_resumes_from_the_last_completed_round(tmp_path, guide_script, mnist_root):
    manifest = fedavg_manifest()
    script = ScriptPlugin.from_file(guide_script)
    ckpt = tmp_path / "ckpt"
    first = run_swarm(manifest, [script], [options("p", 2, mnist_root, checkpoint_dir=str(ckpt))])[0]
    assert [m["round"] for m in first.history] == [1, 2]
    trained = {k: v.clone() for k, v in first.p.model.state_dict().items()}

    second = run_swarm(
        manifest, [ScriptPlugin.from_file(guide_script)], [options("p", 4, mnist_root, checkpoint_dir=str(ckpt))]
    )[0]
    assert second.p.start_round == 2
    assert [m["round"] for m in second.history] == [3, 4]  # the round index continues; --rounds is the total
    lines = [json.loads(line) for line in (ckpt / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2, 3, 4]

    # a third start with the same total does nothing but still loads the trained weights
    third = run_swarm(
        manifest, [ScriptPlugin.from_file(guide_script)], [options("p", 4, mnist_root, checkpoint_dir=str(ckpt))]
    )[0]
    assert third.history == [] and third.p.start_round == 4
    assert not torch.equal(third.p.model.state_dict()["net.1.weight"], trained["net.1.weight"])


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, guide_script, mnist_root):
    manifest = fedavg_manifest()
    ckpt = tmp_path / "ckpt"
    run_swarm(manifest, [ScriptPlugin.from_file(guide_script)], [options("p", 3, mnist_root, checkpoint_dir=str(ckpt))])
    newest = sorted(ckpt.glob("round-*"))[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a half-written file
    resumed = run_swarm(
        manifest, [ScriptPlugin.from_file(guide_script)], [options("p", 3, mnist_root, checkpoint_dir=str(ckpt))]
    )[0]
    assert resumed.p.start_round == 2 and [m["round"] for m in resumed.history] == [3]


def test_checkpoint_of_another_swarm_is_refused(tmp_path, guide_script, mnist_root):
    from quinkgl.errors import QuinkGLError

    ckpt = tmp_path / "ckpt"
    run_swarm(
        fedavg_manifest(),
        [ScriptPlugin.from_file(guide_script)],
        [options("p", 1, mnist_root, checkpoint_dir=str(ckpt))],
    )
    with pytest.raises(QuinkGLError, match="belongs to swarm"):
        run_swarm(
            fedavg_manifest(name="other"),
            [ScriptPlugin.from_file(guide_script)],
            [options("p", 2, mnist_root, checkpoint_dir=str(ckpt))],
        )


def test_bad_answers_are_counted_pushes_dropped_and_foreign_peers_ignored(guide_script, mnist_root):
    manifest = fedavg_manifest()
    other_swarm = fedavg_manifest(name="elsewhere")
    served, refused = [], []

    async def intruders(peers, hub):
        target = peers[0]
        while target.view is None:
            await trio.sleep(0.01)
        rogue = MemoryTransport(
            MemoryParams(hub=hub),
            TransportConfig(swarm_id=manifest.swarm_id, node_id="rogue", max_payload_bytes=1 << 20),
        )
        foreign = MemoryTransport(
            MemoryParams(hub=hub), TransportConfig(swarm_id=other_swarm.swarm_id, node_id="foreign")
        )
        good = {k: v.detach().clone() for k, v in target.p.model.state_dict().items()}
        bad_shape = dict(good, **{"net.1.weight": torch.zeros(3, 3)})
        nan = dict(good, **{"net.1.weight": torch.full_like(good["net.1.weight"], float("nan"))})

        def update(tensors, swarm=manifest.swarm_id, sender=None, round_idx=99):
            return wire.encode_update(
                tensors, swarm_id=swarm, sender=sender or rogue.peer_id, round=round_idx, num_samples=1
            )

        answers = [
            ("bad_magic", b"garbage" * 10),
            ("truncated", update(good)[:-10]),
            ("shape_mismatch", update(bad_shape)),
            ("non_finite", update(nan)),
            ("wrong_swarm", update(good, swarm=other_swarm.swarm_id)),
            ("sender_mismatch", update(good, sender="someone-else")),
            ("stale_round", update(good, round_idx=0)),
            ("far_future_round", update(good, round_idx=2**53)),  # must not outrank every real update
        ]

        async def serve_bad(sender, message):  # the rogue answers every request with the next broken update
            reason, payload = answers[len(served) % len(answers)]
            served.append(reason)
            return payload

        rogue.set_handlers(on_announcement=lambda s, d: None, on_payload=lambda s, d: None, on_request=serve_bad)
        foreign.set_handlers(on_announcement=lambda s, d: None, on_payload=lambda s, d: None)
        async with rogue, foreign:
            hello = {
                "swarm_id": manifest.swarm_id,
                "arch_hash": manifest.model.arch_hash,
                "node_id": "rogue",
                "round_idx": 0,
                "pushed": 0,
                "done": False,
                "metrics": {},
                "metadata": {},
            }
            await rogue.announce(encode_announcement(**hello))
            await foreign.announce(encode_announcement(**{**hello, "swarm_id": other_swarm.swarm_id, "node_id": "x"}))
            for _ in range(3):  # valid updates nobody asked for: dropped undecoded, counted
                await rogue.send(target.peer_id, update(good, round_idx=1), timeout=5)
            try:
                await foreign.request(target.peer_id, b'{"round":1,"swarm_id":"x","v":1}', timeout=5)
            except TransportError as exc:
                refused.append(str(exc))
            with trio.fail_after(120):
                while target.completed < 3 or len(served) < len(answers):  # keep announcing until all were asked
                    await rogue.announce(encode_announcement(**hello))
                    with trio.move_on_after(0.5):
                        await trio.sleep_forever()

    scripts = [ScriptPlugin.from_file(guide_script) for _ in range(2)]
    peers = run_swarm(
        manifest,
        scripts,
        [attrs.evolve(options(f"p{i}", 12, mnist_root), max_eval_batches=2, local_steps=3) for i in range(2)],
        extra=intruders,
    )
    target = peers[0]
    assert all(p.completed == 12 for p in peers)  # training went on
    rejected = {**peers[0].counters.rejected}
    for reason, count in peers[1].counters.rejected.items():
        rejected[reason] = rejected.get(reason, 0) + count
    for reason in set(served):
        assert rejected.get(reason, 0) >= 1, (reason, rejected)
    assert len(set(served)) == 8
    assert target.counters.rejected["unsolicited"] == 3 and target.counters.rejected["announcement_other_swarm"] == 1
    # a peer of another swarm is not admitted: its request is refused before the handler sees it
    assert refused and "does not admit" in refused[0]
    assert target.p.transport.stats().rejected.get("not_admitted", 0) >= 1
    assert all(set(m["aggregated_from"]) <= {peers[1].peer_id} for m in target.history)


def test_isolated_peers_never_send(guide_script, mnist_root):
    peers = run_swarm(
        fedavg_manifest(),
        [ScriptPlugin.from_file(guide_script) for _ in range(2)],
        [options(f"p{i}", 2, mnist_root, isolated=True) for i in range(2)],
    )
    assert all(p.counters.updates_sent == 0 and p.p.transport.stats().bytes_sent == 0 for p in peers)
    assert all(m["aggregated_from"] == [] for p in peers for m in p.history)


def test_pushed_updates_are_counted_as_unsolicited_and_never_decoded(guide_script, mnist_root):
    manifest = fedavg_manifest()

    async def flood(peers, hub):
        target = peers[0]
        while target.view is None:
            await trio.sleep(0.01)
        rogue = MemoryTransport(MemoryParams(hub=hub), TransportConfig(swarm_id=manifest.swarm_id, node_id="flood"))
        rogue.set_handlers(on_announcement=lambda s, d: None, on_payload=lambda s, d: None)
        async with rogue:
            # A peer of the swarm (admitted: it announced itself), pushing what nobody asked for.
            await rogue.announce(
                encode_announcement(
                    swarm_id=manifest.swarm_id,
                    arch_hash=manifest.model.arch_hash,
                    node_id="flood",
                    round_idx=0,
                    pushed=0,
                    done=False,
                    metrics={},
                    metadata={},
                )
            )
            with trio.fail_after(30):
                while not target.admits(rogue.peer_id):
                    await trio.sleep(0.01)
            for _ in range(50):
                await rogue.send(target.peer_id, b"x" * 1000, timeout=5)

    target = run_swarm(
        manifest,
        [ScriptPlugin.from_file(guide_script) for _ in range(2)],
        [options(f"p{i}", 2, mnist_root) for i in range(2)],
        extra=flood,
    )[0]
    assert target.counters.rejected["unsolicited"] == 50
    assert "bad_magic" not in target.counters.rejected  # dropped before decoding
    assert target.completed == 2
