"""Start two training processes from inside Python with ``pta.notebook_launcher`` (Accelerate's).

This is what a notebook cell does: no Accelerator may exist in the launching process, the function
runs in forked children that each print a ``RANK r/N`` line (see check_ranks.py).

    python tests/launch_scripts/notebook_launch.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for tests.*

import pta
from tests.launch_scripts.check_ranks import train_and_report

if __name__ == "__main__":
    processes = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    pta.notebook_launcher(train_and_report, num_processes=processes)
    print("notebook_launcher returned", flush=True)
