"""The Helm chart (deploy/helm), rendered offline by Helm's own engine (Helm v4's Go SDK, through
helm-python-sdk) with its default values, with every feature on, and with a Secret of the
operator's; each manifest validated against the Kubernetes schemas (kubernetes-validate, strict),
and what no schema knows checked too: that every setting is a value, that the environment the
pods get is read by the proxy as the values meant, that the guards in the templates fire, and
that deploy/kubernetes is the chart rendered (scripts/helm_chart.py)."""

from __future__ import annotations

import copy
import json
import re
import typing
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import NoDecode
from scripts import helm_chart
from scripts.helm_chart import CHART, SECRET_SETTINGS, render

from ollama_openai_bridge import __version__
from ollama_openai_bridge.config import Settings, load_settings
from ollama_openai_bridge.security import OPEN_PATHS

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]
SETTINGS = {name.upper() for name in Settings.model_fields}
# Set by the chart from files.* and tls.existingSecret.
CHART_FILES = {
    "MODEL_MAPPING_FILE",
    "UPSTREAMS_FILE",
    "TOKEN_BUDGETS_FILE",
    "SSL_CERTFILE",
    "SSL_KEYFILE",
}


# Examples that cannot go into the full values as documented: the ServiceMonitor needs the
# metrics (example: false), and MEMORY_RECYCLE_ABOVE_MB needs MEMORY_RELEASE_AFTER_IDLE > 0.
OVERRIDES = {"ENABLE_METRICS": "true", "MEMORY_RELEASE_AFTER_IDLE": "30"}


