// The lake: a storage account with hierarchical namespace (Azure Data Lake
// Storage Gen2) whose container `lake` holds the Delta tables the lake
// function writes (`tributary/raw`, `tributary/aggregates`), for Spark on
// HDInsight, Synapse, Databricks or Fabric. Shared-key access is off
// (identities only); the lake's identity may write the container and nothing
// else; blobs move to the cool tier after `coolAfterDays` (the tables stay
// readable, at cool tier prices).
@description('Storage account name (3-24 lowercase letters and digits).')
param name string

@description('Azure region.')
param location string

@description('Storage account SKU (redundancy).')
param sku string

@description('Days after its last change a blob of the lake moves to the cool tier.')
param coolAfterDays int

@description('Principal id of the identity that writes the tables (lake).')
param writerPrincipalId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  kind: 'StorageV2'
  sku: { name: sku }
  properties: {
    isHnsEnabled: true
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    // Reached by the AKS pods over the public endpoint (Entra ID tokens only,
    // shared keys off), as Cosmos DB is. Stated, not left to the default.
    publicNetworkAccess: 'Enabled'
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: 'lake'
  properties: { publicAccess: 'None' }
}

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          enabled: true
          name: 'lake-to-cool'
          type: 'Lifecycle'
          definition: {
            filters: { blobTypes: ['blockBlob'], prefixMatch: ['lake/'] }
            actions: { baseBlob: { tierToCool: { daysAfterModificationGreaterThan: coolAfterDays } } }
          }
        }
      ]
    }
  }
}

// Storage Blob Data Contributor, on the lake's container only.
resource writer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: container
  name: guid(container.id, writerPrincipalId, 'blob-data-contributor')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: writerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// What the lake function's TRIBUTARY_LAKE_URL takes (infra/deploy.sh sets it).
output url string = 'abfss://${container.name}@${account.name}.dfs.${environment().suffixes.storage}/tributary'
