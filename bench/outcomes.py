"""What a version's reported outcomes cost as they pile up: keeping them (`POST .../outcomes`,
1,000 a request) and reading the figures (`GET .../outcomes`: the rows, then accuracy, AUC,
sensitivity and specificity with their intervals; read again with nothing reported since,
the one query that says so), and the same rows week by week (`GET .../outcomes/trend`, the
reports spread over 26 weeks; its read is the same) and client by client (`GET
.../outcomes/clients`, five clients), at growing counts, in the job store's database
(PostgreSQL with --database-url, else a temporary SQLite file).

Not a test. The store and the figures are called in-process, without HTTP: what a request
adds is the API's usual overhead (`bench/overhead.py`). Peak memory is tracemalloc's, of the
read and the figures.

    python bench/outcomes.py --counts 1000,10000,100000 --database-url postgresql+psycopg://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.card import DecisionThreshold, ModelCard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHUNK = 1000


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="scantune-outcomes-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'jobs.db'}"
        run(url, [int(c) for c in args.counts.split(",")])
    return 0


def run(url: str, counts: list[int]) -> None:
    import numpy as np

    from models.card import DecisionThreshold
    from models.outcomes import period_figures, reported_figures, trend_periods
    from service.jobs.database import make_engine, migrate
    from service.jobs.outcomes import Outcome, OutcomeFigures, OutcomeStore

    engine = make_engine(url)
    migrate(engine)
    store = OutcomeStore(engine)
    model = f"bench-{time.time_ns()}"  # a model of its own: a shared database keeps rows
    rng = np.random.default_rng(0)
    cut = bench_card(DecisionThreshold(positive_class="pneumonia", value=0.5))
    kept = 0
    print(f"database {engine.dialect.name}; figures at threshold 0.5, 1,000 resamples")
    for count in counts:
        started, chunks = time.perf_counter(), 0
        while kept < count:
            sick = rng.random(CHUNK) < 0.3
            p = np.clip(rng.normal(0.4 + 0.3 * sick, 0.2), 0, 1)
            store.report(model, 1, f"site-{chunks % 5}", [
                Outcome(f"{kept + i:032x}", "pneumonia" if s else "normal",
                        {"normal": 1 - float(x), "pneumonia": float(x)})
                for i, (s, x) in enumerate(zip(sick, p, strict=True))
            ])  # fmt: skip
            kept, chunks = kept + CHUNK, chunks + 1
        per_request = (time.perf_counter() - started) / max(1, chunks)
        tracemalloc.start()
        started = time.perf_counter()
        found = store.reported(model, 1, None)
        read = time.perf_counter() - started
        figures = reported_figures(cut, found.labels, found.probabilities)
        total = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        book = OutcomeFigures(store)
        book.of(model, 1, cut, None)  # the first read of a window works its figures out
        started = time.perf_counter()
        book.of(model, 1, cut, None)  # the next, nothing reported since: the brief only
        again = time.perf_counter() - started
        started = time.perf_counter()
        timed = store.reported(model, 1, None, times=True)
        read_timed = time.perf_counter() - started
        now, n = datetime.now(UTC), len(timed.times)
        spread = [now - timedelta(weeks=26 * i / n) for i in range(n)]
        started = time.perf_counter()
        periods = trend_periods(cut, timed.labels, timed.probabilities, spread, "week")
        trend = time.perf_counter() - started
        started = time.perf_counter()
        sites = {
            client: period_figures(cut, labels, answers)
            for client, (labels, answers) in store.reported(model, 1, None, reporters=True)
            .by_client()
            .items()
        }
        by_client = time.perf_counter() - started
        auc = figures["auc"]
        print(
            f"  {count:>7,} outcomes: keep {per_request * 1000:.0f} ms per 1,000; read"
            f" {read * 1000:.0f} ms, with figures {total * 1000:.0f} ms, peak"
            f" {peak / 2**20:.0f} MiB; unchanged since {again * 1000:.1f} ms;"
            f" trend: read with times {read_timed * 1000:.0f} ms, then {len(periods)} weeks'"
            f" figures {trend * 1000:.0f} ms; {len(sites)} clients apart {by_client * 1000:.0f} ms;"
            f" AUC {auc['value']:.3f} ({auc['low']:.3f}-{auc['high']:.3f})"
        )
    engine.dispose()


def bench_card(threshold: DecisionThreshold) -> ModelCard:
    """A binary card with the threshold (the figures read nothing else of it)."""
    from models.card import Calibration, DatasetInfo, InputSpec, ModelCard, Parity, TrainingInfo

    return ModelCard(
        name="bench", classes=("normal", "pneumonia"), threshold=threshold,
        input=InputSpec(size=32, channels=1, mean=(0.5,), std=(0.25,)),
        base_model="efficientnet_lite0",
        dataset=DatasetInfo(uri="/d.npz", format="npz", sha256="0" * 64),
        calibration=Calibration(temperature=1.0, applied_in_graph=True),
        parity=Parity(max_abs_diff=0.0, images=1, tolerance=1e-4),
        training=TrainingInfo(seconds=1, device="cpu", hardware="-", epochs_run=1, best_epoch=1,
                              seed=0),
        onnx_sha256="0" * 64,
    )  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000,10000,100000")
    parser.add_argument("--database-url", help="e.g. postgresql+psycopg://postgres@127.0.0.1/x")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
