"""The prior doctor's wall time with its default settings (issue 23: at most 3 minutes on 2 cores).

Runs ``python -m lucid_app doctor --model MODEL --prompt PROMPT`` as a user would (its own process, default
timesteps, methods, seeds and references: the prior's own DDIM samples), and prints one JSON object (last line of
stdout): the wall and CPU seconds of the command (on a machine others load, the CPU seconds divided by the threads
bound the wall time the same run takes on idle cores), the load average before and after, the target, and the
doctor's own result (r per method and t, verdicts).

    python bench/doctor_time.py                                         # assets/demo_prior, "a red toy car"
    python bench/doctor_time.py --model runs/prior --prompt "a snowman" --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 180.0


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="assets/demo_prior")
    parser.add_argument("--prompt", default="a red toy car")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP/torch threads of the doctor")
    args = parser.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    command = [sys.executable, "-m", "lucid_app", "doctor", "--model", args.model, "--prompt", args.prompt]
    load_before, cpu_before, start = _load(), _children_cpu_s(), time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - start, _children_cpu_s() - cpu_before
    if done.returncode != 0:
        sys.exit(f"doctor failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps({"bench": "doctor_time", "model": args.model, "prompt": args.prompt, "threads": args.threads,
                      "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "target_s": TARGET_S,
                      "within_target": wall <= TARGET_S, "load_before": load_before, "load_after": _load(),
                      "restoring": result["restoring"], "verdict": result["verdict"]}))


if __name__ == "__main__":
    main()
