"""Every benchmark in one run: one table, each figure next to its same-run baseline and ratio.

    python benchmarks/run_all.py [--quick] [--out benchmarks/results/latest.json]
                                 [--compare benchmarks/results/previous.json]

Each script runs in its own process (one after the other, so they do not compete for the two
cores), records its rows through ``report.record``, and the runner prints them together and
writes them as JSON, so a regression check can compare two runs (``--compare`` prints the change
of each ratio).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS: list[tuple[str, list[str], list[str]]] = [
    ("bench_guard.py", [], ["--requests", "1000"]),
    ("bench_dpop.py", [], []),
    ("bench_proxy.py", [], ["--requests", "800"]),
    ("bench_audit.py", [], ["10000"]),
    ("bench_review.py", [], []),
    ("bench_review_worst.py", [], ["--mib", "0.25", "--rounds", "1"]),
    ("bench_rules.py", [], ["--requests", "500"]),
    ("bench_gateway.py", ["--dpop"], ["--quick"]),
    ("bench_audit_verify.py", [], ["--sizes", "100000"]),
    ("bench_tiles.py", [], ["--events", "16384"]),
    ("bench_witness_proofs.py", [], ["--events", "65536"]),
    ("bench_limits.py", [], ["--calls", "1000"]),
    ("bench_gates.py", [], ["--requests", "1000"]),
    ("bench_connect.py", [], ["--requests", "1000"]),
    ("bench_telemetry.py", [], ["--requests", "1000", "--rounds", "3"]),
    ("bench_streams.py", [], ["--rounds", "3"]),
    ("bench_stream_cut.py", [], ["--quick"]),
]


# Targets the issues set, as bounds on the ratio: (at least, at most).
TARGETS: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("dpop", "DPoPVerifier.verify (ES256, ath, jkt, jti)"): (None, 1.3),
    ("proxy", "ProxyApp throughput"): (0.70, None),
    ("audit", "MemoryStore.append, 1 per call"): (0.50, None),
    ("audit", "MemoryStore.append, batch of 32"): (0.50, None),
    ("audit", "verify_log (1 checkpoint)"): (0.70, None),
    ("review", "SecretLeakReviewer worst case"): (None, 5.0),
    ("review", "InjectionScreen worst case"): (None, 5.0),
    ("review", "InjectionScreen (JSON) worst case"): (None, 5.0),
    ("review", "trivial request during a 1 MiB adversarial review (budget)"): (None, 1.0),
    ("rules", "rule lookup, 1000 rules"): (None, 1.5),
    ("streams", "SSE time to last event"): (None, 1.2),
    ("rules", "guarded request, 1000 rules"): (None, 1.5),
    ("gateway", "serve SQLite, Bearer: req/s"): (0.5, None),
    ("gateway", "serve SQLite, Bearer: p99"): (None, 2.0),
    ("gateway", "serve SQLite, DPoP: req/s"): (0.5, None),
    # 300k events/s over the ~80k/s the whole-log verifier ran at on this machine's kind.
    ("audit", "verify SQLite 100,000 (CPU)"): (3.75, None),
    ("audit", "verify SQLite 1,000,000 (CPU)"): (3.75, None),
    # the same bound by wall time, with two worker processes (audit verify --jobs 2)
    ("audit", "verify SQLite 100,000, --jobs 2 (wall)"): (3.75, None),
    ("audit", "verify SQLite 1,000,000, --jobs 2 (wall)"): (3.75, None),
}


def verdict(suite: str, name: str, ratio: float) -> str:
    """``ok``/``MISS`` against the row's target, or empty when it has none."""
    low, high = TARGETS.get((suite, name), (None, None))
    if low is None and high is None:
        return ""
    met = (low is None or ratio >= low) and (high is None or ratio <= high)
    bound = f">={low:.2f}" if low is not None else f"<={high:.2f}"
    return f"{bound} {'ok' if met else 'MISS'}"


def run(quick: bool, output: Path) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as directory:
        collected = Path(directory) / "rows.jsonl"
        environment = {**os.environ, "AGENTGUARD_BENCH_JSON": str(collected)}
        for script, full, fast in SCRIPTS:
            arguments = fast if quick else full
            print(f"running {script} {' '.join(arguments)}".rstrip(), file=sys.stderr, flush=True)
            subprocess.run(  # noqa: S603 - our own scripts
                [sys.executable, str(HERE / script), *arguments],
                env=environment,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        rows = [json.loads(line) for line in collected.read_text().splitlines() if line]
    output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "python": sys.version.split()[0],
        "machine": os.uname().machine,
        "cores": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    output.write_text(json.dumps(document, indent=2) + "\n")
    return rows


def show(rows: list[dict[str, object]], previous: dict[tuple[str, str], float]) -> int:
    """Print the table; return how many targets were missed."""
    header = (
        f"{'suite':<7}{'figure':<54}{'value':>11} {'unit':<9}{'baseline':<42}{'ratio':>8}"
        f"  {'target':<10}"
    )
    print(header + (" change" if previous else ""))
    missed = 0
    for row in rows:
        ratio = float(row["ratio"])  # type: ignore[arg-type]
        judged = verdict(str(row["suite"]), str(row["name"]), ratio)
        missed += judged.endswith("MISS")
        line = (
            f"{row['suite']!s:<7}{row['name']!s:<54}{float(row['value']):>11,.1f} "  # type: ignore[arg-type]
            f"{row['unit']!s:<9}{row['baseline']!s:<42}{ratio:>7.2f}x  {judged:<10}"
        )
        before = previous.get((str(row["suite"]), str(row["name"])))
        if before is not None and not math.isnan(before) and before:
            line += f"  {(ratio - before) / before:+7.1%}"
        print(line)
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--compare", type=Path, help="an earlier results file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    arguments = parser.parse_args()
    previous: dict[tuple[str, str], float] = {}
    if arguments.compare is not None:
        earlier = json.loads(arguments.compare.read_text())
        previous = {(r["suite"], r["name"]): float(r["ratio"]) for r in earlier["rows"]}
    rows = run(arguments.quick, arguments.out)
    missed = show(rows, previous)
    print(f"\nresults: {arguments.out}; targets missed: {missed}", file=sys.stderr)
    if arguments.check and missed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
