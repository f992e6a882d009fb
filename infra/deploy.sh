#!/usr/bin/env bash
# Deploy one environment: Bicep, then the manifests with Bicep's outputs wired in.
#   infra/deploy.sh <dev|prod> <image tag>
# Runs inside `az` login (the pipeline's AzureCLI task).
set -euo pipefail
env=${1:?environment}; tag=${2:?image tag}
rg="tributary-$env"
cd "$(dirname "$0")/.."
out=$(az deployment group create --resource-group "$rg" --name "tributary-$tag" \
  --template-file infra/bicep/main.bicep --parameters "@infra/bicep/params/$env.parameters.json" \
  --query properties.outputs -o json)
get() { echo "$out" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1']['value'])"; }
az aks get-credentials --resource-group "$rg" --name "$(get aksName)" --overwrite-existing
work=$(mktemp -d); cp -r keda "$work/"
cd "$work/keda"
registry=$(get acrLoginServer)
cat >> kustomization.yaml <<YAML
images:
  - {name: tributary.azurecr.io/tributary-ingest, newName: $registry/tributary-ingest, newTag: "$tag"}
  - {name: tributary.azurecr.io/tributary-process, newName: $registry/tributary-process, newTag: "$tag"}
patches:
  - target: {kind: ServiceAccount, name: tributary}
    patch: |-
      - {op: replace, path: /metadata/annotations/azure.workload.identity~1client-id, value: "$(get workloadClientId)"}
  - target: {kind: ConfigMap, name: tributary-config}
    patch: |-
      - {op: replace, path: /data/TRIBUTARY_KAFKA_BROKERS, value: "$(get kafkaBootstrap)"}
YAML
kubectl apply -k .
