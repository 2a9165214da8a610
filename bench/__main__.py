"""``python -m bench`` (the full suite) or ``python -m bench --smoke`` (CI, seconds).

The full suite takes ≈ 5½ minutes on a quiet 2-core machine once its models are cached in
bench/.cache/; the first run also builds them (ResNet-50 export + INT8, a resnet20 trained for
the INT8 agreement), which adds several minutes.

The full run writes BENCHMARKS.md at the repository root, bench/results/benchmarks.png and
bench/results/benchmarks.json; ``--out DIR`` writes all three into DIR instead (the smoke run
defaults to bench/.cache/smoke-report/ so it never overwrites the real numbers).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.config import BENCH_DIR, CACHE_DIR, FULL, REPO_ROOT, SMOKE
from bench.findings import findings
from bench.report import write_report
from bench.suite import run_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, few requests (CI)")
    parser.add_argument("--out", type=Path, default=None, help="write the report files here")
    args = parser.parse_args(argv)
    profile = SMOKE if args.smoke else FULL
    if args.out is not None:
        markdown = args.out / "BENCHMARKS.md"
        chart, data = args.out / "benchmarks.png", args.out / "benchmarks.json"
    elif args.smoke:
        out = CACHE_DIR / "smoke-report"
        markdown, chart, data = (
            out / "BENCHMARKS.md",
            out / "benchmarks.png",
            out / "benchmarks.json",
        )
    else:
        markdown = REPO_ROOT / "BENCHMARKS.md"
        chart = BENCH_DIR / "results" / "benchmarks.png"
        data = BENCH_DIR / "results" / "benchmarks.json"
    command = "python -m bench" + (" --smoke" if args.smoke else "")
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    report = run_suite(profile, command, log)
    write_report(report, markdown, chart, data, findings(report))
    log(f"wrote {markdown}, {chart} and {data}")
    for target in report["targets"]:
        verdict = "met" if target["met"] else "MISSED"
        value = "n/a" if target["value"] is None else f"{target['value']:.3f}"
        log(f"  {verdict:6} {target['name']}: {value} (limit {target['limit']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
