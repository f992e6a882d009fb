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
  }
}

output name string = cache.name
output host string = cache.properties.hostName
