// Log Analytics workspace for AKS (Container Insights) and diagnostics.
@description('Workspace name.')
param name string
@description('Azure region.')
param location string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: name
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

output id string = workspace.id
