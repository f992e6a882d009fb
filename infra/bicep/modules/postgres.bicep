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
    // Public access (no delegated subnet): reached through the firewall rule below.
    network: { publicNetworkAccess: 'Enabled' }
  }
}

// Network path for the AKS pods: the cluster reaches the server from its
// outbound (load balancer) address, an Azure address. Start and end 0.0.0.0 is
// Azure's documented "allow public access from any Azure service" rule. It
// admits any Azure-hosted client to the login prompt, not to the data:
// passwords and TLS (require_secure_transport) still apply. Private access
// (VNet integration) needs a delegated subnet, a private DNS zone and AKS in a
// custom VNet, and the server's network mode is fixed at creation.
resource allowAzureServices 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2023-12-01-preview' = {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: { startIpAddress: '0.0.0.0', endIpAddress: '0.0.0.0' }
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
