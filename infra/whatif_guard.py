#!/usr/bin/env python3
"""Stop a deployment whose what-if shows it would destroy something (infra/deploy.sh runs this).

    infra/whatif_guard.py <what-if result JSON>      # `az deployment group what-if --no-pretty-print -o json`

A deployment in incremental mode never deletes a resource it leaves out, but it
does delete what it owns inline: a subnet left out of a virtual network, a
node pool left out of a cluster, the network a database server sits in. Those
appear in what-if as property changes of type Delete. This fails (exit 1,
naming each) on any resource Delete and on any property Delete at a path that
holds such parts; other property deletes (what-if also reports read-only and
defaulted properties as deleted, which changes nothing) are listed, not fatal.
A delete that is intended passes when TRIBUTARY_WHATIF_ALLOW holds a regular
expression that matches "<resource id>#<property path>" (or the resource id
alone, for a resource delete): e.g. `.*/subnets/old-subnet$`.
"""

import json
import os
import re
import sys

# Property names whose removal removes a part of the resource (or cuts it off its network).
DESTRUCTIVE = {
    "subnets",
    "agentPoolProfiles",
    "virtualNetworkConfiguration",
    "network",
    "delegatedSubnetResourceId",
    "privateDnsZoneArmResourceId",
    "locations",
    "containers",
    "databases",
    "partitionKey",
    "serviceMeshProfile",
    "workloadAutoScalerProfile",
    "oidcIssuerProfile",
}


def property_deletes(delta, prefix=""):
    """(path, property name) of every Delete in a what-if delta, nested arrays and objects included."""
    for d in delta or []:
        path = f"{prefix}.{d['path']}" if prefix else d["path"]
        if d.get("propertyChangeType") == "Delete":
            yield path
        yield from property_deletes(d.get("children"), path)


def destructive(path):
    return any(part in DESTRUCTIVE for part in re.split(r"[.\[\]]", path) if part)


def check(result, allow):
    """(fatal, notes): the unexpected deletes, and the harmless ones, as lines."""
    fatal, notes = [], []
    if result.get("error"):
        fatal.append(f"what-if failed: {result['error'].get('message', result['error'])}")
    for c in result.get("changes", []):
        rid = c["resourceId"]
        if c["changeType"] == "Delete":
            (notes if allow(rid) else fatal).append(f"{rid}: the resource would be deleted")
            continue
        for path in property_deletes(c.get("delta")):
            line = f"{rid}#{path}"
            if destructive(path) and not allow(line):
                fatal.append(f"{line}: would be removed")
            else:
                notes.append(f"{line}: would be removed (allowed or harmless)")
    return fatal, notes


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        result = json.load(f)
    patterns = [re.compile(p) for p in os.environ.get("TRIBUTARY_WHATIF_ALLOW", "").split() if p]
    fatal, notes = check(result, lambda s: any(p.fullmatch(s) for p in patterns))
    for n in notes:
        print(f"what-if: {n}")
    for f in fatal:
        print(f"what-if: UNEXPECTED DELETE {f}", file=sys.stderr)
    changes = result.get("changes", [])
    counts = {}
    for c in changes:
        counts[c["changeType"]] = counts.get(c["changeType"], 0) + 1
    print("what-if: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) if counts else "what-if: no changes")
    return 1 if fatal else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
