// Container registry for the function images (admin user off: AKS pulls with its kubelet identity).
@description('Registry name (alphanumeric).')
param name string
@description('Azure region.')
param location string

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: name
  location: location
  sku: { name: 'Standard' }
  properties: { adminUserEnabled: false }
}

output id string = registry.id
output loginServer string = registry.properties.loginServer
