// Azure Cache for Redis: the dashboard's hot data (TLS only).
param name string
param location string
param sku object

resource cache 'Microsoft.Cache/redis@2024-03-01' = {
  name: name
  location: location
  properties: {
    sku: sku
    enableNonSslPort: false
    minimumTlsVersion: '1.2'
    // Reached by the AKS pods over the public endpoint (TLS and the access key);
    // no firewall rules, so any address may connect. Stated, not left to the default.
    publicNetworkAccess: 'Enabled'
  }
}

output name string = cache.name
output host string = cache.properties.hostName
