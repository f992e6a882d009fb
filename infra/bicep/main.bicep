// Tributary on Azure: the whole environment in one deployment.
// AKS (KEDA add-on, workload identity, Istio mesh) runs the functions; Event
// Hubs is the Kafka endpoint; Cosmos DB keeps raw readings; PostgreSQL and
// Redis hold results; API Management fronts ingest; Key Vault holds secrets.
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

@description('PostgreSQL flexible server SKU name and tier.')
param postgresSku object = { name: 'Standard_B2s', tier: 'Burstable' }

@description('Azure Cache for Redis SKU.')
param redisSku object = { name: 'Basic', family: 'C', capacity: 0 }

@description('API Management SKU.')
param apimSku string = 'Developer'

@description('Publisher e-mail shown by API Management.')
param publisherEmail string

@description('URL API Management forwards ingest requests to: the KEDA HTTP add-on interceptor\'s proxy Service (keda-add-ons-http-interceptor-proxy, port 8080) exposed outside the cluster, e.g. http://<internal load balancer IP>:8080 when API Management is in the cluster\'s VNet, else an HTTPS ingress or public load balancer address in front of it. Never a *.svc.cluster.local name: API Management runs outside the cluster and cannot resolve it.')
param ingestBackendUrl string

@description('Requests per minute one API subscription may send to ingest.')
param ingestRateLimitPerMinute int = 6000

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

var prefix = 'tributary-${environment}'
var namespace = 'tributary'
var serviceAccount = 'tributary'
// The host the ingest HTTPScaledObject routes (keda/base/ingest.yaml): the interceptor routes by Host header.
var ingestHost = 'ingest.${namespace}.example.com'

module logs 'modules/logs.bicep' = {
  name: 'logs'
  params: { name: '${prefix}-logs', location: location }
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: { name: '${prefix}-workload', location: location }
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
    workloadIdentityId: identity.outputs.id
    workloadIdentityName: identity.outputs.name
    namespace: namespace
    serviceAccount: serviceAccount
  }
}

module eventhubs 'modules/eventhubs.bicep' = {
  name: 'eventhubs'
  params: {
    name: '${prefix}-ehns'
    location: location
    sku: eventHubsSku
    partitions: partitions
    principalId: identity.outputs.principalId
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    name: '${prefix}-cosmos'
    location: location
    defaultTtlSeconds: rawRetentionDays * 86400
    principalId: identity.outputs.principalId
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  params: { name: '${prefix}-pg', location: location, sku: postgresSku, adminPassword: postgresAdminPassword }
}

module redis 'modules/redis.bicep' = {
  name: 'redis'
  params: { name: '${prefix}-redis', location: location, sku: redisSku }
}

module keyvault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: { name: '${prefix}-kv', location: location, principalId: identity.outputs.principalId }
}

// Every secret the functions read, in Key Vault (synced into the cluster by
// the SecretProviderClass in keda/base/secrets.yaml).
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
  }
}

module apim 'modules/apim.bicep' = {
  name: 'apim'
  params: {
    name: '${prefix}-apim'
    location: location
    sku: apimSku
    publisherEmail: publisherEmail
    ingestBackendUrl: ingestBackendUrl
    ingestHost: ingestHost
    rateLimitPerMinute: ingestRateLimitPerMinute
  }
}

// Wired into keda/ by infra/deploy.sh (images pushed to the registry, ConfigMap,
// ServiceAccount annotation, SecretProviderClass, Cosmos DB endpoint).
output acrLoginServer string = acr.outputs.loginServer
output aksName string = aks.outputs.name
output workloadClientId string = identity.outputs.clientId
output kafkaBootstrap string = eventhubs.outputs.bootstrap
output cosmosEndpoint string = cosmos.outputs.endpoint
output postgresHost string = postgres.outputs.host
output redisHost string = redis.outputs.host
output keyVaultUri string = keyvault.outputs.uri
output keyVaultName string = keyvault.outputs.name
output tenantId string = tenant().tenantId
output ingestGatewayUrl string = apim.outputs.gatewayUrl
