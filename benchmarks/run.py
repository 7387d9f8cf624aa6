"""Run every ``benchmarks/bench_*.py`` in turn; their Markdown goes to results/latest.md and stdout.

python benchmarks/run.py              # all benchmarks
python benchmarks/run.py batchnorm    # only those whose file name contains "batchnorm"
"""

from __future__ import annotations

import glob
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv: list[str]) -> int:
    scripts = sorted(glob.glob(os.path.join(HERE, "bench_*.py")))
    scripts = [s for s in scripts if not argv or any(a in os.path.basename(s) for a in argv)]
    cpus = os.cpu_count()
    parts = [
        "# bnlab benchmarks",
        f"{time.strftime('%Y-%m-%d %H:%M')}, Python {platform.python_version()}, {cpus} CPUs. "
        "Timings on a shared machine are noisy.",
    ]
    failed = 0
    for script in scripts:
        name = os.path.basename(script)
        print(f"running {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, script], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            failed += 1
            parts.append(
                f"## {name}\n\nFAILED (exit {proc.returncode}):\n\n```\n{proc.stderr[-2000:]}\n```"
            )
        else:
            parts.append(proc.stdout.strip())
    text = "\n\n".join(parts) + "\n"
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "latest.md"), "w") as f:
        f.write(text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
