// API Management in front of ingest: subscription keys required, a rate
// limit per subscription, and the device's own Authorization header passed on.
// It is injected into the environment's virtual network in External mode: the
// gateway stays public for devices, and it reaches the KEDA HTTP add-on
// interceptor at the private address of an internal load balancer
// (keda/base/interceptor.yaml). Injection needs the Developer or Premium tier.
@description('Service name.')
param name string

@description('Azure region.')
param location string

@description('Developer (no SLA, dev) or Premium: the tiers that can be injected into a virtual network.')
@allowed(['Developer', 'Premium'])
param sku string

@description('Publisher e-mail shown by API Management.')
param publisherEmail string

@description('Subnet API Management is injected into (with the network security group it requires).')
param subnetId string

@description('Address of the KEDA HTTP add-on interceptor reachable from API Management: its internal load balancer in the virtual network (not a cluster-internal DNS name).')
param ingestBackendUrl string

@description('Host header the interceptor routes to ingest by (the HTTPScaledObject\'s hosts).')
param ingestHost string

@description('Requests per minute one subscription may send.')
param rateLimitPerMinute int

// A virtual-network-injected service (stv2) takes a Standard public address
// of ours for its gateway and management endpoint.
resource publicIp 'Microsoft.Network/publicIPAddresses@2023-11-01' = {
  name: '${name}-ip'
  location: location
  sku: { name: 'Standard' }
  properties: {
    publicIPAllocationMethod: 'Static'
    dnsSettings: { domainNameLabel: name }
  }
}

resource service 'Microsoft.ApiManagement/service@2023-05-01-preview' = {
  name: name
  location: location
  sku: { name: sku, capacity: 1 }
  properties: {
    publisherEmail: publisherEmail
    publisherName: 'Tributary'
    virtualNetworkType: 'External'
    virtualNetworkConfiguration: { subnetResourceId: subnetId }
    publicIpAddressId: publicIp.id
  }
}

resource api 'Microsoft.ApiManagement/service/apis@2023-05-01-preview' = {
  parent: service
  name: 'ingest'
  properties: {
    displayName: 'Tributary ingest'
    path: 'telemetry'
    protocols: ['https']
    // Plain HTTP inside the virtual network: the interceptor serves no TLS.
    serviceUrl: ingestBackendUrl
    subscriptionRequired: true
  }
}

resource post 'Microsoft.ApiManagement/service/apis/operations@2023-05-01-preview' = {
  parent: api
  name: 'post-telemetry'
  properties: {
    displayName: 'Send readings'
    method: 'POST'
    urlTemplate: '/v1/telemetry'
  }
}

resource policy 'Microsoft.ApiManagement/service/apis/policies@2023-05-01-preview' = {
  parent: api
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: '<policies><inbound><base /><rate-limit-by-key calls="${rateLimitPerMinute}" renewal-period="60" counter-key="@(context.Subscription.Id)" /><set-header name="Host" exists-action="override"><value>${ingestHost}</value></set-header></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>'
  }
}

output gatewayUrl string = service.properties.gatewayUrl
