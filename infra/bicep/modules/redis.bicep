// Azure Cache for Redis: the dashboard's hot data (TLS only), reached only
// through a private endpoint in the environment's virtual network: public
// network access is off, and the cache's usual name
// (<name>.redis.cache.windows.net) resolves to the endpoint's private address
// inside that network through the privatelink.redis.cache.windows.net zone.
// Private endpoints work on every tier (Basic and Standard included).
@description('Cache name.')
param name string

@description('Azure region.')
param location string

@description('SKU (name, family, capacity).')
param sku object

@description('Virtual network the private DNS zone is linked to (the one holding the AKS nodes).')
param vnetId string

@description('Subnet the private endpoint takes its address from.')
param endpointSubnetId string

resource cache 'Microsoft.Cache/redis@2024-03-01' = {
  name: name
  location: location
  properties: {
    sku: sku
    enableNonSslPort: false
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Disabled'
  }
}

resource zone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  name: 'privatelink.redis.cache.windows.net'
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

resource endpoint 'Microsoft.Network/privateEndpoints@2023-11-01' = {
  name: '${name}-pe'
  location: location
  properties: {
    subnet: { id: endpointSubnetId }
    privateLinkServiceConnections: [
      {
        name: 'redis'
        properties: {
          privateLinkServiceId: cache.id
          groupIds: ['redisCache']
        }
      }
    ]
  }
}

// The endpoint's A record, kept in the zone by Azure.
resource endpointDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'redis'
        properties: { privateDnsZoneId: zone.id }
      }
    ]
  }
}

output name string = cache.name
output host string = cache.properties.hostName
