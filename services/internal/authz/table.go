package authz

import (
	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
)

const (
	methodChangePassword = adminv1.AdminService_ChangePassword_FullMethodName
	methodWhoAmI         = adminv1.AdminService_WhoAmI_FullMethodName
	methodLogout         = adminv1.AdminService_Logout_FullMethodName
)

// Table is who may call what. Health and reflection are not here: the interceptors skip them (health
// is open; reflection needs any authenticated caller). A test fails when a registered method is missing.
var Table = map[string]Rule{
	// CertService
	certv1.CertService_GetTrustBundle_FullMethodName:            {Who: Admin | Auditor | Nodes},
	certv1.CertService_PrepareCA_FullMethodName:                 {Who: Admin},
	certv1.CertService_ActivateCA_FullMethodName:                {Who: Admin},
	certv1.CertService_RetireCA_FullMethodName:                  {Who: Admin},
	certv1.CertService_GetCAStatus_FullMethodName:               {Who: Admin | Auditor},
	certv1.CertService_CreateNode_FullMethodName:                {Who: Admin},
	certv1.CertService_GetNode_FullMethodName:                   {Who: Admin | Auditor | NodeSelf},
	certv1.CertService_ListNodes_FullMethodName:                 {Who: Admin | Auditor},
	certv1.CertService_UpdateNode_FullMethodName:                {Who: Admin},
	certv1.CertService_DecommissionNode_FullMethodName:          {Who: Admin},
	certv1.CertService_CreateJoinToken_FullMethodName:           {Who: Admin},
	certv1.CertService_Bootstrap_FullMethodName:                 {Who: Anyone},
	certv1.CertService_IssueCertificate_FullMethodName:          {Who: Admin | NodeSelf},
	certv1.CertService_GetCertificate_FullMethodName:            {Who: Admin | Auditor | Nodes, OwnerChecked: true},
	certv1.CertService_ListCertificates_FullMethodName:          {Who: Admin | Auditor},
	certv1.CertService_RevokeCertificate_FullMethodName:         {Who: Admin},
	certv1.CertService_GetCRL_FullMethodName:                    {Who: Admin | Auditor | Nodes},
	certv1.CertService_UploadExternalCertificate_FullMethodName: {Who: Admin},
	certv1.CertService_ListExternalCertificates_FullMethodName:  {Who: Admin | Auditor},
	certv1.CertService_DeleteExternalCertificate_FullMethodName: {Who: Admin},
	certv1.CertService_AddWebhookCA_FullMethodName:              {Who: Admin},
	certv1.CertService_ListWebhookCAs_FullMethodName:            {Who: Admin | Auditor},
	certv1.CertService_DeleteWebhookCA_FullMethodName:           {Who: Admin},
	certv1.CertService_SetDatabaseCA_FullMethodName:             {Who: Admin},
	certv1.CertService_GetDatabaseCA_FullMethodName:             {Who: Admin | Auditor | Nodes},
	certv1.CertService_WatchCredentials_FullMethodName:          {Who: NodeSelf},
	certv1.CertService_AckCredentials_FullMethodName:            {Who: NodeSelf},

	// SecretService
	secretv1.SecretService_CreateSecret_FullMethodName:         {Who: Admin},
	secretv1.SecretService_GetSecret_FullMethodName:            {Who: Admin | Auditor},
	secretv1.SecretService_ListSecrets_FullMethodName:          {Who: Admin | Auditor},
	secretv1.SecretService_UpdateSecret_FullMethodName:         {Who: Admin},
	secretv1.SecretService_DeleteSecret_FullMethodName:         {Who: Admin},
	secretv1.SecretService_RotateSecret_FullMethodName:         {Who: Admin},
	secretv1.SecretService_PromoteSecretVersion_FullMethodName: {Who: Admin},
	secretv1.SecretService_GetRotationStatus_FullMethodName:    {Who: Admin | Auditor},
	secretv1.SecretService_RevealSecret_FullMethodName:         {Who: Admin},
	secretv1.SecretService_WatchSecrets_FullMethodName:         {Who: NodeSelf},
	secretv1.SecretService_AckSecrets_FullMethodName:           {Who: NodeSelf},
	secretv1.SecretService_ListClockSkew_FullMethodName:        {Who: Admin | Auditor},

	// PolicyService
	policyv1.PolicyService_GetPolicy_FullMethodName:                {Who: Admin | Auditor},
	policyv1.PolicyService_SetPolicy_FullMethodName:                {Who: Admin},
	policyv1.PolicyService_ValidatePolicy_FullMethodName:           {Who: Admin | Auditor},
	policyv1.PolicyService_DiffPolicy_FullMethodName:               {Who: Admin | Auditor},
	policyv1.PolicyService_ListPolicyHistory_FullMethodName:        {Who: Admin | Auditor},
	policyv1.PolicyService_RollbackPolicy_FullMethodName:           {Who: Admin},
	policyv1.PolicyService_RenderPolicy_FullMethodName:             {Who: Admin | Auditor | NodeSelf},
	policyv1.PolicyService_ImportDBConnectionOption_FullMethodName: {Who: Admin | Auditor},
	policyv1.PolicyService_WatchPolicy_FullMethodName:              {Who: NodeSelf},
	policyv1.PolicyService_AckPolicy_FullMethodName:                {Who: NodeSelf},
	policyv1.PolicyService_ListPolicyStatus_FullMethodName:         {Who: Admin | Auditor},

	// MeshService: only Coreapps are mesh members.
	meshv1.MeshService_WatchPeers_FullMethodName:       {Who: CoreappSelf},
	meshv1.MeshService_ReportPeerHealth_FullMethodName: {Who: CoreappSelf},
	meshv1.MeshService_GetMeshStatus_FullMethodName:    {Who: Admin | Auditor},
	meshv1.MeshService_GetMeshConfig_FullMethodName:    {Who: Admin | Auditor | Coreapp},
	meshv1.MeshService_SetMeshConfig_FullMethodName:    {Who: Admin},

	// AdminService
	adminv1.AdminService_Login_FullMethodName:            {Who: Anyone},
	adminv1.AdminService_Logout_FullMethodName:           {Who: Authenticated},
	adminv1.AdminService_ChangePassword_FullMethodName:   {Who: Admin | UserSelf},
	adminv1.AdminService_WhoAmI_FullMethodName:           {Who: Authenticated},
	adminv1.AdminService_CreateUser_FullMethodName:       {Who: Admin},
	adminv1.AdminService_ListUsers_FullMethodName:        {Who: Admin | Auditor},
	adminv1.AdminService_DeleteUser_FullMethodName:       {Who: Admin},
	adminv1.AdminService_RevokeTokens_FullMethodName:     {Who: Admin},
	adminv1.AdminService_ListAuditEvents_FullMethodName:  {Who: Admin | Auditor},
	adminv1.AdminService_WatchAuditEvents_FullMethodName: {Who: Admin | Auditor},
	adminv1.AdminService_GetSealStatus_FullMethodName:    {Who: Admin | Auditor},
	adminv1.AdminService_RewrapSealed_FullMethodName:     {Who: Admin},
	adminv1.AdminService_GetStatus_FullMethodName:        {Who: Admin | Auditor},
}
