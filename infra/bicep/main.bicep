// Tributary on Azure: the whole environment in one deployment.
// AKS (KEDA add-on, workload identity, Istio mesh, managed Prometheus) runs
// the functions, watched by Azure Managed Grafana and Prometheus alert rules; Event
// Hubs is the Kafka endpoint; Cosmos DB keeps raw readings; PostgreSQL and
// Redis hold results; API Management fronts ingest; Key Vault holds secrets.
// One virtual network holds the nodes, API Management, and the only ways into
// PostgreSQL and Redis; every workload runs as an identity of its own.
targetScope = 'resourceGroup'

@description('Environment name, used in resource names (dev, prod).')
param environment string

@description('Azure region.')
param location string = resourceGroup().location

@description('Kubernetes version of the cluster.')
param kubernetesVersion string = '1.33'

@description('VM size of the AKS system/user node pool.')
param nodeVmSize string = 'Standard_D4ds_v5'

@description('Nodes in the pool at start (the cluster autoscaler adds more).')
param nodeCount int = 2

@description('Event Hubs SKU (Standard or higher has the Kafka endpoint).')
@allowed(['Standard', 'Premium'])
param eventHubsSku string = 'Standard'

@description('Partitions of every topic: the most consumers KEDA runs per group.')
param partitions int = 12

@description('Days raw readings are kept in Cosmos DB (container default TTL).')
param rawRetentionDays int = 30

@description('Storage account SKU of the lake (its redundancy).')
param lakeSku string = 'Standard_ZRS'

@description('Days after its last change a blob of the lake moves to the cool tier.')
param lakeCoolAfterDays int = 30

@description('PostgreSQL flexible server SKU name and tier.')
param postgresSku object = { name: 'Standard_B2s', tier: 'Burstable' }

@description('Azure Cache for Redis SKU.')
param redisSku object = { name: 'Basic', family: 'C', capacity: 0 }

@description('API Management SKU: Developer (no SLA; dev) or Premium, the two tiers that can be injected into a virtual network, which is how API Management reaches ingest.')
@allowed(['Developer', 'Premium'])
param apimSku string = 'Developer'

@description('Publisher e-mail shown by API Management.')
param publisherEmail string

@description('Requests per minute one API subscription may send to ingest.')
param ingestRateLimitPerMinute int = 6000

@description('Requests per minute one device may send to ingest, over all replicas (API Management, keyed on the device id in the SAS token; ingest\'s per-replica bucket of readings per second stays as the second line).')
param ingestDeviceRateLimitPerMinute int = 600

@description('Requests per day one device may send to ingest.')
param ingestDeviceQuotaPerDay int = 200000

@description('Largest request body ingest accepts, in bytes: checked at the edge by API Management and again by ingest (TRIBUTARY_MAX_BODY_BYTES, set to the same value).')
param ingestMaxBodyBytes int = 1048576

@description('The CA certificates API Management trusts for the interceptor\'s TLS certificate (base64 DER; infra/deploy.sh passes what infra/interceptor_tls.sh keeps: the environment\'s CA, and during a CA change the previous one).')
param interceptorCaCertificates array

@description('Client id of the dashboard\'s Microsoft Entra ID app registration (README: Deployment). Set: the dashboard runs as a web app on App Service with sign-in; empty: no web app (the AKS deployment of the dashboard in keda/ stays available).')
param dashboardEntraClientId string = ''

@description('The Entra app role of that registration whose holders may acknowledge and resolve alerts.')
param dashboardOperatorRole string = 'Tributary.Operator'

@description('The Entra app role of that registration whose holders may read the dashboard (operators read too); empty: every signed-in user of the tenant may.')
param dashboardViewerRole string = 'Tributary.Viewer'

@description('App Service plan SKU of the dashboard (Linux; P0v3 and up have virtual network integration).')
param appServiceSku string = 'P0v3'

@description('Image tag the web app runs (infra/deploy.sh passes the commit it pushed).')
param imageTag string = 'latest'

