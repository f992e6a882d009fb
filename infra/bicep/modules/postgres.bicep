// PostgreSQL flexible server for aggregates, alerts and devices.
param name string
param location string
param sku object
@secure()
param adminPassword string

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
  }
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

output host string = server.properties.fullyQualifiedDomainName
output adminLogin string = server.properties.administratorLogin
