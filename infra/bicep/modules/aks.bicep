// AKS with the managed KEDA add-on, workload identity (OIDC issuer), the
// Istio-based service mesh add-on and Container Insights; the kubelet may pull
// from the registry, and the functions' service account is federated with the
// workload identity.
param name string
param location string
param kubernetesVersion string
param nodeVmSize string
param nodeCount int
param logAnalyticsId string
param acrId string
param workloadIdentityId string
param workloadIdentityName string
param namespace string
param serviceAccount string

resource aks 'Microsoft.ContainerService/managedClusters@2024-09-01' = {
  name: name
  location: location
  identity: { type: 'SystemAssigned' }
  properties: {
    kubernetesVersion: kubernetesVersion
    dnsPrefix: name
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        vmSize: nodeVmSize
        count: nodeCount
        enableAutoScaling: true
        minCount: nodeCount
        maxCount: nodeCount * 5
        osType: 'Linux'
      }
    ]
    oidcIssuerProfile: { enabled: true }
    securityProfile: { workloadIdentity: { enabled: true } }
    workloadAutoScalerProfile: { keda: { enabled: true } }
    serviceMeshProfile: {
      mode: 'Istio'
      istio: { revisions: ['asm-1-25'] }
    }
    addonProfiles: {
      omsagent: { enabled: true, config: { logAnalyticsWorkspaceResourceID: logAnalyticsId } }
      azureKeyvaultSecretsProvider: { enabled: true }
    }
    networkProfile: { networkPlugin: 'azure', networkPolicy: 'azure' }
  }
}

// AcrPull for the kubelet identity, scoped to the one registry.
resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: last(split(acrId, '/'))
}

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(acrId, aks.id, 'acrpull')
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '7f951dda-4ed3-4680-a7ca-43fe172d538d')
    principalId: aks.properties.identityProfile.kubeletidentity.objectId
    principalType: 'ServicePrincipal'
  }
}

resource workload 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: workloadIdentityName
}

resource federation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: workload
  name: 'aks-${namespace}-${serviceAccount}'
  properties: {
    issuer: aks.properties.oidcIssuerProfile.issuerURL
    subject: 'system:serviceaccount:${namespace}:${serviceAccount}'
    audiences: ['api://AzureADTokenExchange']
  }
}

output name string = aks.name
output workloadIdentity string = workloadIdentityId
