#!/usr/bin/env bash
# Deploy one environment: Bicep, then the images into the environment's own
# registry, then the manifests with Bicep's outputs wired in.
#   infra/deploy.sh <dev|prod> <image tag>
# Runs inside `az` login (the pipeline's AzureCLI task) with buildah on PATH.
# - images: the oci-archives scripts/images exports,
#   $TRIBUTARY_IMAGES_DIR/tributary-<function>.oci.tar (default target/images;
#   the pipeline downloads the Build stage's artifact `images`), each pushed
#   after the Bicep deployment (which creates the registry on a first run) to
#   <acrLoginServer>/tributary-<function>:<tag>;
# - secrets: Bicep's secure parameters come from the environment (the
#   pipeline maps its secret variables), see SECRET_PARAMS; Bicep writes them
#   and the secrets it derives into Key Vault, the SecretProviderClass syncs
#   them into the cluster;
# - manifests: the environment's overlay keda/overlays/<env> when there is one
#   (prod), else keda/base (dev); a kustomization in a temporary directory
#   puts the pushed images and Bicep's outputs on top and is applied: each
#   function's identity (<function>ClientId) on its ServiceAccount and its
#   SecretProviderClass, KEDA's (kedaClientId) on the TriggerAuthentication,
#   the interceptor load balancer's address (ingestBackendIp, the one API
#   Management forwards to) and allowed sources (apimSubnetPrefix), and
#   ingest's body limit (ingestMaxBodyBytes, the one API Management checks);
# - Splunk (optional): when the environment's parameters file sets splunkUrl,
#   the HEC token comes from TRIBUTARY_SPLUNK_HEC_TOKEN (the pipeline's
#   optional secret variable splunkHecToken; required then), Bicep writes it
#   to Key Vault for analyze alone, and the manifests get the component
#   keda/components/splunk with Bicep's splunkUrl and splunkChannel, and
#   keda/components/splunk-ca when the parameters file sets
#   splunkCaCertificate (a PEM CA analyze trusts for the HEC, checked before
#   anything is deployed);
# - traces (optional): when the parameters file sets otlpEndpoint, the
#   manifests get keda/components/traces with Bicep's otlpEndpoint and
#   traceSampleRatio (both checked before anything is deployed);
# - before the deployment: `az bicep build` and a what-if that stops on
#   unexpected deletes (infra/whatif_guard.py); after it, the KEDA HTTP
#   add-on from its pinned Helm chart, then the manifests;
# - the dashboard's web app on App Service (when the parameters file names its
#   Entra ID app registration): runs the pushed tag, restarted after the push;
# - Grafana: the dashboard infra/monitoring/grafana/tributary.json imported
#   into the environment's Azure Managed Grafana, as the identity running
#   this (Bicep made it a Grafana Admin);
# - HTTPS from API Management to the interceptor: infra/interceptor_tls.sh
#   keeps the environment's CA and the interceptor's certificate (read back
#   from the cluster's Secrets in namespace keda, renewed when due, new on a
#   first deploy); Bicep gets the CA for API Management to trust
#   (interceptorCaCertificates), the cluster the certificate
#   (tributary-interceptor-tls, which the HTTP add-on's TLS proxy serves)
#   and the CA (tributary-interceptor-ca), and a renewed certificate restarts
#   the interceptor.
set -euo pipefail
env=${1:?environment}; tag=${2:?image tag}
rg="tributary-$env"
cd "$(dirname "$0")/.."
FUNCTIONS=(ingest archive analyze process dashboard lake)
HTTP_ADD_ON_CHART_VERSION=0.15.0
# The name in the interceptor's certificate besides its address.
INTERCEPTOR_TLS_NAME=interceptor.tributary.internal
# Bicep parameter = environment variable holding its value.
SECRET_PARAMS=(fleetKey=TRIBUTARY_FLEET_KEY operatorToken=TRIBUTARY_OPERATOR_TOKEN viewerToken=TRIBUTARY_VIEWER_TOKEN postgresReadonlyPassword=TRIBUTARY_POSTGRES_READONLY_PASSWORD)
# Passed only when the feature that reads it is on (see Splunk above).
OPTIONAL_SECRET_PARAMS=(splunkHecToken=TRIBUTARY_SPLUNK_HEC_TOKEN)
params=infra/bicep/params/$env.parameters.json
fail() { echo "infra/deploy.sh: $*" >&2; exit 1; }

