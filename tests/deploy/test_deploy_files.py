"""deploy/ agrees with the code: the files parse, entrypoints name real flows with the right
parameters, every command is a real genreflow/dask/prefect command with real flags, and every
environment variable set there is one that the code, Prefect or a library it uses reads."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from genreflow.flows.config import build_config
from genreflow.flows.runner import DASK_SETTINGS, WORKER_ENVIRON, dask_environ

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent

# Variables read by software outside this repository, and who reads them.
THIRD_PARTY_ENV = {
    "POSTGRES_USER": "the postgres image", "POSTGRES_PASSWORD": "the postgres image",
    "POSTGRES_DB": "the postgres image",
    "AWS_ACCESS_KEY_ID": "botocore (s3fs)", "AWS_SECRET_ACCESS_KEY": "botocore (s3fs)",
    "AWS_SESSION_TOKEN": "botocore (s3fs)", "AWS_DEFAULT_REGION": "botocore (s3fs)",
    "PYTHONUNBUFFERED": "python", "PIP_NO_CACHE_DIR": "pip", "PIP_DISABLE_PIP_VERSION_CHECK": "pip",
}


# ---- loading -----------------------------------------------------------------------------------
@functools.cache
def prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "prefect.yaml").read_text())


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@functools.cache
def k8s() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / "daskcluster.yaml").read_text()) if doc]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def dockerfile_env() -> dict[str, str]:
    names = {}
    for instruction, args in dockerfile_instructions():
        if instruction == "ENV":
            names.update(dict(item.split("=", 1) for item in shlex.split(args)))
    return names


def image_services() -> dict[str, dict[str, Any]]:
    """The compose services that run the genreflow image."""
    return {name: s for name, s in compose()["services"].items() if s.get("image", "").startswith("genreflow")}


def shell_commands(command: list[str] | str) -> list[list[str]]:
    """The commands of a compose ``command``: its argv, or each ``&&`` part of an ``sh -c`` script."""
    argv = shlex.split(command) if isinstance(command, str) else [str(part) for part in command]
    if argv[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in argv[2].split("&&")]
    return [argv]


# ---- real commands -----------------------------------------------------------------------------
@functools.cache
def help_text(*command: str) -> str:
    """``command --help``, wide enough that no flag is wrapped."""
    done = subprocess.run([str(BIN / command[0]), *command[1:], "--help"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "250", "NO_COLOR": "1"})
    assert done.returncode == 0, f"{' '.join(command)} is not a command: {done.stdout}{done.stderr}"
    return done.stdout


def assert_flags_documented(argv: list[str], help_output: str) -> None:
    for token in argv:
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_output), \
                f"{flag} is not an option of `{' '.join(argv[:3])}`"


def assert_real_command(argv: list[str]) -> None:
    """``argv`` is a genreflow, dask or prefect command that accepts every flag it is given."""
    program = argv[0]
    if program == "genreflow":
        from genreflow.flows.cli import build_parser

        try:
            build_parser().parse_args(argv[1:])
        except SystemExit as exc:  # --help exits 0; a bad flag or value exits 2
            assert exc.code == 0, f"genreflow rejects {argv}"
    elif program == "dask":
        assert argv[1] in ("scheduler", "worker"), argv
        assert_flags_documented(argv, help_text("dask", argv[1]))
    elif program == "prefect":
        words = [token for token in argv[1:] if token not in ("--no-prompt", "--prompt")]
        path = words[:1] if words[0] == "deploy" else words[:2]
        assert_flags_documented(words, help_text("prefect", *path))
    else:
        pytest.fail(f"{argv}: not a genreflow, dask or prefect command")


# ---- prefect.yaml ------------------------------------------------------------------------------
def test_prefect_yaml_is_a_valid_prefect_project() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(prefect_yaml())
    assert {d.name for d in model.deployments} == {"nightly", "preprocess", "train-evaluate"}


@pytest.mark.parametrize("deployment", prefect_yaml()["deployments"], ids=lambda d: d["name"])
def test_each_deployment_runs_a_real_flow_with_its_parameters(deployment: dict[str, Any]) -> None:
    from prefect import Flow

    path, name = deployment["entrypoint"].split(":")
    assert (REPO / path).is_file()
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, name)
    assert isinstance(flow, Flow)
    assert set(flow.parameters.properties) == set(deployment["parameters"]) == {"config"}
    flow.validate_parameters(deployment["parameters"])  # as Prefect checks a run's parameters
    config = build_config(deployment["parameters"]["config"])  # no unknown or invalid field
    assert config.run.data_root.startswith("/data/")
    limit = deployment["concurrency_limit"]
    assert limit["limit"] == 1 and limit["collision_strategy"] == "ENQUEUE", "one run at a time"
    assert deployment["work_pool"]["name"] == "genreflow"


def test_nightly_rebuild_has_a_valid_cron_schedule() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    (nightly,) = [d for d in prefect_yaml()["deployments"] if d["name"] == "nightly"]
    assert nightly["entrypoint"] == "flows/serve.py:scheduled_rebuild"
    (schedule,) = nightly["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])


def test_workers_find_the_code_where_the_image_puts_it() -> None:
    (step,) = prefect_yaml()["pull"]
    directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
    assert directory == "{{ $GENREFLOW_HOME }}"
    workdir = [args for instruction, args in dockerfile_instructions() if instruction == "WORKDIR"]
    assert dockerfile_env()["GENREFLOW_HOME"] == workdir[-1] == "/opt/genreflow"


# ---- docker-compose.yml ------------------------------------------------------------------------
def test_compose_has_the_services_of_a_cluster() -> None:
    services = compose()["services"]
    assert {"postgres", "prefect-server", "prefect-worker", "dask-scheduler", "dask-worker"} <= set(services)
    for name, service in image_services().items():
        assert "genreflow-data:/data" in service["volumes"], f"{name} shares the data root volume"
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert "genreflow-data" in compose()["volumes"]


def test_compose_prefect_server_uses_the_postgres_service() -> None:
    services = compose()["services"]
    url = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    found = re.fullmatch(r"postgresql\+asyncpg://(\w+):(\w+)@([\w-]+):5432/(\w+)", url)
    assert found, url
    user, password, host, database = found.groups()
    postgres = services["postgres"]["environment"]
    assert (host, user, password, database) == (
        "postgres", postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])
    for name in ("prefect-worker", "prefect-deploy", "dask-worker"):
        assert services[name]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"


def test_compose_addresses_agree_with_prefect_yaml() -> None:
    services = compose()["services"]
    scheduler = services["dask-scheduler"]["command"]
    port = scheduler[scheduler.index("--port") + 1]
    address = f"tcp://dask-scheduler:{port}"
    assert prefect_yaml()["definitions"]["config"]["run"]["dask_address"] == address
    assert services["dask-worker"]["command"][2] == address
    serve = services["genreflow-serve"]["command"]
    assert serve[serve.index("--dask-address") + 1] == address
    deploy_script = " ".join(services["prefect-deploy"]["command"])
    assert "work-pool create genreflow" in deploy_script and "--prefect-file deploy/prefect.yaml" in deploy_script


def test_compose_commands_are_real_commands() -> None:
    for name, service in image_services().items():
        for argv in shell_commands(service["command"]):
            assert_real_command(argv)
        probe = service.get("healthcheck", {}).get("test")
        if probe and probe[:2] == ["CMD", "python"]:
            compile(probe[3], f"{name} healthcheck", "exec")


# ---- Dockerfile --------------------------------------------------------------------------------
def test_dockerfile_installs_every_package_and_runs_genreflow() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "FROM"
    copied = {args.split()[0] for instruction, args in instructions if instruction == "COPY"}
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    # A package inside a copied folder (genreflow itself: flows/package) is copied with it.
    assert {folder.split("/")[0] for folder in package_dirs.values()} <= copied, "every package of pyproject is copied"
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "pip install --no-deps ." in runs and "s3fs" in runs
    cmd = [args for instruction, args in instructions if instruction == "CMD"][-1]
    assert_real_command(yaml.safe_load(cmd))
    ignored = {line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()}
    assert not copied & ignored, "the .dockerignore drops nothing the Dockerfile copies"


# ---- Kubernetes --------------------------------------------------------------------------------
def test_daskcluster_manifest_is_a_dask_operator_cluster() -> None:
    kinds = {doc["kind"]: doc for doc in k8s()}
    cluster, claim = kinds["DaskCluster"], kinds["PersistentVolumeClaim"]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    name = cluster["metadata"]["name"]
    assert kinds["DaskWorkerGroup"]["spec"]["cluster"] == name
    assert cluster["spec"]["scheduler"]["service"]["selector"] == {
        "dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    (scheduler,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    assert_real_command(scheduler["args"])
    named_ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    for port in cluster["spec"]["scheduler"]["service"]["ports"]:
        assert named_ports[port["targetPort"]] == port["port"]
    assert named_ports["tcp-comm"] == 8786
    for group in (cluster["spec"]["worker"], kinds["DaskWorkerGroup"]["spec"]["worker"]):
        (container,) = group["spec"]["containers"]
        assert container["args"][:2] == ["dask", "worker"]
        assert_real_command(container["args"])
        assert container["image"] == scheduler["image"], "one image for every Dask process"
        (volume,) = group["spec"]["volumes"]
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert container["volumeMounts"][0]["mountPath"] == "/data"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "every worker mounts the data root"


# ---- environment variables ---------------------------------------------------------------------
def environment_names() -> dict[str, str]:
    """Every environment variable deploy/ sets, and where."""
    names = {name: "Dockerfile" for name in dockerfile_env()}
    for service_name, service in compose()["services"].items():
        for name in service.get("environment") or {}:
            names[name] = f"docker-compose.yml:{service_name}"
    for doc in k8s():
        groups = [doc["spec"].get("worker"), doc["spec"].get("scheduler")]
        for group in filter(None, groups):
            for container in group["spec"]["containers"]:
                for item in container.get("env", []):
                    names[item["name"]] = f"daskcluster.yaml:{doc['metadata']['name']}"
    return names


def reader_of(name: str) -> str | None:
    """Who reads ``name``: a Prefect setting, genreflow's code, a library it uses, or None."""
    if name.startswith("PREFECT_"):
        from prefect.settings.legacy import _get_valid_setting_names
        from prefect.settings.models.root import Settings

        return "prefect" if name in _get_valid_setting_names(Settings) else None
    if name.startswith("DASK_"):
        import dask
        import distributed  # noqa: F401  (registers distributed's defaults)

        flat = _flatten(dask.config.collect_env({name: "x"}))
        return "dask" if flat and all(_known_dask_key(key) for key in flat) else None
    if name.startswith("FSSPEC_"):
        from fsspec.config import set_conf_env

        conf: dict[str, dict[str, Any]] = {}
        set_conf_env(conf, {name: "x"})
        return "fsspec" if conf else None
    if name == "GENREFLOW_HOME":
        return "deploy/prefect.yaml" if "{{ $GENREFLOW_HOME }}" in (DEPLOY / "prefect.yaml").read_text() else None
    if name == "MPLBACKEND":
        import matplotlib

        return "matplotlib" if name in inspect.getsource(matplotlib) else None
    if name in WORKER_ENVIRON:
        return "glibc malloc, in Dask workers (flows/runner.py WORKER_ENVIRON)"
    if name == "TF_CPP_MIN_LOG_LEVEL":
        return "tensorflow (set by genreflow)" if name in (REPO / "flows" / "cli.py").read_text() else None
    return THIRD_PARTY_ENV.get(name)