@description('E-mail addresses the alert rules notify (infra/monitoring/alert-rules.json); empty: alerts show in the portal and Grafana only.')
param alertEmails array = []

@description('Who else administers Grafana (operators): {principalId, principalType (User, Group or ServicePrincipal)}.')
param grafanaAdmins array = []

@description('Object id of the identity running the deployment (infra/deploy.sh passes it): it gets Grafana Admin to import the dashboard. Empty: no such grant.')
param deployerPrincipalId string = ''

@description('Its kind: ServicePrincipal (the pipeline) or User (by hand).')
@allowed(['ServicePrincipal', 'User'])
param deployerPrincipalType string = 'ServicePrincipal'

@secure()
@description('PostgreSQL administrator password (kept in Key Vault).')
param postgresAdminPassword string

@secure()
@description('Password of the read-only PostgreSQL role tributary_readonly (the dashboard); the pipeline passes it from a secret variable.')
param postgresReadonlyPassword string

@secure()
@description('Fleet key that device tokens are derived from (ingest); the pipeline passes it from a secret variable.')
param fleetKey string

@secure()
@description('Bearer token operators acknowledge alerts with (dashboard); the pipeline passes it from a secret variable.')
param operatorToken string

@secure()
@description('Token readers sign in to the dashboard on AKS with; the pipeline passes it from a secret variable.')
param viewerToken string

@description('Splunk HTTP Event Collector base URL (e.g. https://splunk.example.com:8088) that analyze forwards aggregates and alerts to; empty: no forwarding, and no Splunk secret is written.')
param splunkUrl string = ''

@description('Splunk indexer acknowledgement channel (a GUID) when the HEC input has indexer acknowledgement on; empty: events are sent without acknowledgement.')
param splunkChannel string = ''

@secure()
@description('Splunk HEC token (analyze), required when splunkUrl is set; the pipeline passes it from the optional secret variable splunkHecToken.')
param splunkHecToken string = ''

@description('PEM certificate of a CA analyze trusts for the Splunk HEC besides the public roots (Splunk\'s own default certificate, a company CA); empty: the public roots only. Used only with splunkUrl; infra/deploy.sh mounts it into analyze (keda/components/splunk-ca).')
param splunkCaCertificate string = ''

@description('OTLP/HTTP endpoint of an OpenTelemetry Collector the functions export traces to (e.g. http://otel-collector.monitoring:4318); empty: traces off. infra/deploy.sh adds keda/components/traces with it.')
param otlpEndpoint string = ''

@description('Share of traces started at ingest that are sampled (OTEL_TRACES_SAMPLER_ARG, 0 to 1); a device that sends a sampled traceparent is always traced. Used only with otlpEndpoint.')
param traceSampleRatio string = '0.01'

var prefix = 'tributary-${environment}'
// Forwarding to Splunk is on exactly when its URL is given (infra/deploy.sh
// then adds the keda/components/splunk component to the manifests).
var splunkEnabled = !empty(splunkUrl)
var namespace = 'tributary'
// The host the ingest HTTPScaledObject routes (keda/base/ingest.yaml): the interceptor routes by Host header.
var ingestHost = 'ingest.${namespace}.example.com'

// The virtual network's address plan (each environment has its own network,
// so they share it). AKS's service range (aks.bicep, 10.0.0.0/16) is outside it.
var addressPlan = {
  vnet: '10.40.0.0/16'
  nodes: '10.40.0.0/22'
  interceptor: '10.40.4.0/24'
  apim: '10.40.5.0/24'
  postgres: '10.40.6.0/24'
  endpoints: '10.40.7.0/24'
  appservice: '10.40.8.0/24'
}
// The fixed private address of the internal load balancer in front of the
// KEDA HTTP add-on interceptor (keda/base/interceptor.yaml; infra/deploy.sh
// sets it there from the output below): API Management forwards ingest to it.
var ingestBackendIp = '10.40.4.10'
// The interceptor's TLS proxy port (the HTTP add-on chart's default for
// interceptor.tls.port): API Management reaches it over HTTPS only, with the
// certificate infra/interceptor_tls.sh issues from the environment's own CA.
var interceptorPort = 8443

