"""A stand-in trainer for the Slurm tests, quicker than the demo: `RUNS` runs one after another in one program
(as `distill --demo` runs teacher, baseline and student), each marking a phase every 0.2 s for `SECONDS` seconds
through the real client, then stopping with an accuracy. Prints "marked <run id> <phases>" as each run ends, however it ends."""

from __future__ import annotations

import sys
import time

from trainer.client import TelemetryClient

STEP_S = 0.2


def main(runs: int, seconds: float) -> None:
    for n in range(runs):
        tc, marked = TelemetryClient(name=f"stand-in-{n}", register_timeout=30), 0
        try:
            with tc:
                end = time.time() + seconds
                while time.time() < end:
                    marked += 1  # a phase cut short by SIGTERM is recorded too
                    with tc.phase("train_step", step=marked):
                        time.sleep(STEP_S)
                tc.stop(metrics={"accuracy": 0.5})
        finally:
            print("marked", tc.run_id, marked, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
