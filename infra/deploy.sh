#!/usr/bin/env bash
# Deploy one environment: Bicep, then the manifests with Bicep's outputs wired in.
#   infra/deploy.sh <dev|prod> <image tag>
# Runs inside `az` login (the pipeline's AzureCLI task). The manifests are the
# environment's overlay keda/overlays/<env> when there is one (prod), else
# keda/base (dev); a kustomization in a temporary directory puts the pushed
# images (the pipeline's tag) and Bicep's outputs on top and is applied.
set -euo pipefail
env=${1:?environment}; tag=${2:?image tag}
rg="tributary-$env"
cd "$(dirname "$0")/.."
out=$(az deployment group create --resource-group "$rg" --name "tributary-$tag" \
  --template-file infra/bicep/main.bicep --parameters "@infra/bicep/params/$env.parameters.json" \
  --query properties.outputs -o json)
get() { echo "$out" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1']['value'])"; }
az aks get-credentials --resource-group "$rg" --name "$(get aksName)" --overwrite-existing

src=keda/base
[ -d "keda/overlays/$env" ] && src=keda/overlays/$env
# The registry the source names its images with: the overlay's newName, else the base's.
from=$(sed -nE 's#.*newName: *([^/ ]+)/tributary-ingest[ ,}].*#\1#p' "$src/kustomization.yaml" | head -n1)
from=${from:-tributary.azurecr.io}
registry=$(get acrLoginServer)
client_id=$(get workloadClientId)
kafka=$(get kafkaBootstrap)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r keda "$work/"  # Kustomize takes relative paths only
mkdir "$work/apply"
{
  cat <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../$src
images:
YAML
  for fn in ingest archive analyze process dashboard; do
    echo "  - {name: $from/tributary-$fn, newName: $registry/tributary-$fn, newTag: \"$tag\"}"
  done
  cat <<YAML
patches:
  - target: {kind: ServiceAccount, name: tributary}
    patch: |-
      - {op: replace, path: /metadata/annotations/azure.workload.identity~1client-id, value: "$client_id"}
  - target: {kind: ConfigMap, name: tributary-config}
    patch: |-
      - {op: replace, path: /data/TRIBUTARY_KAFKA_BROKERS, value: "$kafka"}
  - target: {kind: TriggerAuthentication, name: eventhubs}
    patch: |-
      - {op: replace, path: /spec/azureKeyVault/vaultUri, value: "$(get keyVaultUri)"}
      - {op: replace, path: /spec/azureKeyVault/podIdentity/identityId, value: "$client_id"}
  - target: {kind: ScaledObject, name: "analyze|archive"}
    patch: |-
      - {op: replace, path: /spec/triggers/0/metadata/bootstrapServers, value: "$kafka"}
  - target: {kind: ScaledObject, name: process}
    patch: |-
      - {op: replace, path: /spec/triggers/0/metadata/bootstrapServers, value: "$kafka"}
      - {op: replace, path: /spec/triggers/1/metadata/bootstrapServers, value: "$kafka"}
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: archive, namespace: tributary}
      spec: {template: {spec: {containers: [{name: archive, env: [{name: TRIBUTARY_COSMOS_ENDPOINT, value: "$(get cosmosEndpoint)"}]}]}}}
YAML
} >"$work/apply/kustomization.yaml"
kubectl apply -k "$work/apply"
