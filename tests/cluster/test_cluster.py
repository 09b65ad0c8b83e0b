"""genreflow on a real cluster: separate Dask and Prefect server processes, PostgreSQL, the CLI.

One clean rebuild on the cluster is the reference: a LocalCluster run must
produce the same bytes, a run that loses a worker mid-stage must too, and so
must a deployed run that failed and was retried through Prefect.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType, TaskRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from genreflow.flows.config import Config
from genreflow.flows.plan import plan_shards
from tests.cluster.conftest import REPO, Cluster, executable, stop, wait_until
from tests.flows.conftest import small_config

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

SHARD_SIZE = 2  # 12 shards of the 24 demo tracks: enough tasks to kill a worker among
TERMINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
def write_config(path: Path, root: Path, demo: Path, **overrides: Any) -> tuple[Path, Config]:
    """small_config as a JSON file for ``--config``, with this module's shard size."""
    config = small_config(root, demo, own_cluster=True, shard_size=SHARD_SIZE, **overrides)
    path.write_text(json.dumps(config.model_dump(mode="json")))
    return path, config


def outputs(root: Path) -> dict[str, bytes]:
    """Every output file whose bytes a rerun must reproduce: tables, shards and their indexes, stats."""
    files = [root / name for name in ("tracks.parquet", "quarantine.parquet", "stats.json")]
    for stage in ("decode", "mel", "augment"):
        files += sorted(p for p in (root / stage).glob("*") if p.suffix in (".npy", ".parquet"))
    return {str(p.relative_to(root)): p.read_bytes() for p in files if p.exists()}


def manifests(root: Path) -> dict[str, int]:
    """Shard manifests and their mtimes."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/*.manifest.json")}


def expected_task_runs(root: Path, config: Config) -> Counter:
    """Task runs one run of the preprocessing stages makes: one ingest, one per shard."""
    plans = plan_shards(pd.read_parquet(root / "tracks.parquet"), config)
    return Counter({"ingest": 1, "preprocess_shard": len(plans)})


def api(cluster: Cluster, call: Any) -> Any:
    """``call(client)`` against the cluster's Prefect server."""
    with temporary_settings(updates={PREFECT_API_URL: cluster.api_url}), get_client(sync_client=True) as prefect:
        return call(prefect)


def flow_runs_on(cluster: Cluster, flow_name: str, root: Path) -> list[FlowRun]:
    """Flow runs of ``flow_name`` whose configuration names the data root ``root``."""
    runs = api(cluster, lambda c: c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))))
    return [r for r in runs if r.parameters.get("config", {}).get("run", {}).get("data_root") == str(root)]


def task_runs_of(cluster: Cluster, run: FlowRun) -> list[TaskRun]:
    return api(cluster, lambda c: c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))))


def task_kind(task_run: TaskRun) -> str:
    """``ingest`` for a task run of ingest_task, and so on."""
    return task_run.task_key.split("-")[0].removesuffix("_task")


def read_flow_run(cluster: Cluster, run_id: str) -> FlowRun:
    return api(cluster, lambda c: c.read_flow_run(run_id))


def scheduler_rescheduled(cluster: Cluster) -> set[str]:
    """Keys of tasks the Dask scheduler took back from a lost worker, to run them elsewhere."""
    from distributed import Client

    def lost(dask_scheduler: Any) -> list[str]:
        return sorted({str(entry[0]) for entry in dask_scheduler.transition_log
                       if entry[1] == "processing" and "worker-cleanup" in str(entry[4])})

    with Client(cluster.scheduler_address, timeout=30) as dask_client:
        return set(dask_client.run_on_scheduler(lost))


def scheduler_ran(cluster: Cluster) -> Counter:
    """How many tasks of each genreflow stage the Dask scheduler has seen finish."""
    from distributed import Client

    def finished(dask_scheduler: Any) -> list[str]:
        return [str(entry[0]) for entry in dask_scheduler.transition_log if entry[2] == "memory"]

    with Client(cluster.scheduler_address, timeout=30) as dask_client:
        return Counter(key.split("-")[0].removesuffix("_task") for key in dask_client.run_on_scheduler(finished))


def run_id_from(output: str) -> str:
    found = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert found, f"no flow run id in:\n{output}"
    return found.group(1)


def wait_for_state(cluster: Cluster, run_id: str, timeout: float, after: FlowRun | None = None) -> FlowRun:
    """The flow run once it is in a terminal state (another one than ``after``'s, for a retry)."""
    previous = after.state.id if after is not None and after.state is not None else None

    def done() -> FlowRun | None:
        run = read_flow_run(cluster, run_id)
        return run if run.state and run.state.type in TERMINAL and run.state.id != previous else None

    return wait_until(done, timeout, f"flow run {run_id} to finish", interval=1)


