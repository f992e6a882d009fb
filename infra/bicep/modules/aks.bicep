// AKS with the managed KEDA add-on, workload identity (OIDC issuer), the
// Istio-based service mesh add-on, Container Insights and the managed
// Prometheus metrics add-on (monitoring.bicep says where they go), its nodes in the
// environment's virtual network; the kubelet may pull from the registry, and
// each workload identity is federated with exactly one service account.
@description('Cluster name.')
param name string

@description('Azure region.')
param location string

@description('Kubernetes version of the cluster.')
param kubernetesVersion string

@description('VM size of the node pool.')
param nodeVmSize string

@description('Nodes at start (the autoscaler goes up to five times as many).')
param nodeCount int

@description('Log Analytics workspace of Container Insights.')
param logAnalyticsId string

@description('Registry the kubelet pulls the function images from (AcrPull on it alone).')
param acrId string

@description('Subnet of the nodes; with Azure CNI (not overlay) the pods take their addresses from it too.')
param nodeSubnetId string

@description('Subnet the internal load balancer in front of the KEDA HTTP add-on interceptor takes its fixed address from (keda/base/interceptor.yaml).')
param interceptorSubnetId string

@description('The federations: one {identityName, namespace, serviceAccount} per workload identity; each identity trusts tokens of that one service account from this cluster.')
param federatedServiceAccounts array

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
        vnetSubnetID: nodeSubnetId
      }
    ]
    oidcIssuerProfile: { enabled: true }
    securityProfile: { workloadIdentity: { enabled: true } }
    workloadAutoScalerProfile: { keda: { enabled: true } }
    serviceMeshProfile: {
      mode: 'Istio'
      istio: { revisions: ['asm-1-25'] }
    }
    // Managed Prometheus: the metrics agent (ama-metrics) and kube-state-metrics;
    // what it scrapes beyond the defaults is keda/base/monitoring.yaml.
    azureMonitorProfile: {
      metrics: {
        enabled: true
        kubeStateMetrics: { metricLabelsAllowlist: '', metricAnnotationsAllowList: '' }
      }
    }
    addonProfiles: {
      omsagent: { enabled: true, config: { logAnalyticsWorkspaceResourceID: logAnalyticsId } }
      azureKeyvaultSecretsProvider: { enabled: true }
    }
    // Service addresses are cluster-internal and must not overlap the virtual
    // network (main.bicep: addressPlan), or pods could not reach what is there.
    networkProfile: {
      networkPlugin: 'azure'
      networkPolicy: 'azure'
      loadBalancerSku: 'standard'
      serviceCidr: '10.0.0.0/16'
      dnsServiceIP: '10.0.0.10'
    }
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

// In a virtual network of its own the cluster's identity must be allowed to
// use the subnets (the Azure CLI grants this when it creates such a cluster,
// a template has to): Network Contributor on the node subnet and on the
// interceptor's load balancer subnet only, not on the network.
var networkContributor = '4d97b98b-1d4f-4787-a291-c67834d212e7'

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' existing = {
  name: split(nodeSubnetId, '/')[8]
}

resource nodeSubnet 'Microsoft.Network/virtualNetworks/subnets@2023-11-01' existing = {
  parent: vnet
  name: last(split(nodeSubnetId, '/'))
}

resource interceptorSubnet 'Microsoft.Network/virtualNetworks/subnets@2023-11-01' existing = {
  parent: vnet
  name: last(split(interceptorSubnetId, '/'))
}

resource nodeSubnetAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(nodeSubnetId, aks.id, networkContributor)
  scope: nodeSubnet
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', networkContributor)
    principalId: aks.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource interceptorSubnetAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(interceptorSubnetId, aks.id, networkContributor)
  scope: interceptorSubnet
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', networkContributor)
    principalId: aks.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource identities 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = [for f in federatedServiceAccounts: {
  name: f.identityName
}]

// Token exchange: a pod running as system:serviceaccount:<namespace>:<name>
// gets tokens for that one identity. One at a time: Azure refuses concurrent
// federated credential writes.
@batchSize(1)
resource federation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = [for (f, i) in federatedServiceAccounts: {
  parent: identities[i]
  name: 'aks-${f.namespace}-${f.serviceAccount}'
  properties: {
    issuer: aks.properties.oidcIssuerProfile.issuerURL
    subject: 'system:serviceaccount:${f.namespace}:${f.serviceAccount}'
    audiences: ['api://AzureADTokenExchange']
  }
}]

output name string = aks.name