def documented_examples() -> dict[str, str]:
    """Each setting's example from docs/CONFIGURATION.md, as the variable's text."""
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| [^|]+ \| `([^`]+)` \|", text, re.MULTILINE))
    assert set(rows) == SETTINGS
    return {**rows, **OVERRIDES}


def full_values() -> dict[str, Any]:
    """Every setting set to its documented example, typed as an operator would write it in a
    values file (600 a number, true a boolean, a JSON object a map), and every optional part of
    the chart on."""
    examples = {name: yaml.safe_load(text) for name, text in documented_examples().items()}
    config = {k: v for k, v in examples.items() if k not in SECRET_SETTINGS | CHART_FILES}
    # a file of keys from a volume of the operator's
    config["PROXY_API_KEYS_FILE"] = "/etc/ollama-openai-bridge/keys/proxy-keys"
    return {
        "config": config,
        "secret": {
            "values": {k: examples[k] for k in SECRET_SETTINGS if k != "RATE_LIMIT_STORAGE_URI"},
            "extra": {"OPENROUTER_API_KEY": "sk-or-example"},
        },
        "files": {
            "modelMapping": {"llama3": "meta-llama/Llama-3.1-8B-Instruct"},
            "upstreams": {
                "upstreams": [
                    {"name": "local", "base_url": "http://127.0.0.1:8000/v1"},
                    {
                        "name": "openrouter",
                        "base_url": "https://openrouter.ai/api/v1",
                        "api_key_env": "OPENROUTER_API_KEY",
                    },
                ],
                "fallbacks": {"gpt-4o-mini": ["local", "openrouter"]},
            },
            # key-team-a's key id (the first 8 hex digits of its SHA-256)
            "tokenBudgets": {"86107931": {"name": "team-a", "budget": "5k/minute"}},
        },
        "tls": {"existingSecret": "proxy-tls"},
        "redis": {"enabled": True, "auth": {"password": "0123456789abcdef"}},
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "authorization": {"type": "Bearer", "credentials": {"name": "m", "key": "token"}},
            "tlsConfig": {"insecureSkipVerify": True},
        },
        "podDisruptionBudget": {"maxUnavailable": 1},
        "autoscaling": {"enabled": False},
        "replicaCount": 3,
        "imagePullSecrets": [{"name": "registry"}],
        "podAnnotations": {"team": "ml"},
        "podLabels": {"tier": "gateway"},
        "priorityClassName": "high",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "extraEnv": [{"name": "SSL_CERT_FILE", "value": "/etc/ca/bundle.pem"}],
        "extraVolumes": [
            {"name": "ca", "configMap": {"name": "corporate-ca"}},
            {"name": "keys", "secret": {"secretName": "proxy-keys"}},
        ],
        "extraVolumeMounts": [
            {"name": "ca", "mountPath": "/etc/ca", "readOnly": True},
            {"name": "keys", "mountPath": "/etc/ollama-openai-bridge/keys", "readOnly": True},
        ],
        "terminationGracePeriodSeconds": 200,  # SHUTDOWN_GRACE_PERIOD's example is 120
        "probes": {"readiness": {"path": "/ready", "timeoutSeconds": 8}},
    }


EXISTING_SECRET = {"secret": {"existingSecret": "my-keys"}, "redis": {"enabled": True}}
CASES = {"default": None, "full": full_values(), "existing-secret": EXISTING_SECRET}


def manifests(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    docs = [
        doc
        for text in render(values).values()
        for doc in yaml.safe_load_all(text)
        if doc is not None
    ]
    assert all(isinstance(d, dict) for d in docs)
    return docs


def one(
    docs: list[dict[str, Any]], kind: str, name: str = "ollama-openai-bridge"
) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def proxy_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


RENDERED = {case: manifests(values) for case, values in CASES.items()}


def test_the_renderer_is_helm() -> None:
    # Helm's engine (Go text/template + sprig + Helm's own functions), not a lookalike.
    assert helm_python.helm_sdk_version().startswith("v4.")
    with pytest.raises(helm_python.HelmRenderError, match=r"required with redis\.enabled"):
        render({"redis": {"enabled": True}})


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_every_manifest_is_valid(case: str, version: str) -> None:
    docs = RENDERED[case]
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= kinds
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":  # a CRD: no Kubernetes schema (see below)
            continue
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_parts_each_case_turns_on() -> None:
    kinds = {case: sorted(d["kind"] for d in docs) for case, docs in RENDERED.items()}
    default = ["ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler"]
    assert kinds["default"] == sorted([*default, "PodDisruptionBudget"])
    full = ["ConfigMap", "Secret", "Secret", "Deployment", "Deployment", "Service", "Service"]
    assert kinds["full"] == sorted([*full, "PodDisruptionBudget", "ServiceMonitor"])
    assert "Secret" not in kinds["existing-secret"]


def test_the_chart_passes_helm_lint() -> None:
    for values in CASES.values():
        report = helm_python.lint(CHART, values, strict=True, kube_version="v1.31.0")
        assert report["errors"] == []
        # severity 1 is information ("icon is recommended"); 2 warning, 3 error
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_setting_is_a_value_of_the_chart() -> None:
    schema = json.loads(helm_chart.SCHEMA.read_text())
    config = set(schema["properties"]["config"]["properties"])
    secret = set(schema["properties"]["secret"]["properties"]["values"]["properties"])
    assert config | secret == SETTINGS, "run: python scripts/helm_chart.py"
    assert not config & secret
    assert secret == set(SECRET_SETTINGS)
    # values.yaml lists each of them, so that reading it shows every knob
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["config"]) == config
    assert set(values["secret"]["values"]) == secret


def test_committed_schema_is_current() -> None:
    assert helm_chart.SCHEMA.read_text() == helm_chart.schema_text(), (
        "run: python scripts/helm_chart.py"
    )


def test_committed_kustomize_manifests_are_the_rendered_chart() -> None:
    committed = {p.name: p.read_text() for p in helm_chart.KUSTOMIZE.glob("*.yaml")}
    assert committed == helm_chart.kustomize_files(), "run: python scripts/helm_chart.py"


def test_secret_settings_are_those_that_carry_keys(tmp_path: Path) -> None:
    """Each setting of the Secret leaks a key if it is logged: Settings.secrets() redacts it."""
    marker = "k3y-MARKER-0123456789abcdef0123456789"
    carriers: dict[str, Any] = {
        "OPENAI_API_KEY": marker,
        "PROXY_API_KEYS": marker,
        "CONTEXT_SIGNING_KEY": marker,
        "RATE_LIMIT_STORAGE_URI": f"redis://:{marker}@redis:6379/0",
        "TOOL_CALL_STORE_URI": f"redis://:{marker}@redis:6379/1",
        "TOKEN_BUDGET_STORAGE_URI": f"redis://:{marker}@redis:6379/2",
        "RESPONSE_CACHE_REDIS_URI": f"redis://:{marker}@redis:6379/3",
        "USAGE_ADMIN_KEY": marker,
        "BACKEND_HEADERS": f'{{"Authorization": "{marker}"}}',
        "BACKEND_EXTRA_BODY": f'{{"api_key": "{marker}"}}',
    }
    assert set(carriers) == set(SECRET_SETTINGS)
    for name, value in carriers.items():
        settings = Settings(_env_file=None, **{name.lower(): value})  # type: ignore[call-arg]
        assert marker in settings.secrets(), name
    for name, field in Settings.model_fields.items():
        if SecretStr in (field.annotation, *typing.get_args(field.annotation)):
            assert name.upper() in SECRET_SETTINGS, name


def test_the_settings_value_kinds_are_classified() -> None:
    """A new setting that takes a size, a list or a JSON object must be declared as such in
    scripts/helm_chart.py, or the schema would refuse values the proxy accepts."""
    for name, field in Settings.model_fields.items():
        if field.annotation is int:
            try:
                sized: dict[str, Any] = {name: "64KiB"}
                Settings(_env_file=None, **sized)  # type: ignore[call-arg]
            except ValueError:
                continue
            assert name.upper() in helm_chart.SIZES, name
    no_decode = {
        name.upper() for name, field in Settings.model_fields.items() if NoDecode in field.metadata
    }
    assert no_decode == helm_chart.COMMA_LISTS | helm_chart.JSON_OBJECTS


def pod_environment(docs: list[dict[str, Any]], mounts: Path) -> dict[str, str]:
    """The proxy container's environment as the kubelet builds it: the ConfigMap, then the
    Secret (envFrom), then `env` with $(NAME) expanded; file paths moved under ``mounts``,
    where the files the pod would see are written."""
    env: dict[str, str] = {}
    env.update(one(docs, "ConfigMap")["data"])
    secret = one(docs, "Secret")["stringData"]
    env.update(secret)
    for entry in proxy_container(docs).get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secret[ref["key"]]
        else:
            env[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], entry["value"])
    files = one(docs, "Secret", "ollama-openai-bridge-files")["stringData"]
    (mounts / "files").mkdir()
    for name, text in files.items():
        (mounts / "files" / name).write_text(text)
    (mounts / "tls").mkdir()
    for name in ("tls.crt", "tls.key"):
        (mounts / "tls" / name).write_text("PEM")
    (mounts / "keys").mkdir()
    (mounts / "keys" / "proxy-keys").write_text("key-team-c\n")
    return {k: v.replace("/etc/ollama-openai-bridge", str(mounts)) for k, v in env.items()}


def test_the_pods_environment_is_read_as_the_values_meant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Numbers keep their digits (6.7108864e+07 would be refused), lists become commas, maps JSON;
    each setting the proxy reads equals the one it reads from the documented example."""
    env = pod_environment(RENDERED["full"], tmp_path)
    for name in SETTINGS | {"ENABLE_PROMETHEUS_METRICS"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    examples = documented_examples()
    for name, example in examples.items():
        if name in CHART_FILES | {"RATE_LIMIT_STORAGE_URI", "PROXY_API_KEYS_FILE"}:
            continue
        given: dict[str, Any] = {name.lower(): example}
        expected = Settings(_env_file=None, **given)  # type: ignore[call-arg]
        assert getattr(settings, name.lower()) == getattr(expected, name.lower()), name
    # the files of the values, read by the proxy as files
    meta = settings.model_map().lookup("llama3")
    assert meta is not None
    assert meta.upstream == "meta-llama/Llama-3.1-8B-Instruct"
    assert [u.name for u in settings.topology().upstreams] == ["local", "openrouter"]
    assert settings.topology().upstreams[1].api_key == "sk-or-example"
    assert settings.ssl_certfile == tmp_path / "tls" / "tls.crt"
    assert settings.inbound_keys() == ["key-team-a", "key-team-b", "key-team-c"]
    accounts = settings.budget_accounts()
    assert accounts is not None
    assert {a.label: [str(x) for x in a.limits] for a in accounts.values()} == {
        "team-a": ["5000/minute"],  # files.tokenBudgets
        "3abd0dff": ["20000/minute", "1000000/day"],  # TOKEN_BUDGET's example, the others
        "1c5ec5aa": ["20000/minute", "1000000/day"],
    }
    # the chart's Redis, with the password from the Secret
    assert settings.rate_limit_storage_uri == (
        "redis://:0123456789abcdef@ollama-openai-bridge-redis:6379/0"
    )
    assert "0123456789abcdef" in settings.secrets()


def test_the_deployment_matches_the_app_and_the_values() -> None:
    for case, docs in RENDERED.items():
        proxy = proxy_container(docs)
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        port = Settings.model_fields["proxy_port"].default
        if case != "full":
            assert proxy["ports"][0]["containerPort"] == port, case
        assert proxy["startupProbe"]["httpGet"]["path"] == "/health"
        assert proxy["livenessProbe"]["httpGet"]["path"] == "/health"
        assert proxy["readinessProbe"]["exec"]["command"] == [
            "python",
            "-m",
            "ollama_openai_bridge.healthcheck",
            "--ready",
        ]
        user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
        assert user
        assert pod["securityContext"]["runAsUser"] == int(user.group(1))
        assert proxy["securityContext"]["readOnlyRootFilesystem"] is True
    full = RENDERED["full"]
    proxy = proxy_container(full)
    assert proxy["ports"][0]["containerPort"] == int(documented_examples()["PROXY_PORT"])
    assert proxy["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"  # tls.existingSecret
    pod = one(full, "Deployment")["spec"]["template"]
    assert pod["metadata"]["annotations"]["team"] == "ml"
    assert pod["spec"]["terminationGracePeriodSeconds"] == 200
    assert one(full, "Deployment")["spec"]["replicas"] == 3
    # default: SHUTDOWN_GRACE_PERIOD (30) + the preStop pause (5) + 10
    default = one(RENDERED["default"], "Deployment")["spec"]["template"]["spec"]
    assert default["terminationGracePeriodSeconds"] == 45
    assert "replicas" not in one(RENDERED["default"], "Deployment")["spec"]  # the HPA's


def test_everything_selects_the_proxy_pods_and_only_them() -> None:
    for case, docs in RENDERED.items():
        proxy_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        selectors = [
            one(docs, "Service")["spec"]["selector"],
            one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        ]
        for selector in selectors:
            assert selector.items() <= proxy_labels.items(), case
        redis = [d for d in docs if d["metadata"]["name"] == "ollama-openai-bridge-redis"]
        for doc in redis:
            labels = (
                doc["spec"]["template"]["metadata"]["labels"]
                if doc["kind"] == "Deployment"
                else doc["metadata"]["labels"]
            )
            for selector in selectors:
                assert not selector.items() <= labels.items(), "the proxy's selector takes Redis"
    monitor = one(RENDERED["full"], "ServiceMonitor")
    service = one(RENDERED["full"], "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/internal/metrics"
    assert endpoint["scheme"] == "https"
    assert endpoint["authorization"]["credentials"]["key"] == "token"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def port_names(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the chart names the proxy's port: Service, container, probes, ServiceMonitor."""
    (service_port,) = one(docs, "Service")["spec"]["ports"]
    proxy = proxy_container(docs)
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    return {
        "service": (service_port["name"], service_port["targetPort"]),
        "appProtocol": service_port["appProtocol"],
        "container": [p["name"] for p in proxy["ports"]],
        "probes": {proxy[probe]["httpGet"]["port"] for probe in ("startupProbe", "livenessProbe")},
        "monitor": [e["port"] for m in monitors for e in m["spec"]["endpoints"]],
    }


def test_the_port_is_named_for_its_protocol() -> None:
    """With tls.existingSecret the proxy serves HTTPS only: a port named `http` (and no
    appProtocol) tells meshes and ingress controllers to speak plain HTTP to it (L4)."""
    assert port_names(RENDERED["full"]) == {
        "service": ("https", "https"),
        "appProtocol": "https",
        "container": ["https"],
        "probes": {"https"},
        "monitor": ["https"],
    }
    assert port_names(RENDERED["default"]) == {
        "service": ("http", "http"),
        "appProtocol": "http",
        "container": ["http"],
        "probes": {"http"},
        "monitor": [],
    }
    # a certificate of the operator's own volume (config.SSL_CERTFILE) is HTTPS too
    docs = manifests(
        {
            "config": {"SSL_CERTFILE": "/etc/c/tls.crt", "SSL_KEYFILE": "/etc/c/tls.key"},
            "serviceMonitor": {"enabled": True},
        }
    )
    assert port_names(docs)["service"] == ("https", "https")
    assert port_names(docs)["monitor"] == ["https"]


def scrape_annotations(values: dict[str, Any] | None) -> dict[str, str]:
    pod = one(manifests(values), "Deployment")["spec"]["template"]["metadata"]
    return {k: v for k, v in pod["annotations"].items() if k.startswith("prometheus.io/")}


def test_scrape_annotations_only_where_a_keyless_scrape_can_read_the_metrics() -> None:
    """An annotation-driven Prometheus sends no key, and with inbound keys /metrics answers 401:
    the security layer opens only OPEN_PATHS (L5). "auto" emits the annotations only when no
    key can be set; true and false decide."""
    metrics_paths = {"/v1/metrics", Settings.model_fields["metrics_path"].default}
    assert not metrics_paths & OPEN_PATHS, "the metrics became open: revisit the chart's rule"
    assert scrape_annotations(None) == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "11434",
        "prometheus.io/path": "/metrics",
    }
    keyed: list[dict[str, Any]] = [
        {"secret": {"values": {"PROXY_API_KEYS": ["key-a"]}}},
        {"config": {"PROXY_API_KEYS_FILE": "/etc/keys/k"}},
        {"secret": {"existingSecret": "mine"}},  # its content is not the chart's to see
        # keys given another way (the second review of #19, L3)
        {"secret": {"extra": {"PROXY_API_KEYS": "key-a"}}},
        {"extraEnv": [{"name": "PROXY_API_KEYS_FILE", "value": "/etc/keys/k"}]},
    ]
    for values in keyed:
        assert scrape_annotations(values) == {}, values
        assert scrape_annotations({**values, "prometheusAnnotations": True}), values
    assert scrape_annotations({"prometheusAnnotations": False}) == {}
    assert scrape_annotations(None) == scrape_annotations({"prometheusAnnotations": "auto"})
    # with keys and TLS, forced on: the scheme follows
    forced = scrape_annotations(with_values(prometheusAnnotations=True))
    assert forced["prometheus.io/path"] == "/internal/metrics"
    assert forced["prometheus.io/scheme"] == "https"
    assert scrape_annotations(full_values()) == {}  # its secret.values.PROXY_API_KEYS
    # no metrics, no annotations, forced or not
    assert scrape_annotations({"config": {"ENABLE_METRICS": False}}) == {}


@pytest.mark.parametrize(
    ("values", "rendered"),
    [
        ({"autoscaling": {"enabled": False}, "replicaCount": 1}, False),
        ({"autoscaling": {"enabled": False}, "replicaCount": 2}, True),
        ({"autoscaling": {"enabled": True, "minReplicas": 1}}, False),
        ({"autoscaling": {"enabled": True, "minReplicas": 2}}, True),
        # the HPA owns the count: replicaCount does not matter then
        ({"autoscaling": {"enabled": True, "minReplicas": 2}, "replicaCount": 1}, True),
        (
            {
                "autoscaling": {"enabled": False},
                "replicaCount": 2,
                "podDisruptionBudget": {"minAvailable": 2},
            },
            False,
        ),
        (
            {
                "autoscaling": {"enabled": False},
                "replicaCount": 1,
                "podDisruptionBudget": {"maxUnavailable": 1},
            },
            True,
        ),
        (
            {
                "autoscaling": {"enabled": False},
                "replicaCount": 1,
                "podDisruptionBudget": {"minAvailable": "50%"},
            },
            False,
        ),
        ({"podDisruptionBudget": {"enabled": False}}, False),
    ],
)
def test_the_disruption_budget_never_blocks_a_drain(values: dict[str, Any], rendered: bool) -> None:
    """minAvailable 1 over the only replica forbids every eviction, so `kubectl drain` of its
    node hangs (L6): the budget is rendered only when a pod can still be evicted."""
    docs = manifests(values)
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert len(budgets) == int(rendered)
    for budget in budgets:
        spec = budget["spec"]
        floor = (
            values["autoscaling"].get("minReplicas", 2)
            if values["autoscaling"]["enabled"]
            else values["replicaCount"]
        )
        if "minAvailable" in spec:
            assert isinstance(spec["minAvailable"], int)
            assert spec["minAvailable"] < floor
        else:
            assert spec["maxUnavailable"] >= 1


def test_an_existing_secret_is_used_whole() -> None:
    docs = RENDERED["existing-secret"]
    proxy = proxy_container(docs)
    assert {"secretRef": {"name": "my-keys"}} in proxy["envFrom"]
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if "valueFrom" in e
    ]
    assert refs
    assert all(r == {"name": "my-keys", "key": "REDIS_PASSWORD"} for r in refs)


def with_values(**changes: Any) -> dict[str, Any]:
    values = copy.deepcopy(full_values())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return values


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (with_values(terminationGracePeriodSeconds=100), "must exceed SHUTDOWN_GRACE_PERIOD"),
        (with_values(probes__readiness__timeoutSeconds=3), "must exceed HEALTH_CHECK_TIMEOUT"),
        (with_values(config__MODEL_MAPPING_FILE="/m.json"), "files.modelMapping or config"),
        (with_values(config__UPSTREAMS_FILE="/u.yaml"), "files.upstreams or config"),
        (with_values(config__TOKEN_BUDGETS_FILE="/b.yaml"), "files.tokenBudgets or config"),
        (with_values(config__SSL_KEYFILE="/k.pem"), "tls.existingSecret or config"),
        (with_values(config__ENABLE_METRICS=False), "serviceMonitor.enabled needs the metrics"),
        (
            with_values(secret__values__RATE_LIMIT_STORAGE_URI="redis://r:6379"),
            "unset secret.values.RATE_LIMIT_STORAGE_URI",
        ),
        (with_values(redis__auth__password=""), "redis.auth.password is required"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_the_templates_refuse_what_would_break(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"config": {"LOG_LEVL": "INFO"}}, "additional properties 'LOG_LEVL'"),
        ({"config": {"PROXY_PORT": "11434"}}, "/config/PROXY_PORT"),
        ({"config": {"PROXY_PORT": 70000}}, "/config/PROXY_PORT"),
        ({"config": {"LOG_LEVEL": "VERBOSE"}}, "/config/LOG_LEVEL"),
        ({"config": {"REQUEST_MAX_SIZE": "64 bananas"}}, "/config/REQUEST_MAX_SIZE"),
        ({"config": {"OPENAI_API_KEY": "sk-1"}}, "additional properties 'OPENAI_API_KEY'"),
        ({"secret": {"values": {"PROXY_API_KEYS": {"a": 1}}}}, "/secret/values/PROXY_API_KEYS"),
        ({"redis": {"auth": {"password": "p@ss:word"}}}, "/redis/auth/password"),
        ({"probes": {"readiness": {"path": "/api/tags"}}}, "/probes/readiness/path"),
        # a password in the URL would sit in the ConfigMap: it goes in secret.extra
        (
            {"config": {"OPENAI_API_BASE_URL": "https://u:hunter2@gw.example/v1"}},
            "/config/OPENAI_API_BASE_URL",
        ),
    ],
)
def test_the_schema_refuses_what_the_proxy_would(values: dict[str, Any], where: str) -> None:
    with (
        helm_python.Chart.load(CHART) as chart,
        pytest.raises(helm_python.HelmValuesError, match=re.escape(where)),
    ):
        chart.validate_schema(values)


def test_the_schema_takes_what_the_proxy_takes() -> None:
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(full_values())
        chart.validate_schema(
            {
                "config": {
                    "REQUEST_MAX_SIZE": "64MiB",
                    "CORS_ORIGINS": ["https://a.example", "chrome-extension://*"],
                    "PASSTHROUGH_OPTIONS": "top_k,repeat_penalty=repetition_penalty",
                    "FORWARDED_ALLOW_IPS": ["10.0.0.0/8"],
                    "LOG_LEVEL": None,
                },
                "secret": {
                    "values": {"BACKEND_HEADERS": '{"X-Title": "t"}'},
                    "extra": {"OPENAI_API_BASE_URL": "https://u:hunter2@gw.example/v1"},
                },
            }
        )
        chart.validate_schema({"config": {"OPENAI_API_BASE_URL": "http://vllm:8000/v1/@at"}})


def test_no_configmap_holds_a_credential_of_the_values() -> None:
    """UPSTREAMS_FILE may hold an inline api_key and credential headers: the files go in a
    Secret, so no ConfigMap carries one (issue #19's review, M1)."""
    values = with_values(
        files__upstreams={
            "upstreams": [
                {
                    "name": "gw",
                    "base_url": "https://gw.example/v1",
                    "api_key": "sk-test-inline-77",
                    "headers": {"X-Api-Key": "hdr-test-cred-88"},
                }
            ]
        }
    )
    docs = manifests(values)
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            text = yaml.safe_dump(doc)
            assert "sk-test-inline-77" not in text
            assert "hdr-test-cred-88" not in text
    files = one(docs, "Secret", "ollama-openai-bridge-files")["stringData"]["upstreams.yaml"]
    assert "sk-test-inline-77" in files
    volume = next(
        v
        for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "files"
    )
    assert volume == {"name": "files", "secret": {"secretName": "ollama-openai-bridge-files"}}


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == __version__
    image = proxy_container(RENDERED["default"])["image"]
    assert image.endswith(f":{__version__}")


def test_values_become_the_text_the_proxy_reads() -> None:
    """Values files decode numbers as float64, which Go prints as 6.7108864e+07 from 1e6 on."""
    docs = manifests(
        {
            "config": {
                "REQUEST_MAX_SIZE": 67108864,
                "RESPONSE_MAX_SIZE": 268435456,
                "QUEUE_TIMEOUT": 0.5,
                "DEBUG": True,
                "CORS_ORIGINS": ["https://a.example", "chrome-extension://*"],
                "FORWARDED_ALLOW_IPS": "10.0.0.0/8",
            },
            "secret": {
                "values": {
                    "PROXY_API_KEYS": ["key-a", "key-b"],
                    "BACKEND_HEADERS": {"X-Title": "team", "X-N": 1},
                }
            },
        }
    )
    data = one(docs, "ConfigMap")["data"]
    assert data["REQUEST_MAX_SIZE"] == "67108864"
    assert data["RESPONSE_MAX_SIZE"] == "268435456"
    assert data["QUEUE_TIMEOUT"] == "0.5"
    assert data["DEBUG"] == "true"
    assert data["CORS_ORIGINS"] == "https://a.example,chrome-extension://*"
    assert data["FORWARDED_ALLOW_IPS"] == "10.0.0.0/8"
    assert "REQUEST_TIMEOUT" not in data  # null: the proxy's default
    secret = one(docs, "Secret")["stringData"]
    assert secret["PROXY_API_KEYS"] == "key-a,key-b"
    assert yaml.safe_load(secret["BACKEND_HEADERS"]) == {"X-Title": "team", "X-N": 1}


def test_an_image_tag_written_as_a_number_is_its_text() -> None:
    """``--set image.tag=1.2`` (the X.Y tag each release publishes) makes a number: the schema
    refused it (the second review of #19, L4); it is the tag "1.2"."""
    docs = manifests({"image": {"repository": "ghcr.io/acme/ollama-openai-bridge", "tag": 1.2}})
    assert proxy_container(docs)["image"] == "ghcr.io/acme/ollama-openai-bridge:1.2"
