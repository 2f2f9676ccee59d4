#!/usr/bin/env python3
"""Refreshes the vendored schemas from two PyPI wheels (see README.md here).

    pip download --no-deps -d /tmp/w kubernetes-validate check-jsonschema
    python3 deploy/schemas/vendor.py /tmp/w/kubernetes_validate-*.whl /tmp/w/check_jsonschema-*.whl

The Kubernetes kinds are copied as they are; their shared definitions file is
cut down to the definitions those kinds reach (1.3 MB -> ~0.3 MB), which is
the only change made to any vendored file. Adding a kind: add it to KINDS.
"""

import json
import sys
import zipfile
from pathlib import Path

K8S_VERSION = "v1.30.0-local-strict"
KINDS = [
    "configmap-v1",
    "deployment-apps-v1",
    "namespace-v1",
    "poddisruptionbudget-policy-v1",
    "secret-v1",
    "service-v1",
]
HERE = Path(__file__).resolve().parent


def refs(node, out):
    """Collects the definition names that `node` refers to."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and "#/$defs/" in value:
                out.add(value.split("#/$defs/", 1)[1])
            else:
                refs(value, out)
    elif isinstance(node, list):
        for value in node:
            refs(value, out)


def main(k8s_wheel, compose_wheel):
    prefix = f"kubernetes_validate/kubernetes-json-schema/{K8S_VERSION}/"
    out = HERE / "kubernetes" / K8S_VERSION
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(k8s_wheel) as wheel:
        wanted = set()
        for kind in KINDS:
            text = wheel.read(f"{prefix}{kind}.json")
            (out / f"{kind}.json").write_bytes(text)
            refs(json.loads(text), wanted)
        definitions = json.loads(wheel.read(prefix + "_definitions.json"))
    everything, keep = definitions["$defs"], {}
    while wanted:
        name = wanted.pop()
        if name not in keep:
            keep[name] = everything[name]
            refs(keep[name], wanted)
    definitions["$defs"] = dict(sorted(keep.items()))
    (out / "_definitions.json").write_text(json.dumps(definitions, indent=1) + "\n")
    with zipfile.ZipFile(compose_wheel) as wheel:
        vendor = "check_jsonschema/builtin_schemas/vendor/"
        (HERE / "compose-spec.json").write_bytes(wheel.read(vendor + "compose-spec.json"))
    print(f"{len(KINDS)} kinds, {len(keep)} definitions, compose-spec.json written")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