# Everything this needs, checked before anything is deployed.
images=${TRIBUTARY_IMAGES_DIR:-target/images}
for fn in "${FUNCTIONS[@]}"; do
  [ -f "$images/tributary-$fn.oci.tar" ] \
    || fail "$images/tributary-$fn.oci.tar is missing (set TRIBUTARY_IMAGES_DIR to the directory scripts/images exported the oci-archives to)"
done
command -v buildah >/dev/null || fail "buildah is not installed (it pushes the images)"
command -v helm >/dev/null || fail "helm is not installed (it installs the KEDA HTTP add-on)"
command -v kubectl >/dev/null || fail "kubectl is not installed (it applies the manifests)"
command -v openssl >/dev/null || fail "openssl is not installed (it issues the interceptor's certificate)"
for p in "${SECRET_PARAMS[@]}"; do
  var=${p#*=}
  value=${!var:-}
  [ -n "$value" ] || fail "$var is not set (Bicep parameter ${p%%=*}; the pipeline maps it from a secret variable)"
  # An Azure Pipelines macro left as is: the secret variable does not exist.
  [[ $value != \$\(*\) ]] || fail "$var is the unexpanded macro $value: define that secret variable"
done
[ -f "$params" ] || fail "$params is missing (one parameters file per environment)"
# An optional secret variable that is not defined reaches us as its macro: unset.
splunk_token=${TRIBUTARY_SPLUNK_HEC_TOKEN:-}
[[ $splunk_token != \$\(*\) ]] || splunk_token=
splunk_url=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["parameters"].get("splunkUrl", {}).get("value", ""))' "$params")
passed=("${SECRET_PARAMS[@]}")
if [ -n "$splunk_url" ]; then
  [[ $splunk_url =~ ^https?://[^/?#]+/?$ ]] \
    || fail "splunkUrl in $params is $splunk_url: give the HEC base URL, e.g. https://splunk.example.com:8088"
  [ -n "$splunk_token" ] \
    || fail "splunkUrl is set in $params but TRIBUTARY_SPLUNK_HEC_TOKEN is not (Bicep parameter splunkHecToken; the pipeline maps it from the secret variable splunkHecToken)"
  export TRIBUTARY_SPLUNK_HEC_TOKEN=$splunk_token
  passed+=("${OPTIONAL_SECRET_PARAMS[@]}")
  splunk_ca=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["parameters"].get("splunkCaCertificate", {}).get("value", ""))' "$params")
  if [ -n "$splunk_ca" ]; then
    printf '%s\n' "$splunk_ca" | openssl x509 -noout 2>/dev/null \
      || fail "splunkCaCertificate in $params is not a PEM certificate"
  fi
elif [ -n "$splunk_token" ]; then
  echo "infra/deploy.sh: TRIBUTARY_SPLUNK_HEC_TOKEN is set but $params sets no splunkUrl: not forwarding to Splunk" >&2
fi
otlp_endpoint=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["parameters"].get("otlpEndpoint", {}).get("value", ""))' "$params")
if [ -n "$otlp_endpoint" ]; then
  [[ $otlp_endpoint =~ ^https?://[^/?#[:space:]]+/?$ ]] \
    || fail "otlpEndpoint in $params is $otlp_endpoint: give the collector's OTLP/HTTP base URL, e.g. http://otel-collector.monitoring:4318"
  ratio=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["parameters"].get("traceSampleRatio", {}).get("value", "0.01"))' "$params")
  python3 -c 'import sys; r = float(sys.argv[1]); sys.exit(not 0 <= r <= 1)' "$ratio" 2>/dev/null \
    || fail "traceSampleRatio in $params is $ratio: give a number from 0 to 1"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(
  umask 077
  python3 - "${passed[@]}" >"$work/secrets.parameters.json" <<'PY'
import json, os, sys
params = {p.split("=", 1)[0]: {"value": os.environ[p.split("=", 1)[1]]} for p in sys.argv[1:]}
json.dump({"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
           "contentVersion": "1.0.0.0", "parameters": params}, sys.stdout)
PY
)

# The interceptor's TLS: what the cluster holds (if there is one yet), kept or
# renewed; the CA now, for Bicep (API Management trusts it), the certificate
# once Bicep has said the address API Management forwards to (below).
tls_dir="$work/interceptor-tls"
mkdir -m 700 "$tls_dir"
# An empty answer means no cluster yet; an error stops the deploy (taken for a
# first deploy, it would put a new CA in API Management while the interceptor
# kept serving the old certificate, with no restart).
existing_aks=$(az aks list --resource-group "$rg" --query "[0].name" -o tsv) \
  || fail "could not ask Azure whether the cluster exists (az aks list)"
if [ -n "$existing_aks" ]; then
  az aks get-credentials --resource-group "$rg" --name "$existing_aks" --overwrite-existing
  for secret in tributary-interceptor-ca tributary-interceptor-tls; do
    kubectl get secret "$secret" --namespace keda -o json 2>/dev/null | python3 -c '
import base64, json, pathlib, sys
for name, data in json.load(sys.stdin).get("data", {}).items():
    pathlib.Path(sys.argv[1], name).write_bytes(base64.b64decode(data))' "$tls_dir" \
      || echo "infra/deploy.sh: no Secret $secret in the cluster yet"
  done
fi
infra/interceptor_tls.sh ca "$tls_dir"
python3 - "$tls_dir/apim-ca.json" >"$work/tls.parameters.json" <<'PY'
import json, sys
json.dump({"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
           "contentVersion": "1.0.0.0",
           "parameters": {"interceptorCaCertificates": {"value": json.load(open(sys.argv[1]))}}}, sys.stdout)
PY

# Who runs this (the pipeline's service principal, or a person): it gets
# Grafana Admin, to import the dashboard below.
if [ "$(az account show --query user.type -o tsv)" = servicePrincipal ]; then
  deployer_id=$(az ad sp show --id "$(az account show --query user.name -o tsv)" --query id -o tsv)
  deployer_type=ServicePrincipal
else
  deployer_id=$(az ad signed-in-user show --query id -o tsv)
  deployer_type=User
fi
[ -n "$deployer_id" ] || fail "could not find the object id of the identity az is logged in as"

deploy_args=(--resource-group "$rg" --template-file infra/bicep/main.bicep
  --parameters "@$params" --parameters "@$work/secrets.parameters.json" --parameters "@$work/tls.parameters.json"
  --parameters deployerPrincipalId="$deployer_id" deployerPrincipalType="$deployer_type" imageTag="$tag")
# Compile first (a template error stops here, before anything changes), then
# ask Azure what the deployment would change and stop if it would destroy
# something (infra/whatif_guard.py; TRIBUTARY_WHATIF_ALLOW lets an intended
# delete through).
az bicep build --file infra/bicep/main.bicep --stdout >/dev/null
az deployment group what-if "${deploy_args[@]}" --no-pretty-print -o json >"$work/what-if.json"
python3 infra/whatif_guard.py "$work/what-if.json" \
  || fail "what-if shows deletes this deploy did not expect (above); if intended, set TRIBUTARY_WHATIF_ALLOW"

out=$(az deployment group create --name "tributary-$tag" "${deploy_args[@]}" \
  --query properties.outputs -o json)
rm -f "$work/secrets.parameters.json"
get() { echo "$out" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1']['value'])"; }
registry=$(get acrLoginServer)

# The images into this environment's registry (Bicep created it if it is new).
B=(buildah --storage-driver vfs)
az acr login --name "${registry%%.*}" --expose-token --output tsv --query accessToken \
  | "${B[@]}" login --username 00000000-0000-0000-0000-000000000000 --password-stdin "$registry"
for fn in "${FUNCTIONS[@]}"; do
  # buildah pushes from its local storage: load the archive, push it by image id.
  id=$("${B[@]}" pull --quiet "oci-archive:$images/tributary-$fn.oci.tar" | tail -n1)
  [ -n "$id" ] || fail "buildah pull of $images/tributary-$fn.oci.tar gave no image id"
  "${B[@]}" push --quiet "$id" "docker://$registry/tributary-$fn:$tag"
  echo "pushed $registry/tributary-$fn:$tag"
done

# The dashboard's web app (when the parameters name its app registration) runs
# the tag Bicep gave it, which exists now: restart it to pull it.
if [ -n "$(get dashboardAppName)" ]; then
  az webapp restart --name "$(get dashboardAppName)" --resource-group "$rg"
  echo "dashboard: $(get dashboardUrl) (App Service, Entra ID sign-in)"
else
  echo "dashboard: not on App Service (set dashboardEntraClientId in $params; README, Deployment)"
fi

az aks get-credentials --resource-group "$rg" --name "$(get aksName)" --overwrite-existing

# The KEDA HTTP add-on (interceptor, scaler, operator; the AKS KEDA add-on does
# not include it) from its pinned chart, before the manifests that use its
# HTTPScaledObjects. The version is the one whose CRDs tests/deploy validates
# the manifests against; upgrading it is a change to this line and those CRDs.
# Its TLS proxy serves the certificate kept above: the Secrets first, as the
# interceptor mounts the certificate at start. The chart has called the
# Secret's value cert_secret and certSecret; both are set (its schema allows
# other keys).
infra/interceptor_tls.sh cert "$tls_dir" "$(get ingestBackendIp)" "$INTERCEPTOR_TLS_NAME"
kubectl create namespace keda --dry-run=client -o yaml | kubectl apply -f -
kubectl create secret tls tributary-interceptor-tls --namespace keda \
  --cert "$tls_dir/tls.crt" --key "$tls_dir/tls.key" --dry-run=client -o yaml | kubectl apply -f -
ca_files=(--from-file=ca.crt="$tls_dir/ca.crt" --from-file=ca.key="$tls_dir/ca.key")
[ -e "$tls_dir/ca-previous.crt" ] && ca_files+=(--from-file=ca-previous.crt="$tls_dir/ca-previous.crt")
kubectl create secret generic tributary-interceptor-ca --namespace keda "${ca_files[@]}" \
  --dry-run=client -o yaml | kubectl apply -f -
helm repo add kedacore https://kedacore.github.io/charts --force-update >/dev/null
helm upgrade --install http-add-on kedacore/keda-add-ons-http --version "$HTTP_ADD_ON_CHART_VERSION" \
  --namespace keda --create-namespace --wait --timeout 10m \
  --set interceptor.tls.enabled=true --set interceptor.tls.port=8443 \
  --set interceptor.tls.cert_secret=tributary-interceptor-tls --set interceptor.tls.certSecret=tributary-interceptor-tls
# The chart's interceptor Deployment; a first deploy or a changed value has just started it anew.
if [ -e "$tls_dir/renewed" ] && [ -n "$existing_aks" ]; then
  kubectl rollout restart deployment/keda-add-ons-http-interceptor --namespace keda
  kubectl rollout status deployment/keda-add-ons-http-interceptor --namespace keda --timeout 5m
fi

src=keda/base
[ -d "keda/overlays/$env" ] && src=keda/overlays/$env
# The registry the source names its images with: the overlay's newName, else the base's.
from=$(sed -nE 's#.*newName: *([^/ ]+)/tributary-ingest[ ,}].*#\1#p' "$src/kustomization.yaml" | head -n1)
from=${from:-tributary.azurecr.io}
kafka=$(get kafkaBootstrap)
cosmos=$(get cosmosEndpoint)
cp -r keda "$work/"  # Kustomize takes relative paths only
mkdir "$work/apply"
{
  cat <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../$src
YAML
  components=()
  if [ -n "$(get splunkUrl)" ]; then
    components+=(splunk)
    if [ -n "$(get splunkCaCertificate)" ]; then
      get splunkCaCertificate >"$work/keda/components/splunk-ca/ca.crt"
      components+=(splunk-ca)
    fi
  fi
  if [ -n "$(get otlpEndpoint)" ]; then
    printf 'OTEL_EXPORTER_OTLP_ENDPOINT=%s\nOTEL_TRACES_SAMPLER=parentbased_traceidratio\nOTEL_TRACES_SAMPLER_ARG=%s\n' \
      "$(get otlpEndpoint)" "$(get traceSampleRatio)" >"$work/keda/components/traces/traces.env"
    components+=(traces)
  fi
  if [ "${#components[@]}" -gt 0 ]; then
    echo "components:"
    printf '  - ../keda/components/%s\n' "${components[@]}"
  fi
  echo "images:"
  for fn in "${FUNCTIONS[@]}"; do
    echo "  - {name: $from/tributary-$fn, newName: $registry/tributary-$fn, newTag: \"$tag\"}"
  done
  cat <<YAML
patches:
  - target: {kind: SecretProviderClass}
    patch: |-
      - {op: replace, path: /spec/parameters/keyvaultName, value: "$(get keyVaultName)"}
      - {op: replace, path: /spec/parameters/tenantId, value: "$(get tenantId)"}
YAML
  # Each function runs as its own identity: the ServiceAccount its pods use and
  # the SecretProviderClass they mount carry the same client id.
  for fn in "${FUNCTIONS[@]}"; do
    client_id=$(get "${fn}ClientId")
    cat <<YAML
  - target: {kind: ServiceAccount, name: $fn}
    patch: |-
      - {op: replace, path: /metadata/annotations/azure.workload.identity~1client-id, value: "$client_id"}
  - target: {kind: SecretProviderClass, name: $fn-secrets}
    patch: |-
      - {op: replace, path: /spec/parameters/clientID, value: "$client_id"}
YAML
  done
  cat <<YAML
  - target: {kind: Service, name: tributary-interceptor-ilb}
    patch: |-
      - {op: replace, path: /metadata/annotations/service.beta.kubernetes.io~1azure-load-balancer-ipv4, value: "$(get ingestBackendIp)"}
      - {op: replace, path: /spec/loadBalancerSourceRanges, value: ["$(get apimSubnetPrefix)"]}
  - target: {kind: ConfigMap, name: tributary-config}
    patch: |-
      - {op: replace, path: /data/TRIBUTARY_KAFKA_BROKERS, value: "$kafka"}
  - target: {kind: TriggerAuthentication, name: eventhubs}
    patch: |-
      - {op: replace, path: /spec/azureKeyVault/vaultUri, value: "$(get keyVaultUri)"}
      - {op: replace, path: /spec/azureKeyVault/podIdentity/identityId, value: "$(get kedaClientId)"}
  - target: {kind: ScaledObject, name: "analyze|archive"}
    patch: |-
      - {op: replace, path: /spec/triggers/0/metadata/bootstrapServers, value: "$kafka"}
  - target: {kind: ScaledObject, name: process}
    patch: |-
      - {op: replace, path: /spec/triggers/0/metadata/bootstrapServers, value: "$kafka"}
      - {op: replace, path: /spec/triggers/1/metadata/bootstrapServers, value: "$kafka"}
      - {op: replace, path: /spec/triggers/2/metadata/bootstrapServers, value: "$kafka"}
  - target: {kind: ScaledObject, name: lake}
    patch: |-
      - {op: replace, path: /spec/triggers/0/metadata/bootstrapServers, value: "$kafka"}
      - {op: replace, path: /spec/triggers/1/metadata/bootstrapServers, value: "$kafka"}
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: lake, namespace: tributary}
      spec: {template: {spec: {containers: [{name: lake, env: [{name: TRIBUTARY_LAKE_URL, value: "$(get lakeUrl)"}]}]}}}
YAML
  for fn in archive dashboard; do
    cat <<YAML
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: $fn, namespace: tributary}
      spec: {template: {spec: {containers: [{name: $fn, env: [{name: TRIBUTARY_COSMOS_ENDPOINT, value: "$cosmos"}]}]}}}
YAML
  done
  # The edge (API Management) and ingest refuse bodies over the same size.
  cat <<YAML
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: ingest, namespace: tributary}
      spec: {template: {spec: {containers: [{name: ingest, env: [{name: TRIBUTARY_MAX_BODY_BYTES, value: "$(get ingestMaxBodyBytes)"}]}]}}}
