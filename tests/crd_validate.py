"""Validates custom resources against their CustomResourceDefinitions'
openAPIV3Schema, strictly, as `kubectl --validate=strict` does: an object
schema that lists `properties` and has neither `additionalProperties` nor
`x-kubernetes-preserve-unknown-fields` rejects keys it does not list.

    python3 crd_validate.py CRD_DIR OBJECTS.json

OBJECTS.json: a JSON list of objects. Every object's apiVersion/kind must
have a CRD in CRD_DIR (*.yaml). Prints one line per object ("ok KIND/NAME"
or "invalid KIND/NAME: PATH: MESSAGE" per error); exit 1 when any is
invalid or has no CRD. Used by tests/helm_chart.rs (jsonschema, PyYAML).
"""

import glob
import json
import sys

import jsonschema
import yaml


def strict(schema):
    """The schema with unknown keys rejected wherever Kubernetes would."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def main():
    crd_dir, objects_file = sys.argv[1], sys.argv[2]
    schemas = {}
    for f in sorted(glob.glob(f"{crd_dir}/*.yaml")):
        for crd in yaml.safe_load_all(open(f)):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                schema = strict(v["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{v['name']}", kind)] = schema
    bad = 0
    for obj in json.load(open(objects_file)):
        key = (obj.get("apiVersion"), obj.get("kind"))
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if key not in schemas:
            print(f"invalid {name}: no CRD for {key[0]} {key[1]} in {crd_dir}")
            bad += 1
            continue
        validator = jsonschema.Draft7Validator(schemas[key])
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
        for e in errors:
            path = "/".join(str(p) for p in e.path)
            print(f"invalid {name}: {path}: {e.message}")
        if errors:
            bad += 1
        else:
            print(f"ok {name}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
