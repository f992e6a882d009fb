// The dashboard as the seed's web app: a Linux Web App for Containers on App
// Service running the dashboard image from the registry, signed in with
// Microsoft Entra ID by App Service authentication (Easy Auth), reaching
// PostgreSQL (private) and Redis (private endpoint) through virtual network
// integration, and Cosmos DB as the dashboard's own identity (Data Reader,
// main.bicep). Deployed only once an app registration is named
// (entraClientId): the web app is public, and without sign-in it must not exist.
@description('Name prefix of the plan and the web app.')
param name string

@description('Azure region.')
param location string

@description('App Service plan SKU (Linux; P0v3 and up have virtual network integration and always-on).')
param sku string

@description('Subnet delegated to Microsoft.Web/serverFarms for virtual network integration.')
param subnetId string

@description('Resource id of the dashboard\'s user-assigned identity: it pulls the image, reads its Key Vault secrets and Cosmos DB.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

@description('Principal id of that identity (AcrPull on the registry).')
param identityPrincipalId string

@description('Registry login server holding tributary-dashboard.')
param acrLoginServer string

@description('The image tag to run (the commit the pipeline built; infra/deploy.sh passes it).')
param imageTag string

@description('Key Vault holding database-url-readonly and redis-url (Key Vault references in the app settings).')
param keyVaultName string

@description('Cosmos DB endpoint of the raw readings.')
param cosmosEndpoint string

@description('Client id of the dashboard\'s Entra ID app registration (sign-in; its app role operatorRole marks operators).')
param entraClientId string

@description('The app role whose holders may acknowledge and resolve alerts.')
param operatorRole string

@description('The app role whose holders may read the dashboard (operators read too); empty: every signed-in user of the tenant.')
param viewerRole string

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: split(acrLoginServer, '.')[0]
}

var acrPull = '7f951dda-4ed3-4680-a7ca-43fe172d538d'

resource pull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, identityId, acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPull)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: '${name}-plan'
  location: location
  kind: 'linux'
  sku: { name: sku }
  properties: { reserved: true }
}

// A secret's Key Vault reference, resolved by App Service as the dashboard's identity.
func secretRef(vault string, secret string) string => '@Microsoft.KeyVault(VaultName=${vault};SecretName=${secret})'

resource site 'Microsoft.Web/sites@2023-12-01' = {
  name: '${name}-dashboard'
  location: location
  kind: 'app,linux,container'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    virtualNetworkSubnetId: subnetId
    vnetRouteAllEnabled: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      linuxFxVersion: 'DOCKER|${acrLoginServer}/tributary-dashboard:${imageTag}'
      acrUseManagedIdentityCreds: true
      acrUserManagedIdentityID: identityClientId
      alwaysOn: true
      ftpsState: 'Disabled'
      minTlsVersion: '1.2'
      healthCheckPath: '/readyz'
      appSettings: [
        { name: 'WEBSITES_PORT', value: '8081' }
        { name: 'PORT', value: '8081' }
        { name: 'DATABASE_URL', value: secretRef(keyVaultName, 'database-url-readonly') }
        { name: 'REDIS_URL', value: secretRef(keyVaultName, 'redis-url') }
        { name: 'TRIBUTARY_COSMOS_ENDPOINT', value: cosmosEndpoint }
        { name: 'TRIBUTARY_COSMOS_AUTH', value: 'identity' }
        { name: 'AZURE_CLIENT_ID', value: identityClientId }
        // Signed in by App Service: its principal headers are trusted, and
        // operators are the holders of the app role.
        { name: 'TRIBUTARY_AUTH', value: 'app-service' }
        { name: 'TRIBUTARY_OPERATOR_ROLE', value: operatorRole }
        // Reading needs this role too: a user of the tenant without it sees nothing.
        { name: 'TRIBUTARY_VIEWER_ROLE', value: viewerRole }
        // Under the front end's 230 s idle timeout, so live updates stay open.
        { name: 'TRIBUTARY_SSE_KEEPALIVE_SECS', value: '15' }
        { name: 'TRIBUTARY_LOG_FORMAT', value: 'json' }
      ]
    }
  }
  dependsOn: [pull]
}

resource auth 'Microsoft.Web/sites/config@2023-12-01' = {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      // The platform's health check reaches the probe without a user.
      excludedPaths: ['/healthz', '/readyz']
    }
    httpSettings: { requireHttps: true }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
          clientId: entraClientId
        }
        validation: { allowedAudiences: [entraClientId, 'api://${entraClientId}'] }
      }
    }
    login: { tokenStore: { enabled: true } }
  }
}

output appName string = site.name
output url string = 'https://${site.properties.defaultHostName}'
