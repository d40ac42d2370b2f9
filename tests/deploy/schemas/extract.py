"""Regenerate the JSON schemas in this folder from prometheus-operator's CRD files.

    .venv/bin/python tests/deploy/schemas/extract.py PATH/TO/prometheus-operator/example/prometheus-operator-crd

Keeps each served version's ``openAPIV3Schema`` as it stands, minus its ``description`` texts (they are
most of the bytes and no check reads them); writes ``<kind>-<version>.json``, sorted and compact.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CRDS = {
    "monitoring.coreos.com_alertmanagers.yaml": ("v1",),
    "monitoring.coreos.com_alertmanagerconfigs.yaml": ("v1alpha1",),
    "monitoring.coreos.com_prometheusrules.yaml": ("v1",),
    "monitoring.coreos.com_servicemonitors.yaml": ("v1",),
}
HERE = Path(__file__).resolve().parent


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads a bare ``=`` (an enum value in the matchers' schema) as its "value" tag: keep it a string."""


def _value_as_string(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:value", _value_as_string)


def strip(node: Any) -> Any:
    """The schema without ``description`` keys, however deep (a property named ``description`` stays)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                continue
            if key == "properties" and isinstance(value, dict):
                out[key] = {name: strip(sub) for name, sub in value.items()}
            else:
                out[key] = strip(value)
        return out
    if isinstance(node, list):
        return [strip(item) for item in node]
    return node


def main(folder: Path) -> None:
    for name, versions in CRDS.items():
        crd = yaml.load((folder / name).read_text(encoding="utf-8"), Loader=_Loader)
        kind = crd["spec"]["names"]["kind"].lower()
        for version in crd["spec"]["versions"]:
            if version["name"] not in versions:
                continue
            schema = strip(version["schema"]["openAPIV3Schema"])
            target = HERE / f"{kind}-{version['name']}.json"
            target.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
            print(target.name, target.stat().st_size)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
