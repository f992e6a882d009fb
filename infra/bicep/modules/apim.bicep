// API Management in front of ingest: subscription keys required, a rate
// limit per subscription and one per device, ingest's cheap checks at the
// edge, and the device's own Authorization header passed on
// (policies/ingest-api.xml says what and why).
// It is injected into the environment's virtual network in External mode: the
// gateway stays public for devices, and it reaches the KEDA HTTP add-on
// interceptor at the private address of an internal load balancer
// (keda/base/interceptor.yaml), over HTTPS: the backend entity checks the
// interceptor's certificate chain against the environment's own CA (held in
// the service's CA certificate store) and its name against the address.
// Injection needs the Developer or Premium tier.
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

@description('Address of the KEDA HTTP add-on interceptor reachable from API Management: its internal load balancer in the virtual network (not a cluster-internal DNS name), https.')
param ingestBackendUrl string

@description('CA certificates (base64 DER) the interceptor\'s TLS certificate is checked against.')
param interceptorCaCertificates array

@description('Host header the interceptor routes to ingest by (the HTTPScaledObject\'s hosts).')
param ingestHost string

@description('Requests per minute one subscription may send.')
param rateLimitPerMinute int

@description('Requests per minute one device may send (keyed on the device id in its SAS token).')
param deviceRateLimitPerMinute int

@description('Requests per day one device may send.')
param deviceQuotaPerDay int

@description('Largest body accepted at the edge, in bytes (ingest\'s TRIBUTARY_MAX_BODY_BYTES).')
param maxBodyBytes int

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
    // The private CA, trusted for backend certificates only (store Root).
    certificates: [for c in interceptorCaCertificates: { encodedCertificate: c, storeName: 'Root' }]
  }
}

// The interceptor: HTTPS, its certificate checked (chain to the CA above,
// name against the address). The policy sends every request here.
resource interceptor 'Microsoft.ApiManagement/service/backends@2023-05-01-preview' = {
  parent: service
  name: 'interceptor'
  properties: {
    url: ingestBackendUrl
    protocol: 'http'
    tls: { validateCertificateChain: true, validateCertificateName: true }
  }
}

resource api 'Microsoft.ApiManagement/service/apis@2023-05-01-preview' = {
  parent: service
  name: 'ingest'
  properties: {
    displayName: 'Tributary ingest'
    path: 'telemetry'
    protocols: ['https']
    // The policy sets the backend entity above; this is its address too.
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

// The values the policy names as {{name}}: settings, not secrets.
var namedValues = {
  'ingest-host': ingestHost
  'ingest-subscription-calls-per-minute': string(rateLimitPerMinute)
  'ingest-device-calls-per-minute': string(deviceRateLimitPerMinute)
  'ingest-device-calls-per-day': string(deviceQuotaPerDay)
  'ingest-max-body-bytes': string(maxBodyBytes)
}

resource named 'Microsoft.ApiManagement/service/namedValues@2023-05-01-preview' = [for nv in items(namedValues): {
  parent: service
  name: nv.key
  properties: { displayName: nv.key, value: nv.value, secret: false }
}]

resource policy 'Microsoft.ApiManagement/service/apis/policies@2023-05-01-preview' = {
  parent: api
  name: 'policy'
  properties: {
    format: 'rawxml'
    value: loadTextContent('../policies/ingest-api.xml')
  }
  // API Management resolves {{name}} and the backend id when the policy is saved: those first.
  dependsOn: [named, interceptor]
}

output gatewayUrl string = service.properties.gatewayUrl
