// One user-assigned identity a workload runs as (workload identity). main.bicep
// creates one per function and one for KEDA's kafka scaler; aks.bicep federates
// each with exactly one service account, and each gets only the data-plane
// roles its workload needs, on the resources it needs (main.bicep).
@description('Identity name.')
param name string

@description('Azure region.')
param location string

resource id 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
}

output id string = id.id
output name string = id.name
output principalId string = id.properties.principalId
output clientId string = id.properties.clientId