module logs 'modules/logs.bicep' = {
  name: 'logs'
  params: { name: '${prefix}-logs', location: location }
}

module network 'modules/network.bicep' = {
  name: 'network'
  params: {
    name: '${prefix}-vnet'
    location: location
    addressPrefix: addressPlan.vnet
    subnetPrefixes: {
      nodes: addressPlan.nodes
      interceptor: addressPlan.interceptor
      apim: addressPlan.apim
      postgres: addressPlan.postgres
      endpoints: addressPlan.endpoints
      appservice: addressPlan.appservice
    }
  }
}

// One identity per workload, so that each holds only what it uses: the
// Key Vault secrets in `readers` below (the same ones its SecretProviderClass
// syncs, keda/base/secrets.yaml), the Cosmos DB role for archive (write) and
// dashboard (read), and the lake's container for lake (write). Each is
// federated with its own service account (keda/base/namespace.yaml); KEDA's
// kafka scaler runs as the KEDA add-on's keda-operator in kube-system.
module ingestIdentity 'modules/identity.bicep' = {
  name: 'identity-ingest'
  params: { name: '${prefix}-ingest', location: location }
}

module archiveIdentity 'modules/identity.bicep' = {
  name: 'identity-archive'
  params: { name: '${prefix}-archive', location: location }
}

module analyzeIdentity 'modules/identity.bicep' = {
  name: 'identity-analyze'
  params: { name: '${prefix}-analyze', location: location }
}

module processIdentity 'modules/identity.bicep' = {
  name: 'identity-process'
  params: { name: '${prefix}-process', location: location }
}

module dashboardIdentity 'modules/identity.bicep' = {
  name: 'identity-dashboard'
  params: { name: '${prefix}-dashboard', location: location }
}

module lakeIdentity 'modules/identity.bicep' = {
  name: 'identity-lake'
  params: { name: '${prefix}-lake', location: location }
}

module kedaIdentity 'modules/identity.bicep' = {
  name: 'identity-keda'
  params: { name: '${prefix}-keda', location: location }
}

module acr 'modules/acr.bicep' = {
  name: 'acr'
  params: { name: replace('${prefix}acr', '-', ''), location: location }
}

module aks 'modules/aks.bicep' = {
  name: 'aks'
  params: {
    name: '${prefix}-aks'
    location: location
    kubernetesVersion: kubernetesVersion
    nodeVmSize: nodeVmSize
    nodeCount: nodeCount
    logAnalyticsId: logs.outputs.id
    acrId: acr.outputs.id
    nodeSubnetId: network.outputs.nodesSubnetId
    interceptorSubnetId: network.outputs.interceptorSubnetId
    federatedServiceAccounts: [
      { identityName: ingestIdentity.outputs.name, namespace: namespace, serviceAccount: 'ingest' }
      { identityName: archiveIdentity.outputs.name, namespace: namespace, serviceAccount: 'archive' }
      { identityName: analyzeIdentity.outputs.name, namespace: namespace, serviceAccount: 'analyze' }
      { identityName: processIdentity.outputs.name, namespace: namespace, serviceAccount: 'process' }
      { identityName: dashboardIdentity.outputs.name, namespace: namespace, serviceAccount: 'dashboard' }
      { identityName: lakeIdentity.outputs.name, namespace: namespace, serviceAccount: 'lake' }
      { identityName: kedaIdentity.outputs.name, namespace: 'kube-system', serviceAccount: 'keda-operator' }
    ]
  }
}

