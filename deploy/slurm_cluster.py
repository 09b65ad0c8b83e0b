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
import tempfile
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


def check_job_script(cluster: Any) -> None:
    """``sbatch --test-only`` the worker job script, so that a job SLURM refuses fails the run at once.

    dask-jobqueue submits in the background and only logs a refused ``sbatch`` (a
    wrong partition or account, more memory than a node has), so without this
    check the run would wait for workers that can never come.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="genreflow-worker-") as script:
        script.write(cluster.job_script())
        script.flush()
        checked = subprocess.run(["sbatch", "--test-only", script.name], capture_output=True, text=True)
    if checked.returncode:
        raise SystemExit(f"SLURM refuses the worker job:\n{checked.stderr.strip()}\n\nthe job script:\n"
                         f"{cluster.job_script()}")


def queued_jobs() -> set[str] | None:
    """The ids of this user's jobs in the SLURM queue (pending or running); None when squeue fails."""
    listed = subprocess.run(["squeue", "--noheader", "--format=%i", f"--user={os.getuid()}"],
                            capture_output=True, text=True)
    return set(listed.stdout.split()) if listed.returncode == 0 else None


def wait_for_first_worker(cluster: Any, client: Any, log_directory: str, timeout: float, poll: float = 15) -> None:
    """Wait until a worker joins; stop early when every worker job has left the queue without one.

    Jobs may queue for hours, so the wait is long; but a job that dies at start
    (no such Python on the compute nodes, the scheduler unreachable) leaves the
    queue, and waiting on would only hide it: point at the job logs instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.wait_for_workers(1, timeout=poll)
            return
        except TimeoutError:
            pass
        jobs = {job.job_id for job in cluster.workers.values() if getattr(job, "job_id", None)}
        queued = queued_jobs()
        if jobs and queued is not None and not jobs & queued:
            raise SystemExit(f"the worker jobs {', '.join(sorted(jobs))} ended before any worker joined the "
                             f"scheduler: see their logs in {os.path.abspath(log_directory)}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no worker joined the scheduler within {timeout:.0f} s")


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
        check_job_script(cluster)
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
            # jobs may queue; the rest join while it runs
            wait_for_first_worker(cluster, client, args.log_directory, timeout=3600)
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
