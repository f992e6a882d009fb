// Event Hubs namespace with the Kafka endpoint: one event hub per topic, each
// with `partitions` partitions. The functions and KEDA's kafka scaler log in
// with the connection string of a send-and-listen rule (SASL PLAIN), not with
// Entra ID, so no identity gets an Event Hubs data-plane role: it would be a
// second, unused way in.
@description('Namespace name.')
param name string

@description('Azure region.')
param location string

@description('Standard or Premium (both have the Kafka endpoint).')
param sku string

@description('Partitions of every event hub (topic).')
param partitions int

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

// Analyze's model and alert state for a warm takeover (its
// TRIBUTARY_ANALYZE_STATE_TOPIC default, `<group>.state`): compacted, so each
// series' newest snapshot is kept whatever its age, with as many partitions
// as telemetry.raw (a state partition per input partition). Created here
// because the functions' send-and-listen rule cannot create event hubs.
resource analyzeState 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: ns
  name: 'tributary-analyze.state'
  properties: {
    partitionCount: partitions
    retentionDescription: {
      cleanupPolicy: 'Compact'
      tombstoneRetentionTimeInHours: 24
    }
  }
}

// The device registry's changes (TRIBUTARY_DEVICES_TOPIC): compacted, so each
// device's newest record is kept for as long as the device is registered;
// every ingest replica reads it whole before it reports ready. One partition:
// it is small (about 100 bytes a device) and read whole by every reader.
resource devices 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: ns
  name: 'tributary.devices'
  properties: {
    partitionCount: 1
    retentionDescription: {
      cleanupPolicy: 'Compact'
      tombstoneRetentionTimeInHours: 24
    }
  }
}

// The alert rules (TRIBUTARY_RULES_TOPIC): compacted, each rule's newest
// record kept (a deleted rule's too, marked deleted); process's relay writes
// it from the results database and every analyze replica reads it whole
// before it consumes. One partition: at most 1,000 rules.
resource rules 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: ns
  name: 'tributary.rules'
  properties: {
    partitionCount: 1
    retentionDescription: {
      cleanupPolicy: 'Compact'
      tombstoneRetentionTimeInHours: 24
    }
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
