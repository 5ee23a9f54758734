"""A stand-in trainer for the Slurm tests, quicker than the demo: `RUNS` runs one after another in one program
(as `distill --demo` runs teacher, baseline and student), each marking a phase every 0.2 s for `SECONDS` seconds
through the real client, then stopping with an accuracy. Prints "trained <run id>" after each run."""

from __future__ import annotations

import sys
import time

from trainer.client import TelemetryClient

STEP_S = 0.2


def main(runs: int, seconds: float) -> None:
    for n in range(runs):
        with TelemetryClient(name=f"stand-in-{n}", register_timeout=30) as tc:
            end, step = time.time() + seconds, 0
            while time.time() < end:
                with tc.phase("train_step", step=step):
                    time.sleep(STEP_S)
                step += 1
            tc.stop(metrics={"accuracy": 0.5})
        print("trained", tc.run_id, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
