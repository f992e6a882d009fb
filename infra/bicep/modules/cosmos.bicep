// Cosmos DB (NoSQL) for raw readings: container `raw` partitioned by
// /deviceId with a default TTL; key auth off (identities only). The archive's
// identity writes (built-in Data Contributor), the dashboard's only reads
// (built-in Data Reader); no other identity has a role here.
@description('Account name.')
param name string

@description('Azure region.')
param location string

@description('Default TTL of the raw container, seconds.')
param defaultTtlSeconds int

@description('Principal id of the identity that writes raw readings (archive).')
param writerPrincipalId string

@description('Principal id of the identity that only reads raw readings (dashboard).')
param readerPrincipalId string

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  name: name
  location: location
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    disableLocalAuth: true
    // Reached by the AKS pods over the public endpoint (Entra ID tokens only,
    // key auth off); no IP or VNet rules. Stated, not left to the default.
    publicNetworkAccess: 'Enabled'
    isVirtualNetworkFilterEnabled: false
    consistencyPolicy: { defaultConsistencyLevel: 'Session' }
    locations: [{ locationName: location, failoverPriority: 0 }]
  }
}

resource db 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: account
  name: 'tributary'
  properties: { resource: { id: 'tributary' } }
}

resource raw 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: db
  name: 'raw'
  properties: {
    resource: {
      id: 'raw'
      partitionKey: { paths: ['/deviceId'], kind: 'Hash' }
      defaultTtl: defaultTtlSeconds
    }
    options: { autoscaleSettings: { maxThroughput: 4000 } }
  }
}

// Data-plane roles, scoped to the account (it holds the one database and
// container; the SDK also reads the account's metadata, which a container
// scope would not cover).
// Cosmos DB Built-in Data Contributor: the archive upserts readings.
resource dataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: account
  name: guid(account.id, writerPrincipalId, 'data-contributor')
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002'
    principalId: writerPrincipalId
    scope: account.id
  }
}

// Cosmos DB Built-in Data Reader: the dashboard queries a device's raw readings.
resource dataReader 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: account
  name: guid(account.id, readerPrincipalId, 'data-reader')
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000001'
    principalId: readerPrincipalId
    scope: account.id
  }
}

output endpoint string = account.properties.documentEndpoint
