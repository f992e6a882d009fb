// Metrics and alerts for operators: Azure Monitor managed Prometheus collects
// every function's /metrics (pod annotations, keda/base) and KEDA's lag
// (keda/base/monitoring.yaml) from the cluster into an Azure Monitor
// workspace; Azure Managed Grafana reads it (the dashboard is
// infra/monitoring/grafana/tributary.json, imported by infra/deploy.sh); the
// alert rules are infra/monitoring/alert-rules.json, the same file promtool
// tests offline, evaluated by Azure as a Prometheus rule group that notifies
// an action group.
@description('Name prefix of the monitoring resources.')
param name string

@description('Azure region.')
param location string

@description('The AKS cluster whose metrics are collected (its name; the metrics add-on is on in aks.bicep).')
param aksName string

@description('E-mail addresses the alert rules notify (the on-call rota\'s list); empty: the rules fire, visible in the portal, and notify no one.')
param alertEmails array

@description('Object ids that get Grafana Admin on the Grafana instance: {principalId, principalType (User, Group or ServicePrincipal)}; infra/deploy.sh adds the identity it runs as, so it can import the dashboard.')
param grafanaAdmins array

resource aks 'Microsoft.ContainerService/managedClusters@2024-09-01' existing = {
  name: aksName
}

resource workspace 'Microsoft.Monitor/accounts@2023-04-03' = {
  name: '${name}-amw'
  location: location
}

resource endpoint 'Microsoft.Insights/dataCollectionEndpoints@2022-06-01' = {
  name: '${name}-dce'
  location: location
  kind: 'Linux'
  properties: {}
}

resource rule 'Microsoft.Insights/dataCollectionRules@2022-06-01' = {
  name: '${name}-dcr'
  location: location
  kind: 'Linux'
  properties: {
    dataCollectionEndpointId: endpoint.id
    dataSources: {
      prometheusForwarder: [
        { name: 'PrometheusDataSource', streams: ['Microsoft-PrometheusMetrics'], labelIncludeFilter: {} }
      ]
    }
    destinations: {
      monitoringAccounts: [
        { accountResourceId: workspace.id, name: 'MonitoringAccount1' }
      ]
    }
    dataFlows: [
      { streams: ['Microsoft-PrometheusMetrics'], destinations: ['MonitoringAccount1'] }
    ]
  }
}

// The cluster's metrics agent sends through the rule and reads its
// configuration from the endpoint.
resource ruleAssociation 'Microsoft.Insights/dataCollectionRuleAssociations@2022-06-01' = {
  name: 'MSProm-${location}-${aksName}'
  scope: aks
  properties: {
    dataCollectionRuleId: rule.id
    description: 'Prometheus metrics of the cluster to the Azure Monitor workspace'
  }
}

resource endpointAssociation 'Microsoft.Insights/dataCollectionRuleAssociations@2022-06-01' = {
  name: 'configurationAccessEndpoint'
  scope: aks
  properties: {
    dataCollectionEndpointId: endpoint.id
  }
}

resource grafana 'Microsoft.Dashboard/grafana@2023-09-01' = {
  name: '${name}-grafana'
  location: location
  sku: { name: 'Standard' }
  identity: { type: 'SystemAssigned' }
  properties: {
    apiKey: 'Disabled'
    publicNetworkAccess: 'Enabled'
    grafanaIntegrations: {
      azureMonitorWorkspaceIntegrations: [
        { azureMonitorWorkspaceResourceId: workspace.id }
      ]
    }
  }
}

// Grafana reads the workspace, and nothing else.
var monitoringDataReader = 'b0d8363b-8ddd-447d-831f-62ca05bff136'
var grafanaAdmin = '22926164-76b3-42b3-bc55-97df8dab3e41'

resource grafanaReads 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, grafana.id, monitoringDataReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringDataReader)
    principalId: grafana.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource admins 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for a in grafanaAdmins: {
  name: guid(grafana.id, a.principalId, grafanaAdmin)
  scope: grafana
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grafanaAdmin)
    principalId: a.principalId
    principalType: a.principalType
  }
}]

resource oncall 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${name}-oncall'
  location: 'global'
  properties: {
    groupShortName: 'tributary'
    enabled: true
    emailReceivers: [for (e, i) in alertEmails: { name: 'oncall-${i}', emailAddress: e, useCommonAlertSchema: true }]
  }
}

// The rule file promtool tests (tests/deploy/test_monitoring.py), turned
// into Azure's shape: durations in ISO 8601, severity by label.
var rules = loadJsonContent('../../monitoring/alert-rules.json').groups[0]
var severities = { critical: 1, warning: 3 }

resource alerts 'Microsoft.AlertsManagement/prometheusRuleGroups@2023-03-01' = {
  name: '${name}-alerts'
  location: location
  properties: {
    description: 'Tributary: lag growing, ingest 5xx and slowness, dead letters, functions not ready, a stale dashboard.'
    scopes: [workspace.id, aks.id]
    clusterName: aksName
    enabled: true
    interval: 'PT${toUpper(rules.interval)}'
    rules: [for r in rules.rules: {
      alert: r.alert
      expression: r.expr
      for: 'PT${toUpper(r.for)}'
      severity: severities[r.labels.severity]
      labels: r.labels
      annotations: r.annotations
      enabled: true
      actions: [{ actionGroupId: oncall.id }]
      resolveConfiguration: { autoResolved: true, timeToResolve: 'PT10M' }
    }]
  }
}

output workspaceId string = workspace.id
output grafanaName string = grafana.name
output grafanaEndpoint string = grafana.properties.endpoint
