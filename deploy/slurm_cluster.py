"""genreflow on a SLURM cluster: dask-jobqueue submits the Dask workers as batch jobs.

Run this on a login (or any submit) node, in the environment where genreflow is
installed; the compute nodes must see the same environment and the data root at
the same path (a shared filesystem such as /shared or $SCRATCH)::

    pip install dask-jobqueue
    export PREFECT_API_URL=http://prefect-host:4200/api      # a `prefect server start` (optional)
    python deploy/slurm_cluster.py --queue cpu --account myproj --jobs 4 -- \\
        rebuild --source fma --input /shared/fma --data-root /shared/genreflow-data

It starts the scheduler here, submits ``--jobs`` worker jobs, waits for the first
worker and runs ``genreflow <args> --dask-address <scheduler>``; the workers are
cancelled when it ends. With ``--print-address`` it only prints the scheduler
address and keeps the cluster up until Ctrl-C, for other runs to use.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", help="SLURM partition (#SBATCH -p)")
    parser.add_argument("--account", help="SLURM account (#SBATCH -A)")
    parser.add_argument("--jobs", type=int, default=2, help="worker jobs to submit (default: 2)")
    parser.add_argument("--cores", type=int, default=8, help="cores per job, one worker process each (default: 8)")
    parser.add_argument("--memory", default="32GB", help="memory per job (default: 32GB)")
    parser.add_argument("--walltime", default="04:00:00", help="walltime per job (default: 04:00:00)")
    parser.add_argument("--gpus", type=int, default=0,
                        help="GPUs per job; the workers then declare the Dask resource GPU, which training asks for")
    parser.add_argument("--interface", help="network interface of the compute nodes, e.g. ib0")
    parser.add_argument("--log-directory", default="dask-slurm-logs", help="where the worker jobs write their logs")
    parser.add_argument("--print-address", action="store_true",
                        help="print the scheduler address and keep the cluster up until Ctrl-C")
    parser.add_argument("genreflow_args", nargs=argparse.REMAINDER,
                        help="after --: the genreflow command to run, e.g. -- rebuild --data-root /shared/gf")
    return parser


def make_cluster(args: argparse.Namespace) -> Any:
    """A SLURMCluster whose jobs each run ``--cores`` single-threaded worker processes.

    One thread per process: decoding and STFTs hold the GIL often enough that
    processes, not threads, give the parallelism. The jobs activate this Python's
    environment and inherit PREFECT_API_URL, so task runs report to the same server.
    """
    import dask
    from dask_jobqueue import SLURMCluster

    from genreflow.flows.runner import DASK_SETTINGS, WORKER_ENVIRON, dask_environ

    prologue = [f"export PATH={os.path.dirname(sys.executable)}:$PATH"]
    environ = {**WORKER_ENVIRON, **dask_environ()}  # see flows/runner.py
    prologue += [f"export {name}={value}" for name, value in environ.items()]
    if os.environ.get("PREFECT_API_URL"):
        prologue.append(f"export PREFECT_API_URL={os.environ['PREFECT_API_URL']}")
    directives, worker_args = [], []
    if args.gpus:
        directives.append(f"--gres=gpu:{args.gpus}")
        worker_args += ["--resources", f"GPU={args.gpus}"]
    with dask.config.set(DASK_SETTINGS):  # the scheduler runs here; the jobs read them from the prologue
        return SLURMCluster(
            queue=args.queue, account=args.account, cores=args.cores, processes=args.cores, memory=args.memory,
            walltime=args.walltime, interface=args.interface, log_directory=args.log_directory,
            job_script_prologue=prologue, job_extra_directives=directives, worker_extra_args=worker_args,
            python=sys.executable,
        )


def genreflow_command(genreflow_args: Sequence[str], address: str) -> list[str]:
    """``genreflow <args> --dask-address <address>``, the scheduler address appended."""
    args = list(genreflow_args)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise SystemExit("give the genreflow command after --, e.g. -- rebuild --data-root /shared/genreflow-data")
    executable = shutil.which("genreflow") or os.path.join(os.path.dirname(sys.executable), "genreflow")
    return [executable, *args, "--dask-address", address]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with make_cluster(args) as cluster:
        cluster.scale(jobs=args.jobs)
        print(f"Dask scheduler: {cluster.scheduler_address} (dashboard {cluster.dashboard_link})", flush=True)
        if args.print_address:
            print(f"use it with: genreflow rebuild --dask-address {cluster.scheduler_address}", flush=True)
            try:
                while True:
                    time.sleep(60)
            except KeyboardInterrupt:
                return 0
        command = genreflow_command(args.genreflow_args, cluster.scheduler_address)
        from distributed import Client

        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=3600)  # jobs may queue; the rest join while it runs
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
