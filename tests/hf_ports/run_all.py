"""``python tests/hf_ports/run_all.py [NAME...]``: run HF's ported examples, print a table.

Every case of ``ported.CASES`` on 1 and 2 processes (or those whose name contains a NAME),
in temporary directories; prints one line per run and the totals (the figures of issue 14).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ported import matrix, run_case

if __name__ == "__main__":
    wanted = sys.argv[1:]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="hf-ports-") as tmp:
        for index, (case, processes) in enumerate(matrix()):
            if wanted and not any(w in case.name for w in wanted):
                continue
            outcome = run_case(case, processes, Path(tmp) / str(index))
            outcomes.append(outcome)
            status = "ok  " if outcome.ok else "FAIL"
            print(f"{status} {processes}p {outcome.seconds:6.1f}s  {case.name}  {outcome.detail}",
                  flush=True)  # fmt: skip
    for n in (1, 2):
        runs = [o for o in outcomes if o.processes == n]
        print(f"{n} process(es): {sum(o.ok for o in runs)} of {len(runs)} run")
