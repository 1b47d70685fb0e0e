"""Aggregation speed and memory: quinkgl-agg-robust's rules next to PyPI ``byzfl``'s on the same tensors.

For every n (models) × d (parameters) the script draws n float32 models around a common centre (d split over
two tensors, like a weight and a bias), then times in the same run:

* ``ours``: the rule as a peer calls it, ``rule.aggregate(own, received)`` on the ModelUpdates (this includes
  building the n × d matrix from the tensors);
* ``byzfl``: ``byzfl.<Rule>(f)(matrix)`` on the same models already stacked into one n × d float32 tensor (ByzFL's
  input format; the stack is not timed and not counted as its memory).

Times are medians of ``--repeat`` timed calls (after one warm-up), alternating ours / byzfl. Peak extra memory is
the peak resident set size during one call above the resident size just before it (Linux: the peak is reset
through ``/proc/self/clear_refs``). The script re-runs itself with ``MALLOC_MMAP_THRESHOLD_=131072`` so that glibc
maps every block over 128 KiB on its own and returns it on free: the RSS then follows torch's live CPU memory
instead of a heap that keeps freed blocks. Memory is measured before the timings.
The goals (issue 9): time ≤ 0.5 × byzfl's for Krum, MultiKrum and TrimmedMean, ≤ 0.8 × for Median; peak extra
memory ≤ 2 × n × d × 4 bytes. f = n // 5 (Krum, MultiKrum, TrimmedMean).

Usage: python bench/bench_aggregation.py [--repeat 5] [--sizes 10x100000,50x1000000] [--threads 1]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from quinkgl.aggregation import ModelUpdate
from quinkgl_agg_robust.coordinatewise import Median, TrimmedMean
from quinkgl_agg_robust.krum import Krum, MultiKrum
from quinkgl_agg_robust.params import KrumParams, MultiKrumParams, TrimmedMeanParams

GOALS = {"Krum": 0.5, "MultiKrum": 0.5, "TrimmedMean": 0.5, "Median": 0.8}
DEFAULT_SIZES = [(n, d) for n in (10, 20, 50) for d in (100_000, 1_000_000)]


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_bytes(call: Callable[[], Any]) -> int:
    """Peak RSS during ``call`` above the RSS just before it, in bytes."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current RSS
    before = rss_kib("VmRSS")
    result = call()
    peak = rss_kib("VmHWM")
    del result
    return max(0, peak - before) * 1024


def timed(call: Callable[[], Any], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def models(n: int, d: int, seed: int) -> tuple[ModelUpdate, list[ModelUpdate], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(d, generator=gen)
    rows = [centre + 0.01 * torch.randn(d, generator=gen) for _ in range(n)]
    split = d - d // 100
    updates = [
        ModelUpdate(f"p{i}", 1, 100, {"w": r[:split].clone(), "b": r[split:].clone()}) for i, r in enumerate(rows)
    ]
    matrix = torch.stack(rows)
    del rows
    return updates[0], updates[1:], matrix


def make_rules(
    own: ModelUpdate, received: list[ModelUpdate], matrix: torch.Tensor, f: int, byzfl: Any
) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """Rule name -> (ours, byzfl's), each a call on the same models."""
    return {
        "Krum": (lambda: Krum(KrumParams(f=f)).aggregate(own, received), lambda: byzfl.Krum(f=f)(matrix)),
        "MultiKrum": (
            lambda: MultiKrum(MultiKrumParams(f=f)).aggregate(own, received),
            lambda: byzfl.MultiKrum(f=f)(matrix),
        ),
        "TrimmedMean": (
            lambda: TrimmedMean(TrimmedMeanParams(f=f)).aggregate(own, received),
            lambda: byzfl.TrMean(f=f)(matrix),
        ),
        "Median": (lambda: Median().aggregate(own, received), lambda: byzfl.Median()(matrix)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", help="comma-separated NxD, e.g. 10x100000,50x1000000 (default: the issue's grid)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"})
    import byzfl

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = DEFAULT_SIZES
    if args.sizes:
        sizes = [(int(a), int(b)) for a, b in (item.split("x") for item in args.sizes.split(","))]
    print(
        f"torch {torch.__version__}, byzfl {getattr(byzfl, '__version__', '0.0.11')}, threads "
        f"{torch.get_num_threads()}, repeat {args.repeat}\n"
    )
    print(
        "| rule | n | d | ours ms | byzfl ms | ratio | goal | ours peak extra MiB | byzfl peak extra MiB | "
        "limit 2nd·4 MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    misses = 0
    for n, d in sizes:
        own, received, matrix = models(n, d, args.seed)
        rules = make_rules(own, received, matrix, n // 5, byzfl)
        limit = 2 * n * d * 4
        for name, (ours, theirs) in rules.items():
            ours()
            try:
                theirs()
                byzfl_ok = True
            except RuntimeError as exc:  # e.g. torch.quantile refuses inputs over 16 Mi values
                byzfl_ok, error = False, str(exc).splitlines()[0]
            ours_peak = peak_extra_bytes(ours)
            byzfl_peak = peak_extra_bytes(theirs) if byzfl_ok else None
            ours_times, byzfl_times = [], []
            for _ in range(args.repeat):
                ours_times += timed(ours, 1)
                if byzfl_ok:
                    byzfl_times += timed(theirs, 1)
            ours_ms = statistics.median(ours_times) * 1e3
            if byzfl_ok:
                byzfl_ms = statistics.median(byzfl_times) * 1e3
                ratio = ours_ms / byzfl_ms
                verdict = "ok" if ratio <= GOALS[name] else "MISS"
                byzfl_text, ratio_text = f"{byzfl_ms:.1f}", f"{ratio:.2f} {verdict}"
            else:
                byzfl_text, ratio_text, verdict = f"fails ({error[:40]})", "-", "ok"
            memory_ok = ours_peak <= limit
            misses += (verdict != "ok") + (not memory_ok)
            print(
                f"| {name} | {n} | {d:,} | {ours_ms:.1f} | {byzfl_text} | {ratio_text} | ≤ {GOALS[name]} | "
                f"{ours_peak / 2**20:.0f}{'' if memory_ok else ' MISS'} | "
                f"{'-' if byzfl_peak is None else f'{byzfl_peak / 2**20:.0f}'} | {limit / 2**20:.0f} |",
                flush=True,
            )
        del own, received, matrix, rules
        gc.collect()
    print(f"\n{misses} goal(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
