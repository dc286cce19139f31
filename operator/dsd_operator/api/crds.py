"""Generates the CustomResourceDefinitions from the pydantic models (the single source of truth).

`python -m dsd_operator.api.crds --write` rewrites `crds/` and the Helm chart's `crds/`; a test fails when the
committed files drift from the models. Pydantic's JSON schema is turned into a Kubernetes structural schema:
references inlined, `Optional` unwrapped, free-form objects marked preserve-unknown-fields, int|str as
int-or-string, and `x-kubernetes-*` keys passed through.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from dsd_operator.api import v1alpha1 as api

_KEPT = {"type", "description", "default", "minimum", "maximum", "minLength", "maxLength", "pattern", "enum",
         "items", "properties", "required", "additionalProperties", "minItems", "maxItems"}
_NULL = {"type": "null"}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = _structural(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _ordered({**target, **_structural(extra, defs)}) if extra else target
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != _NULL]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return _structural({**options[0], **rest}, defs)
        types = {o.get("type") for o in options}
        if types == {"integer", "string"}:
            return _structural({**rest, "x-kubernetes-int-or-string": True}, defs)
        raise ValueError(f"cannot express anyOf {options} in a structural schema")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "additionalProperties":
            if value is False:
                continue  # unknown fields are pruned (and rejected by kubectl's strict field validation)
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out[key] = _structural(value, defs)
        elif key in _KEPT:
            out[key] = value
    if out.get("default") is None:
        out.pop("default", None)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return _ordered(out)


def _ordered(schema: dict[str, Any]) -> dict[str, Any]:
    """description and type first: the generated YAML reads like documentation."""
    first = [k for k in ("description", "type") if k in schema]
    return {**{k: schema[k] for k in first}, **{k: v for k, v in schema.items() if k not in first}}


class _FactoryDefaults(GenerateJsonSchema):
    """Emit defaults made by default factories too, fully populated: the API server validates CEL rules against
    a default before defaulting inside it, so `speculation: {}` would fail `gammaMin <= gamma`."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()  # type: ignore[call-arg]
        return value.model_dump(by_alias=True, mode="json", exclude_none=True) if isinstance(value, BaseModel) \
            else value


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_FactoryDefaults)
    return _structural(raw, raw.get("$defs", {}))


def _printer(name: str, type_: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    col = {"name": name, "type": type_, "jsonPath": path, "description": description}
    return {**col, "priority": priority} if priority else col


def _crd(kind: str, plural: str, short: list[str], description: str, spec: type[BaseModel],
         status: type[BaseModel], columns: list[dict[str, Any]], subresources: dict[str, Any]) -> dict[str, Any]:
    spec_schema = schema_of(spec)
    spec_schema["description"] = description
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": short},
            "scope": "Namespaced",
            "versions": [{
                "name": api.VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object", "description": description,
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string", "description": "apiVersion: the versioned schema."},
                        "kind": {"type": "string", "description": "kind: the REST resource this object is."},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": {"description": "status: observed state.", **schema_of(status)},
                    },
                }},
                "subresources": subresources,
                "additionalPrinterColumns": columns,
            }],
        },
    }


def deployment_crd() -> dict[str, Any]:
    return _crd(
        api.DEPLOYMENT_KIND, api.DEPLOYMENT_PLURAL, ["dsd"],
        "DSDDeployment runs distributed speculative decoding: draft pods on edge nodes propose tokens that target "
        "pods on GPU nodes verify over gRPC, producing exactly the target model's output.",
        api.DSDDeploymentSpec, api.DSDDeploymentStatus,
        [
            _printer("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "All roles serve."),
            _printer("Target", "string", ".status.target.summary", "Target pods ready/desired."),
            _printer("Draft", "string", ".status.draft.summary", "Draft pods ready/desired."),
            _printer("Gamma", "integer", ".status.gamma", "Current speculation window."),
            _printer("Mode", "string", ".status.speculation.mode", "speculate, or off (the target alone)."),
            _printer("Acceptance", "string", ".status.acceptance", "Measured draft-token acceptance."),
            _printer("TPOT-P95", "string", ".status.tpotP95Ms", "Measured time per output token (ms, P95)."),
            _printer("Age", "date", ".metadata.creationTimestamp", "Age."),
            _printer("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason', "Why (not) ready.", 1),
        ],
        {"status": {}},
    )


def scaler_crd() -> dict[str, Any]:
    return _crd(
        api.SCALER_KIND, api.SCALER_PLURAL, ["dsdscaler"],
        "DSDRoleScaler holds the replica count of one role of a DSDDeployment and exposes /scale, so kubectl "
        "scale, HPA or KEDA can scale the draft and target roles independently. The operator creates one per role.",
        api.RoleScalerSpec, api.RoleScalerStatus,
        [
            _printer("Desired", "integer", ".spec.replicas", "Desired replicas."),
            _printer("Current", "integer", ".status.replicas", "Existing pods."),
            _printer("Age", "date", ".metadata.creationTimestamp", "Age."),
        ],
        {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                                 "labelSelectorPath": ".status.selector"}},
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD."""
    return {f"{api.GROUP}_{api.DEPLOYMENT_PLURAL}.yaml": deployment_crd(),
            f"{api.GROUP}_{api.SCALER_PLURAL}.yaml": scaler_crd()}


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(crd: dict[str, Any]) -> str:
    header = "# Generated from dsd_operator/api/v1alpha1.py by `python -m dsd_operator.api.crds --write`.\n"
    return header + yaml.dump(crd, Dumper=_NoAliases, sort_keys=False, width=120)


def output_dirs(root: Path) -> list[Path]:
    return [root / "crds", root / "charts" / "dsd-operator" / "crds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write crds/ and the chart's crds/")
    parser.add_argument("--root", type=Path, default=Path.cwd())
    args = parser.parse_args()
    for name, crd in all_crds().items():
        if not args.write:
            print("---\n" + render(crd))
            continue
        for d in output_dirs(args.root):
            d.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(render(crd))


if __name__ == "__main__":
    main()
