// The Key Vault secrets the workloads read, and who may read each one. Each
// function's SecretProviderClass (keda/base/secrets.yaml) syncs the ones it
// uses, under the same names, into that function's own Kubernetes Secret;
// KEDA's TriggerAuthentication reads the Event Hubs connection string. Values
// Azure knows come from the resources (Redis access key, Event Hubs
// connection string); the rest are secure parameters the pipeline passes from
// its secret variables (infra/deploy.sh).
@description('Key Vault the secrets are written to.')
param vaultName string

@description('Cache whose access key goes into redis-url.')
param redisName string

@description('Event Hubs namespace of the Kafka endpoint.')
param eventHubsName string

@description('Its send-and-listen rule, whose connection string is the SASL password.')
param eventHubsRuleName string

@description('PostgreSQL host name (resolves privately inside the virtual network).')
param postgresHost string

@description('PostgreSQL administrator login (process).')
param postgresAdminLogin string

@secure()
@description('PostgreSQL administrator password.')
param postgresAdminPassword string

@description('Login of the read-only PostgreSQL role the dashboard uses (a migration creates it; process sets its password).')
param postgresReadonlyLogin string

@secure()
@description('Password of that role.')
param postgresReadonlyPassword string

@secure()
@description('Fleet key device keys are derived from (ingest).')
param fleetKey string

@secure()
@description('Token operators acknowledge alerts with (dashboard).')
param operatorToken string

@secure()
@description('Token readers sign in to the dashboard with (dashboard on AKS).')
param viewerToken string

@secure()
@description('Splunk HEC token (analyze); written as splunk-hec-token only when splunkReaders is not empty.')
param splunkHecToken string = ''

@description('Principal ids that may read splunk-hec-token: analyze\'s when forwarding to Splunk is on, else none (and the secret is not written).')
param splunkReaders array = []

@description('Who may read what: one {secret, principalId} per grant of Key Vault Secrets User on that one secret (nobody gets a role on the vault itself).')
param readers array

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

resource viewerTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'viewer-token'
  properties: { value: viewerToken }
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

// The same password alone, for process, which gives the role it at start
// (it migrates the database, so it creates the role too).
resource readonlyPasswordSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'postgres-readonly-password'
  properties: { value: postgresReadonlyPassword }
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

// Optional: only written when someone reads it (forwarding to Splunk is on).
resource splunkTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(splunkReaders)) {
  parent: vault
  name: 'splunk-hec-token'
  properties: { value: splunkHecToken }
}

// Read access per secret, not per vault: one role assignment for each
// (secret, reader) pair in `readers` and the Splunk token's readers.
var secretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var grants = concat(readers, map(splunkReaders, p => { secret: 'splunk-hec-token', principalId: p }))

resource readable 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = [for g in grants: {
  parent: vault
  name: g.secret
}]

resource secretReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (g, i) in grants: {
  name: guid(vault.id, g.secret, g.principalId, secretsUser)
  scope: readable[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUser)
    principalId: g.principalId
    principalType: 'ServicePrincipal'
  }
  // A secret must exist before a role can be assigned on it.
  dependsOn: [fleetKeySecret, operatorTokenSecret, viewerTokenSecret, eventHubsSecret, databaseUrlSecret, databaseUrlReadonlySecret, readonlyPasswordSecret, redisUrlSecret, splunkTokenSecret]
}]
