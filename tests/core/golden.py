"""Golden runs: the outcome of a fixed set of seeded simulations is pinned.

``golden.json`` holds, per seed, network size and scheme, the length and running hash
of the longest finalized log, the simulated second at which the run ended and the
equivocations seen. A refactoring that changes none of the protocol's behaviour leaves
every one of them as it is; a change that is meant to alter behaviour updates the file
in the same commit and says why. ``tests/core/test_simulation.py`` checks them against
the runs it makes anyway (and runs any pinned seed it did not).

Regenerate (only for such a change)::

    .venv/bin/python -m tests.core.golden > tests/core/golden.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from qudag_node.core.crypto import Scheme
from tests.core.sim import RunResult, run_seed

GOLDEN = Path(__file__).with_name("golden.json")
#: Seeds pinned per network (size, scheme): among those the simulation test runs in
#: ``make test`` and ``make test-fast`` alike (n = 7 runs every other seed, the
#: composite network every twentieth).
SEEDS: dict[tuple[int, Scheme], range] = {
    (4, Scheme.ED25519): range(80),
    (7, Scheme.ED25519): range(0, 80, 2),
    (4, Scheme.MLDSA65_ED25519): range(0, 100, 20),
}


def outcome(r: RunResult) -> dict[str, Any]:
    """What is pinned of one run."""
    return {
        "seed": r.seed,
        "validators": r.validators,
        "scheme": r.scheme.label,
        "log_length": r.log_length,
        "log_hash": r.log_hash.hex(),
        "end_time": round(r.end_time, 9),
        "equivocations": r.equivocations,
    }


def pinned(validators: int, scheme: Scheme) -> list[dict[str, Any]]:
    """The pinned outcomes of one network, in seed order."""
    records: list[dict[str, Any]] = json.loads(GOLDEN.read_text())
    return [r for r in records if r["validators"] == validators and r["scheme"] == scheme.label]


def changed(validators: int, scheme: Scheme, runs: dict[int, RunResult]) -> list[str]:
    """Each pinned run of the network that ends otherwise now, said in a line; ``runs``
    are runs made already, by seed (a pinned seed not among them is run here)."""
    return [
        f"seed {r['seed']}: pinned {r}, now {now}"
        for r in pinned(validators, scheme)
        if (
            now := outcome(
                runs[r["seed"]] if r["seed"] in runs else run_seed(r["seed"], validators, scheme)
            )
        )
        != r
    ]


if __name__ == "__main__":
    records = [
        outcome(run_seed(seed, n, scheme)) for (n, scheme), seeds in SEEDS.items() for seed in seeds
    ]
    json.dump(records, sys.stdout, indent=1)
    sys.stdout.write("\n")
