"""The checks of scripts/check-deploy that schemas cannot express: KEDA objects against the
schemas in deploy/k8s/schemas/, and the rendered objects against each other."""

import json
import pathlib
import sys

import jsonschema
import yaml

rendered, schemas = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
objects = [o for o in yaml.safe_load_all(rendered.read_text()) if o]
by_kind = {}
for o in objects:
    by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
problems = []

for kind, schema_file in [("ScaledObject", "keda-scaledobject.json"), ("TriggerAuthentication", "keda-triggerauthentication.json")]:
    schema = json.loads((schemas / schema_file).read_text())
    for name, o in by_kind.get(kind, {}).items():
        for error in jsonschema.Draft202012Validator(schema).iter_errors(o):
            problems.append(f"{kind}/{name}: {'.'.join(map(str, error.path))}: {error.message}")

config = next(iter(by_kind.get("ConfigMap", {}).values()))["data"]
secrets = next(iter(by_kind.get("Secret", {}).values()))
secret_keys = set(secrets.get("stringData", {})) | set(secrets.get("data", {}))
for name, scaled in by_kind.get("ScaledObject", {}).items():
    target = scaled["spec"]["scaleTargetRef"]["name"]
    if target not in by_kind.get("Deployment", {}):
        problems.append(f"ScaledObject/{name} scales {target}, which is not a Deployment here")
    for trigger in scaled["spec"]["triggers"]:
        if trigger["type"] != "rabbitmq":
            continue
        meta = trigger["metadata"]
        if meta["queueName"] != f"{config['FASTNPC_NAMESPACE']}.jobs":
            problems.append(f"ScaledObject/{name} watches {meta['queueName']}, not the jobs queue of FASTNPC_NAMESPACE")
        if meta["value"] != config["FASTNPC_WORKER_CONCURRENCY"]:
            problems.append(f"ScaledObject/{name} aims at {meta['value']} messages a replica, FASTNPC_WORKER_CONCURRENCY is {config['FASTNPC_WORKER_CONCURRENCY']}")
        auth = by_kind.get("TriggerAuthentication", {}).get(trigger.get("authenticationRef", {}).get("name"))
        if auth is None:
            problems.append(f"ScaledObject/{name}: its authenticationRef names no TriggerAuthentication here")
        else:
            for ref in auth["spec"].get("secretTargetRef", []):
                if ref["key"] not in secret_keys:
                    problems.append(f"TriggerAuthentication/{auth['metadata']['name']} reads {ref['key']}, which the Secret lacks")

for kind in ("Deployment", "Job"):
    for name, o in by_kind.get(kind, {}).items():
        pod = o["spec"]["template"]["spec"]
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{kind}/{name}: the pod may run as root")
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{kind}/{name}/{c['name']}: writable root file system or privilege escalation")
            if "memory" not in c.get("resources", {}).get("limits", {}):
                problems.append(f"{kind}/{name}/{c['name']}: no memory limit")
            for source in c.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                if ref["name"] not in by_kind.get("ConfigMap", {}) | by_kind.get("Secret", {}):
                    problems.append(f"{kind}/{name}/{c['name']}: reads {ref['name']}, which is not here")

for problem in problems:
    print(f"ERROR {rendered.name}: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"[check-deploy] {rendered.name}: {len(objects)} objects, KEDA schemas and cross-references OK", file=sys.stderr)
