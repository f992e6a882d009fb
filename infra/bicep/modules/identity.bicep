// The user-assigned identity the functions run as (workload identity): it gets
// only the data-plane roles it needs, on the resources it needs.
param name string
param location string

resource id 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
}

output id string = id.id
output name string = id.name
output principalId string = id.properties.principalId
output clientId string = id.properties.clientId
