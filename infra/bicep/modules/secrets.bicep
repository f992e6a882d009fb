// The Key Vault secrets the functions read: the SecretProviderClass in
// keda/base/secrets.yaml syncs each one, under the same name, into the
// Kubernetes Secret tributary-secrets. Values Azure knows come from the
// resources (Redis access key, Event Hubs connection string); the rest are
// secure parameters the pipeline passes from its secret variables
// (infra/deploy.sh).
param vaultName string
param redisName string
param eventHubsName string
param eventHubsRuleName string
param postgresHost string
param postgresAdminLogin string
@secure()
param postgresAdminPassword string
@description('Login of the read-only PostgreSQL role the dashboard uses (created in the database, see README).')
param postgresReadonlyLogin string
@secure()
param postgresReadonlyPassword string
@secure()
param fleetKey string
@secure()
param operatorToken string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource cache 'Microsoft.Cache/redis@2024-03-01' existing = {
  name: redisName
}

resource ehns 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: eventHubsName
}

resource kafkaRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' existing = {
  parent: ehns
  name: eventHubsRuleName
}

// TLS only: PostgreSQL requires it (require_secure_transport), Redis has no
// plaintext port.
var database = 'tributary'

resource fleetKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'fleet-key'
  properties: { value: fleetKey }
}

resource operatorTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'operator-token'
  properties: { value: operatorToken }
}

resource eventHubsSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'eventhubs-connection-string'
  properties: { value: kafkaRule.listKeys().primaryConnectionString }
}

resource databaseUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'database-url'
  properties: { value: 'postgres://${postgresAdminLogin}:${uriComponent(postgresAdminPassword)}@${postgresHost}:5432/${database}?sslmode=require' }
}

resource databaseUrlReadonlySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'database-url-readonly'
  properties: { value: 'postgres://${postgresReadonlyLogin}:${uriComponent(postgresReadonlyPassword)}@${postgresHost}:5432/${database}?sslmode=require' }
}

resource redisUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'redis-url'
  properties: { value: 'rediss://:${uriComponent(cache.listKeys().primaryKey)}@${cache.properties.hostName}:${cache.properties.sslPort}' }
}
