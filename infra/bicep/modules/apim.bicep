// API Management in front of ingest: subscription keys required, a rate
// limit per subscription, and the device's own Authorization header passed on.
param name string
param location string
param sku string
param publisherEmail string
@description('Address of the KEDA HTTP add-on interceptor reachable from API Management (not a cluster-internal DNS name).')
param ingestBackendUrl string
@description('Host header the interceptor routes to ingest by (the HTTPScaledObject\'s hosts).')
param ingestHost string
param rateLimitPerMinute int

resource service 'Microsoft.ApiManagement/service@2023-05-01-preview' = {
  name: name
  location: location
  sku: { name: sku, capacity: 1 }
  properties: {
    publisherEmail: publisherEmail
    publisherName: 'Tributary'
  }
}

resource api 'Microsoft.ApiManagement/service/apis@2023-05-01-preview' = {
  parent: service
  name: 'ingest'
  properties: {
    displayName: 'Tributary ingest'
    path: 'telemetry'
    protocols: ['https']
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
