#!/usr/bin/env python3
"""Validates deploy/'s Compose files and Kubernetes manifests against the
vendored JSON schemas in deploy/schemas (offline, strict).

    python3 deploy/validate_schemas.py            # everything under deploy/
    python3 deploy/validate_schemas.py FILE...    # only these

Fails (exit 1) on a schema error, a YAML error or duplicate key, a manifest
whose kind has no vendored schema, a Compose bind mount whose source is
missing, and a deploy/k8s file the kustomization does not list (or lists
but does not exist). Works with Debian's python3-jsonschema (4.10) as well
as current releases: every $ref is made local, so no resolver is needed.
"""

import json
import sys
from pathlib import Path

import jsonschema
import yaml

DEPLOY = Path(__file__).resolve().parent
SCHEMAS = DEPLOY / "schemas"
K8S_SCHEMAS = SCHEMAS / "kubernetes" / "v1.30.0-local-strict"
K8S_DEFINITIONS_REF = "/api/_definitions.json#/$defs/"


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys: PyYAML (like many
    YAML readers) keeps the last one silently, which hides a pasted-twice key."""


def _mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` keys may be overridden; that is their point.
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        keys.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def localise(node):
    """Rewrites the Kubernetes schemas' references to the shared definitions
    file into references to `#/$defs/...` of the same document."""
    if isinstance(node, dict):
        return {
            k: (("#/$defs/" + v[len(K8S_DEFINITIONS_REF):]) if k == "$ref" and v.startswith(K8S_DEFINITIONS_REF) else localise(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [localise(v) for v in node]
    return node


_k8s_definitions = None


def kubernetes_schema(api_version, kind):
    """The schema of `kind` in `api_version`, named as kubernetes-json-schema
    names its files (`deployment-apps-v1`, `service-v1`), or None."""
    group, _, version = api_version.rpartition("/")
    stem = kind.lower() + (f"-{group.split('.')[0]}" if group else "") + f"-{version}"
    path = K8S_SCHEMAS / f"{stem}.json"
    if not path.is_file():
        return None
    global _k8s_definitions
    if _k8s_definitions is None:
        _k8s_definitions = localise(load_json(K8S_SCHEMAS / "_definitions.json")["$defs"])
    schema = localise(load_json(path))
    schema.pop("$id", None)
    schema["$defs"] = _k8s_definitions
    return schema


def schema_errors(schema, document):
    """Every schema violation of `document`, as readable lines."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    lines = []
    for error in errors:
        # For oneOf/anyOf the useful message is in the closest sub-error.
        best = jsonschema.exceptions.best_match([error])
        where = "/".join(str(p) for p in best.absolute_path) or "(top)"
        lines.append(f"{where}: {best.message}")
    return lines


def check_compose(path, document):
    problems = [f"schema: {line}" for line in schema_errors(load_json(SCHEMAS / "compose-spec.json"), document)]
    # A bind mount of a file that was renamed or removed only fails at `up`.
    for name, service in (document.get("services") or {}).items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not (path.parent / source).exists():
                problems.append(f"services/{name}/volumes: bind source {source} does not exist")
    return problems


def check_kustomization(path, document):
    problems = [f"schema: {line}" for line in schema_errors(load_json(SCHEMAS / "kustomization.json"), document)]
    listed = set(document.get("resources") or [])
    for resource in sorted(listed):
        if not (path.parent / resource).is_file():
            problems.append(f"resources: {resource} does not exist")
    # Examples (secret.example.yaml) are deliberately not applied.
    for manifest in sorted(path.parent.glob("*.yaml")):
        if manifest.name != path.name and not manifest.name.endswith(".example.yaml") and manifest.name not in listed:
            problems.append(f"resources: {manifest.name} is in {path.parent.name}/ but not listed")
    return problems


def check_kubernetes(document):
    if not isinstance(document, dict) or "kind" not in document or "apiVersion" not in document:
        return ["not a Kubernetes object (no kind/apiVersion)"]
    if document["kind"] == "Kustomization":
        return ["a Kustomization must be in kustomization.yaml"]
    schema = kubernetes_schema(document["apiVersion"], document["kind"])
    if schema is None:
        return [f"no vendored schema for {document['apiVersion']} {document['kind']} (see deploy/schemas/README.md)"]
    name = (document.get("metadata") or {}).get("name", "?")
    return [f"{document['kind']} {name}: {line}" for line in schema_errors(schema, document)]


def check_file(path):
    try:
        with open(path, encoding="utf-8") as f:
            documents = [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]
    except yaml.YAMLError as err:
        return [f"YAML: {err}"]
    if not documents:
        return ["empty file"]
    if path.parent.name == "k8s":
        if path.name == "kustomization.yaml":
            return check_kustomization(path, documents[0])
        return [p for d in documents for p in check_kubernetes(d)]
    return [p for d in documents for p in check_compose(path, d)]


def default_files():
    return sorted(DEPLOY.glob("docker-compose*.yml")) + sorted((DEPLOY / "k8s").glob("*.yaml"))


def main(args):
    files = [Path(a).resolve() for a in args] or default_files()
    if not files:
        print("validate_schemas: nothing to check", file=sys.stderr)
        return 1
    failed = 0
    for path in files:
        problems = check_file(path)
        shown = path.relative_to(DEPLOY.parent) if path.is_relative_to(DEPLOY.parent) else path
        if problems:
            failed += 1
            print(f"FAIL {shown}")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"ok   {shown}")
    # Worded so CI log readers do not take it for a test runner's summary.
    print(f"validate_schemas: {failed} of {len(files)} files invalid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
