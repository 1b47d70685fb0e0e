"""The user guide's walkthrough, end to end, with the real `quinkgl` command (the README's main job).

Steps: fetch real MNIST → keygen → arch hash of the guide's MNISTNet (python -c, as in the guide) →
manifest create → manifest verify. Everything happens in ``runs/walkthrough/`` (or ``--workdir``).
Exits non-zero as soon as a step fails.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def step(title: str, argv: list[str], cwd: Path) -> str:
    """Run one command as a user would, echoing it; return its stdout."""
    print(f"\n## {title}\n$ {shlex.join(argv)}", flush=True)
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        sys.exit(f"walkthrough failed at '{title}' (exit {result.returncode})")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="runs/walkthrough")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "mnist_peer_script.py", work / "mnist_peer_script.py")
    quinkgl = shutil.which("quinkgl") or sys.exit("the quinkgl command is not installed")

    step("Real MNIST into ./data", [quinkgl, "data", "mnist", "--root", "./data"], work)
    key = work / "creator.key"
    if not key.exists():
        pubkey = step("Creator key", [quinkgl, "keygen", "--output", "creator.key"], work).strip().splitlines()[-1]
    else:
        from quinkgl import keys

        pubkey = keys.public_key_text(keys.load_private_key(str(key)))
        print(f"\n## Creator key\nreusing {key} ({pubkey})")
    code = "from quinkgl.manifest import compute_arch_hash\nfrom mnist_peer_script import MNISTNet\nprint(compute_arch_hash(MNISTNet()))"
    arch = step("Model architecture hash", [sys.executable, "-c", code], work).strip()
    step(
        "Manifest",
        [quinkgl, "manifest", "create", "--name", "demo-5peer", "--task-type", "class", "--input-shape", "1,28,28",
         "--output-shape", "10", "--label-type", "integer", "--model-framework", "pytorch", "--model-arch-hash", arch,
         "--aggregation", "EntropyWeightedAvg", "--topology", "AffinityTopology", "--sign-with", "creator.key",
         "--output", "demo.qgl"],
        work,
    )
    step("Verify", [quinkgl, "manifest", "verify", "demo.qgl", "--trusted-pubkey", pubkey], work)
    print("\nwalkthrough OK: key, arch hash, signed manifest verified", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