@pytest.fixture(scope="module")
def clean_run(cluster: Cluster, cluster_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config]:
    """The reference: ``genreflow rebuild --dask-address`` on the two worker processes, one epoch."""
    work = tmp_path_factory.mktemp("clean")
    path, config = write_config(work / "config.json", work / "root", cluster_demo, epochs=1)
    result = cluster.genreflow("rebuild", "--config", str(path), "--dask-address", cluster.scheduler_address)
    assert result.returncode == 0, result.stderr[-4000:]
    return work / "root", config


def test_rebuild_on_the_cluster_completes_in_prefect_and_matches_a_local_cluster(
        cluster: Cluster, clean_run: tuple[Path, Config], cluster_demo: Path, tmp_path: Path) -> None:
    root, config = clean_run
    (run,) = flow_runs_on(cluster, "rebuild", root)
    assert run.state is not None and run.state.type == StateType.COMPLETED, run.state
    task_runs = task_runs_of(cluster, run)
    assert {t.state.type for t in task_runs if t.state} == {StateType.COMPLETED}
    kinds = Counter(task_kind(t) for t in task_runs)
    expected = expected_task_runs(root, config) + Counter({"stats": 1, "baseline": 1, "train": 1, "evaluate": 1,
                                                                "promote": 1, "report": 1})
    assert kinds == expected, "every stage ran each shard once"
    ran = scheduler_ran(cluster)
    assert all(ran[stage] >= expected[stage] for stage in ("preprocess_shard", "train")), \
        f"the shard tasks ran on the external scheduler's workers: {ran}"
    assert list((root / "reports").glob("run-*/report.md"))

    path, _ = write_config(tmp_path / "config.json", tmp_path / "root", cluster_demo)
    local = cluster.genreflow("rebuild", "--config", str(path), "--to-stage", "stats", "--workers", "2")
    assert local.returncode == 0, local.stderr[-4000:]
    expected_files = outputs(root)
    plans = plan_shards(pd.read_parquet(root / "tracks.parquet"), config)
    arrays = 2 * len(plans) + sum(p.augment is not None for p in plans)  # decode, mel and augment
    assert sum(name.endswith(".npy") for name in expected_files) == arrays
    assert outputs(tmp_path / "root") == expected_files


def test_a_worker_killed_mid_stage_loses_and_duplicates_nothing(
        cluster: Cluster, clean_run: tuple[Path, Config], cluster_demo: Path, tmp_path: Path) -> None:
    reference, config = clean_run
    root = tmp_path / "root"
    path, _ = write_config(tmp_path / "config.json", root, cluster_demo)
    before = scheduler_rescheduled(cluster)
    command = [executable("genreflow"), "preprocess", "--config", str(path), "--dask-address",
               cluster.scheduler_address]
    log = tmp_path / "preprocess.log"
    with open(log, "wb") as output:
        run = subprocess.Popen(command, env=cluster.env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_until(lambda: manifests(root), 180, "the first finished shard", interval=0.02, process=run, log=log)
        cluster.kill_worker("worker-a")
        killed_at = manifests(root)
        assert run.poll() is None and len(killed_at) < len(manifests(reference)), "the kill must land mid-stage"
        try:
            run.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run did not finish after the kill:\n{log.read_text()[-3000:]}\n"
                        f"{cluster.dump_hung_workers()}")
    finally:
        stop(run)
        cluster.start_worker("worker-c")  # later tests want two workers again
    assert run.returncode == 0, log.read_text()[-4000:]

    rescheduled = scheduler_rescheduled(cluster) - before
    assert rescheduled, "the killed worker held tasks that the scheduler gave to the other one"
    assert set(manifests(root)) == set(manifests(reference)), "every shard manifest, once"
    assert outputs(root) == {k: v for k, v in outputs(reference).items() if k != "stats.json"}
    assert not list(root.rglob("*.tmp-*"))

    (flow_run,) = flow_runs_on(cluster, "preprocess", root)
    assert flow_run.state is not None and flow_run.state.type == StateType.COMPLETED
    task_runs = task_runs_of(cluster, flow_run)
    assert {t.state.type for t in task_runs if t.state} == {StateType.COMPLETED}
    assert Counter(task_kind(t) for t in task_runs) == expected_task_runs(root, config), "no task run twice"
    cluster.wait_for_workers(2)


