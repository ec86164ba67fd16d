"""The time of one comparison run as a dashboard job, without the dashboard: the job queue in a plain process.

The reference for the served dashboard's figure (docs/benchmarks.md, "The dashboard's own garbage collection"): the
same job, watched in a browser, should take about this long plus the page's own work.

    python benchmarks/bench_job_queue.py [--dataset FOLDER]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="a folder of class folders (default: the tests' 3 classes)")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="tlcore-jobq-")
    os.environ.update(TLCORE_HOME=home, TLCORE_OFFLINE="1")
    from tlcore import DatasetSpec
    from tlcore.experiments.config import build_config
    from tlcore.server.jobs import JobQueue

    folder = args.dataset
    if folder is None:
        from conftest import make_image_folder

        folder = str(make_image_folder(Path(home) / "data"))
    config = build_config("default", dataset=DatasetSpec(folder), backbone="test_efficientnet", weights="none")
    queue = JobQueue()
    started = time.perf_counter()
    job = queue.wait(queue.submit(config, label="bench"), 600)
    print(f"job {job['status'] if isinstance(job, dict) else job}: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