// The seed's web app: the dashboard on App Service, signed in with Entra ID.
module dashboardApp 'modules/appservice.bicep' = if (!empty(dashboardEntraClientId)) {
  name: 'dashboard-app'
  params: {
    name: prefix
    location: location
    sku: appServiceSku
    subnetId: network.outputs.appServiceSubnetId
    identityId: dashboardIdentity.outputs.id
    identityClientId: dashboardIdentity.outputs.clientId
    identityPrincipalId: dashboardIdentity.outputs.principalId
    acrLoginServer: acr.outputs.loginServer
    imageTag: imageTag
    keyVaultName: keyvault.outputs.name
    cosmosEndpoint: cosmos.outputs.endpoint
    entraClientId: dashboardEntraClientId
    operatorRole: dashboardOperatorRole
    viewerRole: dashboardViewerRole
  }
  // Its Key Vault references resolve at start: the secrets and the grants first.
  dependsOn: [secrets]
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    name: prefix
    location: location
    aksName: aks.outputs.name
    alertEmails: alertEmails
    grafanaAdmins: concat(grafanaAdmins, empty(deployerPrincipalId) ? [] : [{ principalId: deployerPrincipalId, principalType: deployerPrincipalType }])
  }
}

module eventhubs 'modules/eventhubs.bicep' = {
  name: 'eventhubs'
  params: {
    name: '${prefix}-ehns'
    location: location
    sku: eventHubsSku
    partitions: partitions
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    name: '${prefix}-cosmos'
    location: location
    defaultTtlSeconds: rawRetentionDays * 86400
    writerPrincipalId: archiveIdentity.outputs.principalId
    readerPrincipalId: dashboardIdentity.outputs.principalId
  }
}

// The lake's Delta tables (ADLS Gen2); only the lake's identity writes them.
module lake 'modules/lake.bicep' = {
  name: 'lake'
  params: {
    name: replace('${prefix}lake', '-', '')
    location: location
    sku: lakeSku
    coolAfterDays: lakeCoolAfterDays
    writerPrincipalId: lakeIdentity.outputs.principalId
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  params: {
    name: '${prefix}-pg'
    location: location
    sku: postgresSku
    adminPassword: postgresAdminPassword
    vnetId: network.outputs.id
    delegatedSubnetId: network.outputs.postgresSubnetId
  }
}

module redis 'modules/redis.bicep' = {
  name: 'redis'
  params: {
    name: '${prefix}-redis'
    location: location
    sku: redisSku
    vnetId: network.outputs.id
    endpointSubnetId: network.outputs.endpointsSubnetId
  }
}

module keyvault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: { name: '${prefix}-kv', location: location }
}

// Every secret the workloads read, in Key Vault (synced into the cluster by
// the SecretProviderClasses in keda/base/secrets.yaml), and who may read it.
module secrets 'modules/secrets.bicep' = {
  name: 'secrets'
  params: {
    vaultName: keyvault.outputs.name
    redisName: redis.outputs.name
    eventHubsName: eventhubs.outputs.name
    eventHubsRuleName: eventhubs.outputs.kafkaRuleName
    postgresHost: postgres.outputs.host
    postgresAdminLogin: postgres.outputs.adminLogin
    postgresAdminPassword: postgresAdminPassword
    postgresReadonlyLogin: 'tributary_readonly'
    postgresReadonlyPassword: postgresReadonlyPassword
    fleetKey: fleetKey
    operatorToken: operatorToken
    viewerToken: viewerToken
    splunkHecToken: splunkHecToken
    // Only analyze forwards to Splunk, and only when it is on: the component's
    // SecretProviderClass patch adds splunk-hec-token to analyze's objects.
    splunkReaders: splunkEnabled ? [analyzeIdentity.outputs.principalId] : []
    // Exactly what each workload reads: its SecretProviderClass's objects, and
    // for KEDA its TriggerAuthentication's (keda/base/auth.yaml).
    readers: [
      { secret: 'fleet-key', principalId: ingestIdentity.outputs.principalId }
      { secret: 'eventhubs-connection-string', principalId: ingestIdentity.outputs.principalId }
      { secret: 'eventhubs-connection-string', principalId: archiveIdentity.outputs.principalId }
      { secret: 'eventhubs-connection-string', principalId: analyzeIdentity.outputs.principalId }
      { secret: 'eventhubs-connection-string', principalId: processIdentity.outputs.principalId }
      { secret: 'eventhubs-connection-string', principalId: lakeIdentity.outputs.principalId }
      { secret: 'database-url', principalId: processIdentity.outputs.principalId }
      { secret: 'redis-url', principalId: processIdentity.outputs.principalId }
      { secret: 'postgres-readonly-password', principalId: processIdentity.outputs.principalId }
      { secret: 'database-url-readonly', principalId: dashboardIdentity.outputs.principalId }
      { secret: 'redis-url', principalId: dashboardIdentity.outputs.principalId }
      { secret: 'operator-token', principalId: dashboardIdentity.outputs.principalId }
      { secret: 'viewer-token', principalId: dashboardIdentity.outputs.principalId }
      { secret: 'eventhubs-connection-string', principalId: kedaIdentity.outputs.principalId }
    ]
  }
}