def test_a_failed_deployment_run_is_retried_through_prefect(
        cluster: Cluster, clean_run: tuple[Path, Config], cluster_demo: Path, tmp_path: Path) -> None:
    reference, _ = clean_run
    for command in (["work-pool", "create", "genreflow", "--type", "process", "--overwrite"],
                    ["--no-prompt", "deploy", "--all", "--prefect-file", "deploy/prefect.yaml"]):
        done = cluster.command([executable("prefect"), *command], timeout=120)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    deployments = {d.name: d for d in api(cluster, lambda c: c.read_deployments())}
    assert {d.entrypoint for d in deployments.values()} >= {
        "flows/serve.py:scheduled_rebuild", "flows/serve.py:scheduled_preprocess", "flows/serve.py:scheduled_train"}
    for name in ("nightly", "preprocess", "train-evaluate"):
        limit = deployments[name].global_concurrency_limit
        assert limit is not None and limit.limit == 1, f"{name}: one run at a time"
    (nightly,) = deployments["nightly"].schedules
    assert nightly.schedule.cron == "0 2 * * *"
    api(cluster, lambda c: c.update_deployment_schedule(deployments["nightly"].id, nightly.id, active=False))

    worker, worker_log = cluster.processes.start(
        "prefect-worker", [executable("prefect"), "worker", "start", "--pool", "genreflow"],
        PREFECT_API_URL=cluster.api_url, GENREFLOW_HOME=str(REPO), PREFECT_WORKER_QUERY_SECONDS="1")
    try:
        root = tmp_path / "root"
        root.mkdir()
        (root / "mel").write_text("a file where the mel folder belongs: every mel shard fails")
        _, config = write_config(tmp_path / "config.json", root, cluster_demo,
                                 dask_address=cluster.scheduler_address)
        started = cluster.command([executable("prefect"), "deployment", "run", "scheduled-preprocess/preprocess",
                                   "--params", json.dumps({"config": config.model_dump(mode="json")})])
        assert started.returncode == 0, started.stdout + started.stderr
        run_id = run_id_from(started.stdout)

        failed = wait_for_state(cluster, run_id, 240)
        assert failed.state is not None and failed.state.type == StateType.FAILED, failed.state
        kept = manifests(root)
        assert kept and all(name.startswith(("decode/", "augment/")) for name in kept), \
            "the failed run kept every shard that succeeded"

        (root / "mel").unlink()
        retried = cluster.command([executable("prefect"), "flow-run", "retry", run_id])
        assert retried.returncode == 0, retried.stdout + retried.stderr
        finished = wait_for_state(cluster, run_id, 240, after=failed)
        assert finished.state is not None and finished.state.type == StateType.COMPLETED, \
            f"{finished.state}\n{worker_log.read_text()[-4000:]}"
        assert finished.run_count == 2
    finally:
        stop(worker)
    after = manifests(root)
    assert {name: after[name] for name in kept} == kept, "the retry redid only the failed shards"
    assert set(after) == set(manifests(reference))
    assert outputs(root) == {k: v for k, v in outputs(reference).items() if k != "stats.json"}


def test_genreflow_serve_schedules_and_runs_its_flow(
        cluster: Cluster, clean_run: tuple[Path, Config], tmp_path: Path) -> None:
    reference, config = clean_run
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    serve, serve_log = cluster.processes.start(
        "genreflow-serve", [executable("genreflow"), "serve", "--flow", "preprocess", "--cron", "0 3 * * *",
                            "--name", "cluster-test", "--config", str(path), "--dask-address",
                            cluster.scheduler_address],
        PREFECT_API_URL=cluster.api_url, PREFECT_RUNNER_POLL_FREQUENCY="1")
    try:
        def served() -> Any:
            found = [d for d in api(cluster, lambda c: c.read_deployments()) if d.name == "cluster-test"]
            return found[0] if found else None

        deployment = wait_until(served, 90, "the served deployment", interval=1, process=serve, log=serve_log)
        assert deployment.entrypoint.endswith("flows/serve.py:scheduled_preprocess")
        assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
        assert deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 1
        assert deployment.parameters["config"]["run"]["data_root"] == str(reference)

        before = manifests(reference)
        started = cluster.command([executable("prefect"), "deployment", "run", "scheduled-preprocess/cluster-test"])
        assert started.returncode == 0, started.stdout + started.stderr
        finished = wait_for_state(cluster, run_id_from(started.stdout), 180)
        assert finished.state is not None and finished.state.type == StateType.COMPLETED, serve_log.read_text()[-4000:]
        assert manifests(reference) == before, "a served rerun of finished work recomputes nothing"
    finally:
        stop(serve, signal.SIGINT)
