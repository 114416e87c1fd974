"""deploy/helm-values.yaml against Dagster's own config schema: the instance that Dagster's Helm chart renders
from these values (the K8sRunLauncher, the queued run coordinator, PostgreSQL storage, the daemon settings) is
accepted and loaded by dagster and dagster-k8s, and it agrees with deploy/dagster.yaml and the Dockerfile."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config

# `make test` installs the k8s extra (dagster-k8s, pinned with dagster); a venv without it skips, saying why.
pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed (pip install -e '.[k8s]')")

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "dagster"
SERVICE_ACCOUNT = "dagster"
RUN_K8S_CONFIG_KEYS = {"containerConfig": "container_config", "podSpecConfig": "pod_spec_config",
                       "podTemplateSpecMetadata": "pod_template_spec_metadata", "jobSpecConfig": "job_spec_config",
                       "jobMetadata": "job_metadata"}
FAKE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: test, user: {token: not-a-real-token}}]
contexts: [{name: test, context: {cluster: test, user: test, namespace: dagster}}]
current-context: test
"""


def helm_values() -> dict:
    return yaml.safe_load((REPO / "deploy" / "helm-values.yaml").read_text())


def render_postgres(values: dict) -> dict:
    """templates/helpers/instance/_postgresql.tpl"""
    pg = values["postgresql"]
    db = {"username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
          "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"], "port": pg["service"]["port"],
          "params": pg.get("postgresqlParams") or {}}
    if pg.get("postgresqlScheme"):
        db["scheme"] = pg["postgresqlScheme"]
    return {"postgres_db": db}


def render_k8s_run_launcher(values: dict) -> dict:
    """templates/helpers/instance/_run-launcher.tpl, K8sRunLauncher."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": SERVICE_ACCOUNT,
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"},
                            *(item["name"] for item in k8s["envConfigMaps"] if "name" in item)],
    }
    if k8s.get("kubeconfigFile"):
        config["kubeconfig_file"] = k8s["kubeconfigFile"]
    if k8s["envSecrets"]:
        config["env_secrets"] = [item["name"] for item in k8s["envSecrets"] if "name" in item]
    for camel, snake in (("envVars", "env_vars"), ("volumeMounts", "volume_mounts"), ("volumes", "volumes"),
                         ("labels", "labels"), ("failPodOnRunFailure", "fail_pod_on_run_failure"),
                         ("resources", "resources"), ("schedulerName", "scheduler_name"),
                         ("securityContext", "security_context")):
        if k8s.get(camel):
            config[snake] = k8s[camel]
    if k8s.get("runK8sConfig"):
        config["run_k8s_config"] = {RUN_K8S_CONFIG_KEYS[key]: value for key, value in k8s["runK8sConfig"].items()}
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def render_instance(values: dict) -> dict:
    """The dagster.yaml that templates/configmap-instance.yaml renders from the values (the parts they set)."""
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring, retries = daemon["runMonitoring"], daemon["runRetries"]
    storage = render_postgres(values)
    instance = {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": storage},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage",
                              "config": storage},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage",
                             "config": storage},
        "run_launcher": render_k8s_run_launcher(values),
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {"max_concurrent_runs": queued["maxConcurrentRuns"],
                                       "tag_concurrency_limits": queued["tagConcurrencyLimits"]}},
        "run_monitoring": {"enabled": monitoring["enabled"],
                           "start_timeout_seconds": monitoring["startTimeoutSeconds"],
                           "poll_interval_seconds": monitoring["pollIntervalSeconds"]},
        "run_retries": {"enabled": retries["enabled"], "max_retries": retries["maxRetries"],
                        "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"]},
        "sensors": {"use_threads": daemon["sensors"]["useThreads"], "num_workers": daemon["sensors"]["numWorkers"]},
        "schedules": {"use_threads": daemon["schedules"]["useThreads"],
                      "num_workers": daemon["schedules"]["numWorkers"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        "retention": {kind: {"purge_after_days": values["retention"][kind]["purgeAfterDays"]}
                      for kind in ("sensor", "schedule")},
    }
    if monitoring.get("maxResumeRunAttempts"):  # the template leaves out a zero
        instance["run_monitoring"]["max_resume_run_attempts"] = monitoring["maxResumeRunAttempts"]
    return instance


def write_instance(config: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture
def chart_env(monkeypatch, tmp_path):
    """The environment the chart gives the daemon, webserver and run pods."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("DAGSTER_K8S_INSTANCE_CONFIG_MAP", "dagster-instance")
    monkeypatch.setenv("DAGSTER_K8S_PG_PASSWORD_SECRET", "dagster-postgresql-secret")
    monkeypatch.setenv("DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP", "dagster-pipeline-env")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-used")


