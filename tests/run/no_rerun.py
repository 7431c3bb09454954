#!/usr/bin/env python3
"""No task that one attempt of a run reported done was started again by a later attempt.

usage: no_rerun.py LOG [LOG ...]
The logs are resae's output of successive attempts, in order (one log may hold several attempts, as a
Slurm job's output does across requeues). Only tasks in flight at an interruption may run again; the
harvest always starts again and reuses its store. Exit status 0 when no finished task started again."""
import os
import re
import sys

finished, starts, bad = set(), 0, []
for p in sys.argv[1:]:
    text = open(p, errors="replace").read()
    # in log order: a start of a task that an earlier line reported done is a rerun
    for m in re.finditer(r"INFO  task (.+?): (start|done) on ", text):
        name, what = m.group(1), m.group(2)
        if what == "done":
            finished.add(name)
            continue
        starts += 1
        if name in finished and name != "harvest":
            bad.append(f"{name} (finished earlier, started again in {os.path.basename(p)})")
if bad:
    print("finished tasks started again:\n  " + "\n  ".join(bad))
    sys.exit(1)
print(f"{len(sys.argv) - 1} log(s), {starts} task starts, {len(finished)} tasks finished; no finished task started again")
