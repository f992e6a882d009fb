// The environment's virtual network. Everything that talks to PostgreSQL,
// Redis or the KEDA HTTP add-on interceptor is in it, so none of them needs a
// public address:
// - aks-nodes: the AKS nodes, and with Azure CNI (not overlay) every pod's address;
// - interceptor-ilb: only the internal load balancer in front of the
//   interceptor (keda/base/interceptor.yaml), so its fixed address can never
//   be taken by a node or a pod;
// - apim: API Management, injected in External mode (public gateway, private
//   backends), with the network security group it requires;
// - postgres: delegated to PostgreSQL flexible server (private access);
// - private-endpoints: Redis's private endpoint.
@description('Virtual network name.')
param name string

@description('Azure region.')
param location string

@description('Address space of the virtual network.')
param addressPrefix string

@description('Address prefix of each subnet: nodes, interceptor, apim, postgres, endpoints, appservice (main.bicep: addressPlan).')
param subnetPrefixes object

// API Management in a virtual network (stv2, External) needs these inbound
// rules on its subnet: clients on 443 (the gateway stays public in External
// mode), its management endpoint on 3443 from the ApiManagement service tag,
// and Azure's infrastructure load balancer on 6390. What it needs outbound
// (Storage, SQL, Key Vault, Azure Monitor) the default outbound rules allow.
resource apimNsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: '${name}-apim-nsg'
  location: location
  properties: {
    securityRules: [
      {
        name: 'clients-https'
        properties: {
          priority: 100
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'Internet'
          sourcePortRange: '*'
          destinationAddressPrefix: 'VirtualNetwork'
          destinationPortRange: '443'
        }
      }
      {
        name: 'apim-management'
        properties: {
          priority: 110
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'ApiManagement'
          sourcePortRange: '*'
          destinationAddressPrefix: 'VirtualNetwork'
          destinationPortRange: '3443'
        }
      }
      {
        name: 'azure-load-balancer'
        properties: {
          priority: 120
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: 'AzureLoadBalancer'
          sourcePortRange: '*'
          destinationAddressPrefix: 'VirtualNetwork'
          destinationPortRange: '6390'
        }
      }
    ]
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: name
  location: location
  properties: {
    addressSpace: { addressPrefixes: [addressPrefix] }
    // Subnets inline, not as child resources: a redeployment of the network
    // then never tries to remove a subnet that nodes or servers are using.
    subnets: [
      {
        name: 'aks-nodes'
        properties: { addressPrefix: subnetPrefixes.nodes }
      }
      {
        name: 'interceptor-ilb'
        properties: { addressPrefix: subnetPrefixes.interceptor }
      }
      {
        name: 'apim'
        properties: {
          addressPrefix: subnetPrefixes.apim
          networkSecurityGroup: { id: apimNsg.id }
        }
      }
      {
        name: 'postgres'
        properties: {
          addressPrefix: subnetPrefixes.postgres
          delegations: [
            {
              name: 'postgres-flexible-server'
              properties: { serviceName: 'Microsoft.DBforPostgreSQL/flexibleServers' }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: { addressPrefix: subnetPrefixes.endpoints }
      }
      {
        // The dashboard's web app reaches PostgreSQL and Redis through it
        // (App Service virtual network integration; nothing else may use it).
        name: 'appservice'
        properties: {
          addressPrefix: subnetPrefixes.appservice
          delegations: [
            {
              name: 'app-service'
              properties: { serviceName: 'Microsoft.Web/serverFarms' }
            }
          ]
        }
      }
    ]
  }
}

output id string = vnet.id
output nodesSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'aks-nodes')
output interceptorSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'interceptor-ilb')
output apimSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'apim')
output postgresSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'postgres')
output endpointsSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'private-endpoints')
output appServiceSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, 'appservice')