YAML
  if [ -n "$(get splunkUrl)" ]; then
    splunk_env="{name: TRIBUTARY_SPLUNK_URL, value: \"$(get splunkUrl)\"}"
    channel=$(get splunkChannel)
    [ -z "$channel" ] || splunk_env="$splunk_env, {name: TRIBUTARY_SPLUNK_CHANNEL, value: \"$channel\"}"
    cat <<YAML
  - patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: analyze, namespace: tributary}
      spec: {template: {spec: {containers: [{name: analyze, env: [$splunk_env]}]}}}
YAML
  fi
} >"$work/apply/kustomization.yaml"
kubectl apply -k "$work/apply"

# The operators' dashboard into Azure Managed Grafana (the same file every
# time: --overwrite). A role assignment takes minutes to reach Grafana, so the
# first import after the grant may be refused: retried for up to 5 minutes.
az extension add --name amg --upgrade --only-show-errors
for attempt in $(seq 1 10); do
  if az grafana dashboard import --name "$(get grafanaName)" --resource-group "$rg" \
      --definition infra/monitoring/grafana/tributary.json --overwrite true --only-show-errors >/dev/null; then
    echo "imported the Grafana dashboard into $(get grafanaEndpoint)"
    break
  fi
  [ "$attempt" -lt 10 ] || fail "could not import infra/monitoring/grafana/tributary.json into Grafana $(get grafanaName)"
  sleep "${TRIBUTARY_RETRY_SECONDS:-30}"
done
