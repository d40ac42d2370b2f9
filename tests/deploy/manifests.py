"""The files under deploy/ as the deploy tests read them: every Kubernetes resource with the file it came from,
the CRD schemas made strict, the Alertmanager configs the manifests hold, and the external checkers' runs.

A checker's run is one subprocess over many files (they are slow to start); ``Run.failures`` is what it
said when it did not pass, so a test asserts it is empty and shows the checker's own words otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from check_jsonschema import main as check_jsonschema_cli

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.33.0"  # one of the versions kubernetes-validate ships (kubernetes-validate --help)
CRD_SCHEMAS = {  # (apiVersion, kind) -> the schema file extracted from prometheus-operator's CRDs
    ("monitoring.coreos.com/v1", "Alertmanager"): "alertmanager-v1.json",
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): "alertmanagerconfig-v1alpha1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json",
}


@dataclass(frozen=True)
class Resource:
    """One document of a manifest file."""

    file: Path
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def crd(self) -> bool:
        return (self.body["apiVersion"], self.kind) in CRD_SCHEMAS

    def __str__(self) -> str:
        return f"{self.file.name}: {self.kind}/{self.name}"


def resources(files: Sequence[Path]) -> list[Resource]:
    """Every non-empty document of ``files``, in order."""
    return [Resource(f, doc) for f in files for doc in yaml.safe_load_all(f.read_text(encoding="utf-8")) if doc]


def manifest_files() -> list[Path]:
    return sorted(KUBERNETES.glob("*.yaml"))


def find(found: Sequence[Resource], kind: str, name: str) -> Resource:
    (match,) = [r for r in found if r.kind == kind and r.name == name]
    return match


def strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object schema that lists its properties and
    says nothing of others (the CRDs leave it out: the API server prunes unknown fields instead of
    refusing them, so a typo would be dropped without a word). Schemas that keep unknown fields
    (``x-kubernetes-preserve-unknown-fields``) or give ``additionalProperties`` are left as they are.

    One more change: a few patterns (muteTimeIntervals' weekdays and months) use RE2's inline ``(?i)`` in
    mid-pattern, which neither ECMAScript nor Python accepts; it is dropped (they match lower case only)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                node["pattern"] = node["pattern"].replace("(?i)", "")
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for key, value in node.items():
                if key == "properties":
                    for sub in value.values():
                        walk(sub)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return schema


@dataclass(frozen=True)
class Run:
    """One checker's run: its command line, exit status and output."""

    argv: list[str]
    returncode: int
    output: str

    @property
    def failures(self) -> str:
        return "" if self.returncode == 0 else f"{' '.join(self.argv)} exited {self.returncode}:\n{self.output}"


def run(argv: Sequence[str], cwd: Path | None = None, timeout: float = 60.0) -> Run:
    proc = subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False)
    return Run(list(argv), proc.returncode, proc.stdout + proc.stderr)


@dataclass(frozen=True)
class SchemaReport:
    """check-jsonschema's verdict on the resources of one kind: its exit status and, per file it refused,
    the errors it gave (``$.path: message``)."""

    kind: str
    returncode: int
    errors: dict[str, list[str]]


def check_jsonschema_main(argv: list[str]) -> Run:
    """check-jsonschema's command line, run in this process (its documented entry point: a subprocess
    would pay for the interpreter and imports once per kind)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            check_jsonschema_cli(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Run(["check-jsonschema", *argv], code, out.getvalue())


def check_jsonschema(resources_: Sequence[Resource], tmp: Path) -> list[SchemaReport]:
    """check-jsonschema over every CRD resource, one run per kind, against the strict schema; each resource
    is written to ``tmp`` as JSON named ``<file stem>--<kind>-<name>.json``."""
    reports = []
    for (api_version, kind), schema_file in CRD_SCHEMAS.items():
        batch = [r for r in resources_ if (r.body["apiVersion"], r.kind) == (api_version, kind)]
        if not batch:
            continue
        schema = tmp / f"strict-{schema_file}"
        schema.write_text(json.dumps(strict(json.loads((SCHEMAS / schema_file).read_text()))), encoding="utf-8")
        instances = []
        for r in batch:
            instance = tmp / f"{r.file.stem}--{r.kind}-{r.name}.json"
            instance.write_text(json.dumps(r.body), encoding="utf-8")
            instances.append(str(instance))
        result = check_jsonschema_main(["--output-format", "json", "--schemafile", str(schema), *instances])
        try:
            verdict = json.loads(result.output)
        except ValueError:
            raise AssertionError(result.failures) from None
        errors: dict[str, list[str]] = {}
        for error in verdict.get("errors", []) + verdict.get("parse_errors", []):
            errors.setdefault(Path(error["filename"]).name, []).append(f"{error['path']}: {error['message']}")
        reports.append(SchemaReport(kind, result.returncode, errors))
    return reports


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def operator_config(config: Resource, secrets: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """An AlertmanagerConfig as the alertmanager.yml the operator makes of it: keys in snake_case, secret
    references replaced by the Secret's value (the operator writes them in), route and receivers as given."""

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            if "key" in node and set(node) <= {"name", "key", "optional"}:  # a SecretKeySelector
                return secrets[node["name"]][node["key"]]
            return {_CAMEL.sub("_", key).lower(): convert(value) for key, value in node.items()}
        if isinstance(node, list):
            return [convert(item) for item in node]
        return node

    spec = config.body["spec"]
    return {"route": convert(spec["route"]), "receivers": convert(spec["receivers"])}


def alertmanager_configs(found: Sequence[Resource]) -> Iterator[tuple[str, str]]:
    """(where, alertmanager.yml text) for every Alertmanager config the manifests hold: the alertmanager.yml
    of a ConfigMap or Secret, and each AlertmanagerConfig as the operator renders it."""
    secrets = {r.name: r.body.get("stringData", {}) for r in found if r.kind == "Secret"}
    for r in found:
        if r.kind in ("ConfigMap", "Secret"):
            for key, text in (r.body.get("data") or r.body.get("stringData") or {}).items():
                if key in ("alertmanager.yml", "alertmanager.yaml"):
                    yield f"{r} [{key}]", text
        elif r.kind == "AlertmanagerConfig":
            yield str(r), yaml.safe_dump(operator_config(r, secrets))
