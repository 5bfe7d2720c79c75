"""Run with .venv-kserve's Python (the ``kserve`` package pins psutil<6, protobuf<7 and pandas<3, which
clash with ours, so it lives in a venv of its own: scripts/ensure_kserve_env.sh). Two commands:

    validate FILE...            every InferenceService in FILE checked against kserve's own models
    infer URL MODEL TOKEN TEXT  one v2 request through kserve's InferenceRESTClient; prints the JSON

Prints one JSON object on stdout; exits non-zero on a failure.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import Any


# ---- validate -----------------------------------------------------------------------------------
def model_class(name: str) -> Any:
    import kserve.models as kserve_models
    import kubernetes.client.models as k8s_models

    return getattr(kserve_models, name, None) or getattr(k8s_models, name, None)


def build(value: Any, type_name: str, path: str, problems: list[str]) -> Any:
    """``value`` as the generated model ``type_name`` (kserve's, or the kubernetes client's it refers to):
    unknown fields and wrong types are problems, and each model's constructor runs its own checks
    (required fields, allowed values)."""
    scalars = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}
    if type_name in scalars:
        if not isinstance(value, scalars[type_name]) or (type_name == "int" and isinstance(value, bool)):
            problems.append(f"{path}: expected {type_name}, got {type(value).__name__}")
        return value
    if match := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return None
        return [build(item, match.group(1), f"{path}[{i}]", problems) for i, item in enumerate(value)]
    if match := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping")
            return None
        inner = match.group(1) or match.group(2)
        return {key: build(item, inner, f"{path}.{key}", problems) for key, item in value.items()}
    klass = model_class(type_name)
    if klass is None or not getattr(klass, "openapi_types", None):
        # Quantities and int-or-string: strings or numbers.
        if not isinstance(value, (str, int, float)):
            problems.append(f"{path}: expected a quantity ({type_name}), got {type(value).__name__}")
        return value
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object ({type_name})")
        return None
    fields = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    kwargs = {}
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{path}.{key}: not a field of {type_name}; it has {sorted(fields)}")
            continue
        kwargs[fields[key]] = build(item, klass.openapi_types[fields[key]], f"{path}.{key}", problems)
    try:
        return klass(**kwargs)
    except (ValueError, TypeError) as exc:
        problems.append(f"{path}: {type_name}: {exc}")
        return None


def validate(paths: list[str]) -> dict:
    import yaml
    from kserve import constants

    checked, problems = [], []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            if doc.get("kind") != "InferenceService":
                continue
            where = f"{path}:{doc.get('metadata', {}).get('name')}"
            if doc.get("apiVersion") != f"{constants.KSERVE_GROUP}/{constants.KSERVE_V1BETA1_VERSION}":
                problems.append(f"{where}: apiVersion {doc.get('apiVersion')!r} is not "
                                f"{constants.KSERVE_GROUP}/{constants.KSERVE_V1BETA1_VERSION}")
            isvc = build(doc, "V1beta1InferenceService", where, problems)
            if isvc is None:
                continue
            model = isvc.spec.predictor.model
            checked.append({"name": isvc.metadata.name, "model_format": model.model_format.name,
                            "protocol_version": model.protocol_version, "storage_uri": model.storage_uri,
                            "autoscaling_metrics": [m.type for m in (isvc.spec.predictor.auto_scaling.metrics or [])]
                            if isvc.spec.predictor.auto_scaling else []})
    return {"checked": checked, "problems": problems}


# ---- infer --------------------------------------------------------------------------------------
async def infer(url: str, model: str, token: str, text: str) -> dict:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    try:
        data = InferInput(name="text", shape=[1], datatype="BYTES", data=[text])
        request = InferRequest(model_name=model, infer_inputs=[data], request_id="kserve-client-1")
        response = await client.infer(url, request, model_name=model, headers={"Authorization": f"Bearer {token}"})
    finally:
        await client.close()
    return {"model_name": response.model_name, "id": response.id,
            "outputs": [{"name": o.name, "datatype": o.datatype, "shape": list(o.shape), "data": list(o.data)}
                        for o in response.outputs]}


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "validate":
        result = validate(args)
        print(json.dumps(result))
        return 1 if result["problems"] or not result["checked"] else 0
    if command == "infer":
        print(json.dumps(asyncio.run(infer(*args))))
        return 0
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
