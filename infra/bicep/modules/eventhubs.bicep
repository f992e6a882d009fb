// Event Hubs namespace with the Kafka endpoint: one event hub per topic, each
// with `partitions` partitions, and the workload identity as sender/receiver.
param name string
param location string
param sku string
param partitions int
param principalId string

var topics = ['telemetry.raw', 'telemetry.aggregates', 'telemetry.alerts', 'telemetry.deadletter']

resource ns 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: name
  location: location
  sku: { name: sku, tier: sku, capacity: 1 }
  properties: {
    kafkaEnabled: true
    minimumTlsVersion: '1.2'
  }
}

resource hubs 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = [for t in topics: {
  parent: ns
  name: t
  properties: {
    partitionCount: partitions
    messageRetentionInDays: 7
  }
}]

// Azure Event Hubs Data Owner is not needed: send and receive are enough.
var dataSender = '2b629674-e913-4c01-ae53-ef4638d8f975'
var dataReceiver = 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(ns.id, principalId, dataSender)
  scope: ns
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataSender)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource receiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(ns.id, principalId, dataReceiver)
  scope: ns
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataReceiver)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// The Kafka endpoint's SASL PLAIN login is a connection string (user
// $ConnectionString): a namespace rule that may only send and listen, not
// manage. Its connection string goes to Key Vault (secrets.bicep) for the
// functions and KEDA's kafka scaler.
resource kafkaRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = {
  parent: ns
  name: 'tributary-kafka'
  properties: { rights: ['Listen', 'Send'] }
}

output name string = ns.name
output kafkaRuleName string = kafkaRule.name
output bootstrap string = '${name}.servicebus.windows.net:9093'
