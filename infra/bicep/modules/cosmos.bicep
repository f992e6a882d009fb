// Cosmos DB (NoSQL) for raw readings: container `raw` partitioned by
// /deviceId with a default TTL; key auth off (identities only), and the
// workload identity gets the built-in data contributor role on this account.
param name string
param location string
param defaultTtlSeconds int
param principalId string

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  name: name
  location: location
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    disableLocalAuth: true
    // Reached by the AKS pods over the public endpoint (Entra ID tokens only);
    // no IP or VNet rules. Stated, not left to the default.
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

// Cosmos DB Built-in Data Contributor (data plane), scoped to the account.
resource dataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: account
  name: guid(account.id, principalId, 'data-contributor')
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002'
    principalId: principalId
    scope: account.id
  }
}

output endpoint string = account.properties.documentEndpoint
