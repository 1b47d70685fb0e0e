"""The user guide's walkthrough, end to end, with the real `quinkgl` command (the README's main job).

Steps: fetch real MNIST → keygen → arch hash of the guide's MNISTNet (python -c, as in the guide) →
manifest create → manifest verify → five `quinkgl run` peer processes on loopback, exactly as the guide starts
them (one per "terminal", output tee'd to peer-N.log) → the guide's greps → each peer's first and final
validation accuracy. Exits 0 only if every step worked, every peer finished every round well above chance
(LEARNED), and the swarm's mean accuracy rose. One peer's accuracy can dip by a few points in a round (the guide's
momentum SGD on short rounds; seen: 0.844 -> 0.798 while the swarm's mean rose 0.831 -> 0.871), so a dip is
reported, not failed.

Everything happens in ``runs/walkthrough/`` (``--workdir``); per-user state (TOFU cache, peer registry) is kept
inside it so repeated demos do not interfere with each other or with your own peers.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GREPS = ("aggregated models", "round=", "peer-discovered")
LEARNED = 0.5  # five times chance on MNIST's 10 classes: below it a peer did not learn (or was broken by a merge)


def step(title: str, argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run one command as a user would, echoing it; return its stdout."""
    print(f"\n## {title}\n$ {shlex.join(argv)}", flush=True)
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        sys.exit(f"walkthrough failed at '{title}' (exit {result.returncode})")
    return result.stdout


