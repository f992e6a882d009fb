// PostgreSQL flexible server for aggregates, alerts and devices, with private
// access only: the server sits in a subnet delegated to it, its name resolves
// through a private DNS zone linked to the environment's virtual network, and
// it has no public endpoint and no firewall rules. Only what is in that
// network (the AKS nodes and pods) reaches it. The network mode is fixed when
// a server is created: a server made with public access must be replaced
// (dump and restore) to get here.
@description('Server name.')
param name string

@description('Azure region.')
param location string

@description('SKU name and tier.')
param sku object

@secure()
@description('Administrator password (the bootstrap Key Vault reference in the parameter files).')
param adminPassword string

@description('Virtual network the private DNS zone is linked to (the one holding the AKS nodes).')
param vnetId string

@description('Subnet delegated to Microsoft.DBforPostgreSQL/flexibleServers that the server is placed in.')
param delegatedSubnetId string

// The zone the server registers its private address in. Its name must end in
// .postgres.database.azure.com; the server's usual name
// (<name>.postgres.database.azure.com) then resolves to the private address
// inside the linked network.
resource zone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  name: '${name}.private.postgres.database.azure.com'
  location: 'global'
}

resource zoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = {
  parent: zone
  name: 'vnet'
  location: 'global'
  properties: {
    virtualNetwork: { id: vnetId }
    registrationEnabled: false
  }
}

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2023-12-01-preview' = {
  name: name
  location: location
  sku: sku
  properties: {
    version: '16'
    administratorLogin: 'tributary'
    administratorLoginPassword: adminPassword
    storage: { storageSizeGB: 64 }
    backup: { backupRetentionDays: 7, geoRedundantBackup: 'Disabled' }
    highAvailability: { mode: 'Disabled' }
    network: {
      delegatedSubnetResourceId: delegatedSubnetId
      privateDnsZoneArmResourceId: zone.id
      publicNetworkAccess: 'Disabled'
    }
  }
  // The zone must be linked before the server registers its address in it.
  dependsOn: [zoneLink]
}

resource db 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2023-12-01-preview' = {
  parent: server
  name: 'tributary'
}

// TLS is required for every connection.
resource requireTls 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2023-12-01-preview' = {
  parent: server
  name: 'require_secure_transport'
  properties: { value: 'on', source: 'user-override' }
}

// The extensions the migrations create (shared/migrations: CREATE EXTENSION):
// Azure lets a database create only those listed here. One configuration at
// a time: the server refuses concurrent changes.
resource extensions 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2023-12-01-preview' = {
  parent: server
  name: 'azure.extensions'
  properties: { value: 'PG_TRGM', source: 'user-override' }
  dependsOn: [requireTls]
}

output host string = server.properties.fullyQualifiedDomainName
output adminLogin string = server.properties.administratorLogin