def test_every_environment_variable_is_one_something_reads() -> None:
    names = environment_names()
    assert {"PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL", "GENREFLOW_HOME"} <= set(names)
    unread = {name: where for name, where in names.items() if reader_of(name) is None}
    assert not unread, f"nothing reads these: {unread}"


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys += _flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


def _known_dask_key(key: str) -> bool:
    import dask

    sentinel = object()
    return dask.config.get(key, default=sentinel) is not sentinel


def test_the_image_gives_external_dask_workers_the_local_clusters_malloc_settings() -> None:
    env = dockerfile_env()
    assert {name: env.get(name) for name in WORKER_ENVIRON} == WORKER_ENVIRON


def test_the_image_gives_external_dask_processes_the_local_clusters_dask_settings() -> None:
    import dask

    env = dockerfile_env()
    assert {name: env.get(name) for name in dask_environ()} == dask_environ()
    with dask.config.set(dask.config.collect_env(dask_environ())):  # as Dask reads the image's environment
        assert {key: dask.config.get(key) for key in DASK_SETTINGS} == DASK_SETTINGS


def test_dask_settings_name_real_dask_keys() -> None:
    import distributed  # noqa: F401  (registers distributed's defaults)

    assert all(_known_dask_key(key) for key in DASK_SETTINGS)