module apim 'modules/apim.bicep' = {
  name: 'apim'
  params: {
    name: '${prefix}-apim'
    location: location
    sku: apimSku
    publisherEmail: publisherEmail
    subnetId: network.outputs.apimSubnetId
    ingestBackendUrl: 'https://${ingestBackendIp}:${interceptorPort}'
    interceptorCaCertificates: interceptorCaCertificates
    ingestHost: ingestHost
    rateLimitPerMinute: ingestRateLimitPerMinute
    deviceRateLimitPerMinute: ingestDeviceRateLimitPerMinute
    deviceQuotaPerDay: ingestDeviceQuotaPerDay
    maxBodyBytes: ingestMaxBodyBytes
  }
}

// Wired into keda/ by infra/deploy.sh (images pushed to the registry, ConfigMap,
// each ServiceAccount's and SecretProviderClass's client id, the scaler's
// identity, the interceptor's load balancer address, Cosmos DB endpoint).
output acrLoginServer string = acr.outputs.loginServer
output aksName string = aks.outputs.name
output ingestClientId string = ingestIdentity.outputs.clientId
output archiveClientId string = archiveIdentity.outputs.clientId
output analyzeClientId string = analyzeIdentity.outputs.clientId
output processClientId string = processIdentity.outputs.clientId
output dashboardClientId string = dashboardIdentity.outputs.clientId
output lakeClientId string = lakeIdentity.outputs.clientId
output kedaClientId string = kedaIdentity.outputs.clientId
output ingestBackendIp string = ingestBackendIp
output apimSubnetPrefix string = addressPlan.apim
output kafkaBootstrap string = eventhubs.outputs.bootstrap
output cosmosEndpoint string = cosmos.outputs.endpoint
output lakeUrl string = lake.outputs.url
output postgresHost string = postgres.outputs.host
output redisHost string = redis.outputs.host
output keyVaultUri string = keyvault.outputs.uri
output keyVaultName string = keyvault.outputs.name
output tenantId string = tenant().tenantId
output ingestGatewayUrl string = apim.outputs.gatewayUrl
// Ingest refuses bodies over the same size API Management does (infra/deploy.sh sets TRIBUTARY_MAX_BODY_BYTES).
output ingestMaxBodyBytes int = ingestMaxBodyBytes
// Empty when the dashboard is not on App Service (no app registration named).
output dashboardAppName string = empty(dashboardEntraClientId) ? '' : dashboardApp.outputs.appName
output dashboardUrl string = empty(dashboardEntraClientId) ? '' : dashboardApp.outputs.url
output grafanaName string = monitoring.outputs.grafanaName
output grafanaEndpoint string = monitoring.outputs.grafanaEndpoint
output splunkUrl string = splunkUrl
output splunkChannel string = splunkChannel
output splunkCaCertificate string = splunkCaCertificate
output otlpEndpoint string = otlpEndpoint
output traceSampleRatio string = traceSampleRatio
