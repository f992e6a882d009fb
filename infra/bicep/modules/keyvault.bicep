// Key Vault for the fleet key and connection strings, with RBAC authorisation.
// Nobody gets a role on the vault itself: each workload identity may read only
// the secrets its workload uses, by a role assignment on each of those secrets
// (secrets.bicep).
@description('Vault name.')
param name string

@description('Azure region.')
param location string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