def test_the_chart_renders_an_instance_dagster_accepts(tmp_path, chart_env):
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import PostgresRunStorage

    rendered = render_instance(helm_values())
    value, _ = dagster_instance_config(str(write_instance(rendered, tmp_path / "rendered")))
    assert value["run_launcher"]["class"] == "K8sRunLauncher"

    # The run launcher's and the storage's own config schemas (checked when the instance builds them).
    launcher = validate_config(K8sRunLauncher.config_type(), rendered["run_launcher"]["config"])
    assert launcher.success, launcher.errors
    storage = validate_config(PostgresRunStorage.config_type(), rendered["run_storage"]["config"])
    assert storage.success, storage.errors

    # ... and the schema has teeth: a misspelt launcher field is refused.
    typo = dict(rendered["run_launcher"]["config"], job_namspace="dagster")
    assert not validate_config(K8sRunLauncher.config_type(), typo).success


def test_the_k8s_run_launcher_loads_from_the_rendered_instance(tmp_path, chart_env):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_k8s import K8sRunLauncher

    rendered = render_instance(helm_values())
    # Local storage and a kubeconfig file instead of the cluster's service account: no cluster or database here.
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        rendered.pop(key)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(FAKE_KUBECONFIG)
    rendered["run_launcher"]["config"] |= {"load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    instance = dg.DagsterInstance.from_config(str(write_instance(rendered, tmp_path / "local")))
    try:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.job_namespace == NAMESPACE
        assert launcher.instance_config_map == "dagster-instance"
        assert launcher.env_config_maps == ["dagster-pipeline-env"]
        assert launcher.labels == {"app.kubernetes.io/part-of": "imocha-pipeline"}
        container = launcher.run_k8s_config["container_config"]
        assert container["resources"]["limits"]["memory"] == "1Gi"
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
    finally:
        instance.dispose()


def test_helm_values_agree_with_the_instance_file_and_the_image():
    values = helm_values()
    rendered = render_instance(values)
    local = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())

    queue = local["run_queue"]
    assert rendered["run_coordinator"]["config"] == {"max_concurrent_runs": queue["max_concurrent_runs"],
                                                     "tag_concurrency_limits": queue["tag_concurrency_limits"]}
    for key in ("enabled", "start_timeout_seconds", "poll_interval_seconds"):
        assert rendered["run_monitoring"][key] == local["run_monitoring"][key], key
    assert values["dagsterDaemon"]["runMonitoring"]["maxResumeRunAttempts"] == \
        local["run_monitoring"]["max_resume_run_attempts"]
    for key in ("run_retries", "sensors", "schedules", "telemetry", "retention"):
        assert rendered[key] == local[key], key
    assert rendered["run_storage"]["config"]["postgres_db"]["scheme"] == \
        local["storage"]["postgres"]["postgres_db"]["scheme"]

    # The user deployment runs the image's command; the callback endpoint uses the same image and secret.
    [deployment] = values["dagster-user-deployments"]["deployments"]
    dockerfile = (REPO / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1)
    assert yaml.safe_load(cmd) == ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p",
                                   str(deployment["port"]), *deployment["codeServerArgs"]]
    assert f"EXPOSE {deployment['port']}" in dockerfile
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    callbacks = next(m for m in values["dagster-user-deployments"]["extraManifests"] if m["kind"] == "Deployment")
    [container] = callbacks["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image
    assert container["envFrom"] == [{"secretRef": {"name": deployment["envSecrets"][0]["name"]}}]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