# ---- SLURM -------------------------------------------------------------------------------------
def load_slurm_example() -> Any:
    path = DEPLOY / "slurm_cluster.py"
    compile(path.read_text(), str(path), "exec")
    spec = importlib.util.spec_from_file_location("slurm_cluster", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slurm_example_runs_genreflow_on_its_scheduler() -> None:
    from genreflow.flows.cli import build_parser

    slurm = load_slurm_example()
    args = slurm.build_parser().parse_args(["--jobs", "3", "--gpus", "1", "--", "rebuild", "--data-root", "/shared/g"])
    assert args.jobs == 3
    command = slurm.genreflow_command(args.genreflow_args, "tcp://10.0.0.1:8786")
    assert Path(command[0]).name == "genreflow"
    parsed = build_parser().parse_args(command[1:])
    assert (parsed.command, parsed.data_root, parsed.dask_address) == ("rebuild", "/shared/g", "tcp://10.0.0.1:8786")


def test_slurm_example_uses_real_slurmcluster_keywords() -> None:
    jobqueue = pytest.importorskip("dask_jobqueue")
    source = (DEPLOY / "slurm_cluster.py").read_text()
    used = set(re.findall(r"(\w+)=args\.", source)) | {"job_script_prologue", "job_extra_directives",
                                                       "worker_extra_args", "python"}
    accepted = set(inspect.signature(jobqueue.SLURMCluster).parameters) | set(
        inspect.signature(jobqueue.core.JobQueueCluster).parameters) | set(
        inspect.signature(jobqueue.core.Job).parameters) | set(
        inspect.signature(jobqueue.slurm.SLURMJob).parameters) | set(  # queue, account, walltime
        inspect.signature(jobqueue.SLURMCluster.scale).parameters)  # jobs
    assert used <= accepted, used - accepted


def test_deploy_readme_covers_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for name in ("prefect.yaml", "Dockerfile", "docker-compose.yml", "k8s/daskcluster.yaml", "slurm_cluster.py",
                 "AWS_ACCESS_KEY_ID", "prefect flow-run retry", "--dask-address"):
        assert name in readme, name


def _documented_commands(text: str, program: str) -> list[list[str]]:
    """Each ``program ...`` command in the fenced code blocks of ``text``, continuation lines joined."""
    commands, in_block, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        line = pending + line.split("  #")[0].strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line.startswith(program + " "):
            commands.append(shlex.split(line)[1:])
    return commands


@pytest.mark.parametrize("readme", [DEPLOY / "README.md", REPO / "README.md"], ids=["deploy", "top"])
def test_documented_genreflow_commands_parse(readme: Path) -> None:
    """Every genreflow command the READMEs show is one the CLI accepts, flags and values included."""
    from genreflow.flows.cli import build_parser

    commands = _documented_commands(readme.read_text(), "genreflow")
    assert commands, f"no genreflow command found in {readme}"
    for args in commands:
        try:
            build_parser().parse_args([arg.replace("<run>", "run-1") for arg in args])
        except SystemExit:
            pytest.fail(f"{readme.name}: `genreflow {' '.join(args)}` is not a valid command")


def test_documented_retry_entrypoints_are_entry_flows() -> None:
    """The `--entrypoint FILE:FLOW` the READMEs give for a retry names a real flow of that file."""
    from genreflow.flows import serve

    text = (DEPLOY / "README.md").read_text() + (REPO / "README.md").read_text()
    entrypoints = set(re.findall(r"--entrypoint (\S+?\.py):(\w+)", text))
    assert entrypoints
    for path, name in entrypoints:
        assert (REPO / path).resolve() == Path(serve.__file__).resolve(), path
        assert hasattr(getattr(serve, name), "fn"), f"{path}:{name} is not a flow"
