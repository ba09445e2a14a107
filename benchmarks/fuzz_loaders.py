"""Fuzz every file loader of the pack with mutated valid files: only the pack's own errors, no hang, no crash.

The long, seeded run of the engine in ``tests/hostile_files.py`` (targets, seed files, mutations, classification of
each input are documented there); ``tests/test_fuzz_smoke.py`` runs a short Hypothesis-driven pass of the same
engine in CI. Mutation lists here come from a seeded ``random.Random``, so the target name, ``--seed`` and input
number fix every file.

Usage: ``nice -n 10 python benchmarks/fuzz_loaders.py --inputs 10000`` (prints a table; exit 1 on crash or hang).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # an entry script: pti/ and tests/ are importable from the repository root

from tests.hostile_files import (  # noqa: E402
    TABLE_HEADER,
    Report,
    Target,
    build_targets,
    mutate,
    random_operations,
    run_one,
)


def fuzz_target(
    target: Target,
    inputs: int,
    workdir: Path,
    out: Path | None = None,
    seed: int = 0,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Run ``inputs`` seeded mutations of ``target``'s seeds; never stops at a crash (inputs are saved to ``out``).

    ``progress(report)`` is called after every 1,000 inputs."""
    rng = random.Random(f"{seed}:{target.name}")
    report = Report(target.name)
    path = workdir / f"input{target.suffix}"
    for number in range(1, inputs + 1):
        data = mutate(target.seeds[rng.randrange(len(target.seeds))], random_operations(rng), target.seeds)
        run_one(target, data, path, report, out)
        if progress is not None and number % 1000 == 0:
            progress(report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=10_000, help="mutated inputs per target")
    parser.add_argument("--targets", nargs="*", help="only these targets")
    parser.add_argument("--out", type=Path, default=Path("fuzz-crashes"), help="where crashing inputs are saved")
    parser.add_argument("--json", type=Path, help="also write the reports as JSON here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations")
    args = parser.parse_args(argv)

    import logging

    logging.disable(logging.WARNING)  # loaders log refusals; the table is the output
    targets = build_targets(args.targets)
    reports = []
    print(TABLE_HEADER, flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for target in targets:
            report = fuzz_target(
                target, args.inputs, Path(folder), args.out, args.seed, lambda r: print(r.row(), file=sys.stderr)
            )
            reports.append(report)
            print(report.row(), flush=True)
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = sum(r.inputs for r in reports)
    elapsed = time.perf_counter() - started
    print(f"\n{total} inputs in {elapsed:.0f} s; peak RSS of the fuzzing process {peak_mb:.0f} MB")
    for report in reports:
        for crash in report.crashes[:20]:
            print(f"CRASH {report.target}: {crash}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {**{k: v for k, v in vars(r).items() if k != "messages"}, "messages": sorted(r.messages)}
                    for r in reports
                ],
                indent=1,
            )
        )
    return 1 if any(r.crashes or r.hangs for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
