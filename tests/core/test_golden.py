"""Golden runs: the outcome of a fixed set of seeded simulations is pinned.

``golden.json`` holds, per seed and network size, the length and running hash of the
longest finalized log and the simulated second at which the run ended, as the
simulation produced them before the pump was shared between the node and the
simulator. A refactoring that changes none of the protocol's behaviour leaves every
one of them as it is; a change that is meant to alter behaviour updates the file in
the same commit and says why.

Regenerate (only for such a change)::

    .venv/bin/python -m tests.core.test_golden > tests/core/golden.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.core.sim import run_seed

GOLDEN = Path(__file__).with_name("golden.json")
#: Seeds pinned per network size.
SEEDS = {4: range(80), 7: range(40)}


def outcome(seed: int, validators: int) -> dict[str, Any]:
    """What is pinned of one run."""
    r = run_seed(seed, validators)
    return {
        "seed": seed,
        "validators": validators,
        "log_length": r.log_length,
        "log_hash": r.log_hash.hex(),
        "end_time": round(r.end_time, 9),
        "equivocations": r.equivocations,
    }


def _pinned() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(GOLDEN.read_text())
    return records


@pytest.mark.parametrize("validators", sorted(SEEDS), ids=lambda n: f"n={n}")
def test_seeded_runs_end_as_pinned(validators: int) -> None:
    pinned = [r for r in _pinned() if r["validators"] == validators]
    assert [r["seed"] for r in pinned] == list(SEEDS[validators])
    changed = [
        f"seed {r['seed']}: pinned {r}, now {now}"
        for r in pinned
        if (now := outcome(r["seed"], validators)) != r
    ]
    assert not changed, "\n".join(changed)


if __name__ == "__main__":
    records = [outcome(seed, n) for n, seeds in sorted(SEEDS.items()) for seed in seeds]
    json.dump(records, sys.stdout, indent=1)
    sys.stdout.write("\n")