def start_peers(quinkgl: str, args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[subprocess.Popen]:
    """Start the five peers as the guide does, each writing its own log."""
    procs = []
    for index in range(1, args.peers + 1):
        argv = [
            quinkgl,
            "run",
            "--manifest",
            "demo.qgl",
            "--script",
            "mnist_peer_script.py",
            "--node-id",
            f"peer-{index}",
            "--port",
            str(args.port_base + index - 1),
            "--rounds",
            str(args.rounds),
            "--gossip-interval",
            str(args.gossip_interval),
            "--trust-policy",
            "tofu",
            "--script-arg",
            "data_root=./data",
            "--checkpoint-dir",
            f"./ckpt/peer-{index}",
        ]
        if args.local_steps:
            argv += ["--local-steps", str(args.local_steps)]
        if args.device:
            argv += ["--device", args.device]
        print(f"$ {shlex.join(argv)} 2>&1 | tee peer-{index}.log", flush=True)
        log = open(work / f"peer-{index}.log", "w")  # noqa: SIM115 - the child process writes to it until it exits
        procs.append(subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Wait for every peer (bounded); a peer still running at the deadline is terminated, by its PID."""
    deadline = time.monotonic() + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.terminate()
            codes.append(proc.wait(timeout=60))
    return codes


def report(args: argparse.Namespace, work: Path, codes: list[int]) -> bool:
    """The guide's greps and each peer's accuracy; True when every peer ran all rounds and the swarm improved."""
    ok = True
    overheads = []
    firsts, finals = [], []
    print("\n## Results (the guide's greps on each peer-N.log)", flush=True)
    for index, code in enumerate(codes, start=1):
        text = (work / f"peer-{index}.log").read_text(errors="replace")
        counts = {pattern: sum(pattern in line for line in text.splitlines()) for pattern in GREPS}
        metrics_file = work / "ckpt" / f"peer-{index}" / "metrics.jsonl"
        rounds = [json.loads(line) for line in metrics_file.read_text().splitlines()] if metrics_file.exists() else []
        first = rounds[0]["val_accuracy"] if rounds else None
        final = rounds[-1]["val_accuracy"] if rounds else None
        finished = code == 0 and len(rounds) == args.rounds and first is not None and final is not None
        verdict = "NOT learned"
        if finished:
            firsts.append(first)
            finals.append(final)
            verdict = "improved" if final > first else "dipped" if final >= LEARNED else verdict
        ok &= verdict != "NOT learned" and all(counts.values())
        overheads += [m["round_seconds"] - m["train_seconds"] - m["eval_seconds"] for m in rounds[1:]]
        print(
            f"peer-{index}: exit {code}, rounds {len(rounds)}/{args.rounds}, val accuracy "
            f"{first if first is None else f'{first:.4f}'} -> {final if final is None else f'{final:.4f}'}"
            f" ({verdict}); " + ", ".join(f"'{p}': {n} lines" for p, n in counts.items()),
            flush=True,
        )
    if firsts and len(firsts) == len(codes):
        rose = statistics.fmean(finals) > statistics.fmean(firsts)
        ok &= rose
        print(
            f"swarm mean val accuracy {statistics.fmean(firsts):.4f} -> {statistics.fmean(finals):.4f}"
            f" ({'improved' if rose else 'NOT improved'})",
            flush=True,
        )
    if overheads:
        print(
            f"per-round overhead (round time not spent training or evaluating), rounds 2..{args.rounds}: "
            f"median {statistics.median(overheads):.2f} s, max {max(overheads):.2f} s",
            flush=True,
        )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/walkthrough")
    parser.add_argument("--peers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="the guide uses 15; fewer keep the demo to minutes")
    parser.add_argument("--local-steps", type=int, default=200, help="batches per round (0: the default, 1 epoch)")
    parser.add_argument("--gossip-interval", type=float, default=12.0)
    parser.add_argument("--port-base", type=int, default=7001)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the five peers may take")
    parser.add_argument("--device", default=None, help="passed to every peer's --device (default: run's own, auto)")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "ckpt", ignore_errors=True)
    shutil.rmtree(work / "state", ignore_errors=True)
    shutil.copy(HERE / "mnist_peer_script.py", work / "mnist_peer_script.py")
    env = dict(os.environ, QUINKGL_STATE_DIR=str(work / "state"), PYTHONUNBUFFERED="1")
    quinkgl = shutil.which("quinkgl") or sys.exit("the quinkgl command is not installed")

    step("Real MNIST into ./data", [quinkgl, "data", "mnist", "--root", "./data"], work, env)
    if (work / "creator.key").exists():
        (work / "creator.key").unlink()  # a fresh key each demo: nothing to remember from an earlier one
    pubkey = step("Creator key", [quinkgl, "keygen", "--output", "creator.key"], work, env).strip().splitlines()[-1]
    code = (
        "from quinkgl.manifest import compute_arch_hash\nfrom mnist_peer_script import MNISTNet\n"
        "print(compute_arch_hash(MNISTNet()))"
    )
    arch = step("Model architecture hash", [sys.executable, "-c", code], work, env).strip()
    info = json.loads(subprocess.run([quinkgl, "info", "--json"], capture_output=True, text=True, check=True).stdout)
    names = {c["name"] for c in info["components"]}
    aggregation, topology = ("EntropyWeightedAvg", "AffinityTopology")
    if not {aggregation, topology} <= names:  # the guide's choice needs quinkgl-agg-robust and quinkgl-topo
        aggregation, topology = "FedAvg", "RandomTopology"
    step(
        "Manifest",
        [
            quinkgl,
            "manifest",
            "create",
            "--name",
            "demo-5peer",
            "--task-type",
            "class",
            "--input-shape",
            "1,28,28",
            "--output-shape",
            "10",
            "--label-type",
            "integer",
            "--model-framework",
            "pytorch",
            "--model-arch-hash",
            arch,
            "--aggregation",
            aggregation,
            "--topology",
            topology,
            "--sign-with",
            "creator.key",
            "--output",
            "demo.qgl",
        ],
        work,
        env,
    )
    step("Verify", [quinkgl, "manifest", "verify", "demo.qgl", "--trusted-pubkey", pubkey], work, env)
    print(f"\n## {args.peers} peers over libp2p on loopback", flush=True)
    started = time.monotonic()
    codes = wait_all(start_peers(quinkgl, args, work, env), args.timeout)
    print(f"all peers exited after {time.monotonic() - started:.1f} s: {codes}", flush=True)
    if not report(args, work, codes):
        sys.exit("walkthrough FAILED: a peer did not finish every round, or the swarm did not improve (see peer-N.log)")
    print("\nwalkthrough OK: every peer found the others, exchanged models, aggregated; the swarm improved", flush=True)


if __name__ == "__main__":
    main()
