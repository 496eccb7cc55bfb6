package matrix_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/grpcserver"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/testutil/wardentest"
)

// Caller classes of the matrix.
const (
	admin      = 'A'
	auditor    = 'U'
	webOwn     = 'W' // a Webapp node acting on itself
	webOther   = 'w' // a Webapp node naming another node
	coreOwn    = 'C'
	coreOther  = 'c'
	noCert     = 'N'
	revokedWeb = 'R' // a Webapp node whose identity was revoked
)

// open are the methods anyone may call over TLS. A caller presenting a revoked certificate is refused
// even there: authentication rejects the certificate before any method is considered.
const open = "AUWwCcN"

// expected lists, for every RPC, the caller classes that get past the control plane's gate. It is
// written by hand from the API's "caller:" contracts, on purpose not derived from authz.Table: changing
// either without the other fails this test.
var expected = map[string]string{
	certv1.CertService_GetTrustBundle_FullMethodName:            "AUWwCc",
	certv1.CertService_PrepareCA_FullMethodName:                 "A",
	certv1.CertService_ActivateCA_FullMethodName:                "A",
	certv1.CertService_RetireCA_FullMethodName:                  "A",
	certv1.CertService_GetCAStatus_FullMethodName:               "AU",
	certv1.CertService_CreateNode_FullMethodName:                "A",
	certv1.CertService_GetNode_FullMethodName:                   "AUWC",
	certv1.CertService_ListNodes_FullMethodName:                 "AU",
	certv1.CertService_UpdateNode_FullMethodName:                "A",
	certv1.CertService_DecommissionNode_FullMethodName:          "A",
	certv1.CertService_CreateJoinToken_FullMethodName:           "A",
	certv1.CertService_Bootstrap_FullMethodName:                 open,
	certv1.CertService_IssueCertificate_FullMethodName:          "AWC",
	certv1.CertService_GetCertificate_FullMethodName:            "AUWwCc",
	certv1.CertService_ListCertificates_FullMethodName:          "AU",
	certv1.CertService_RevokeCertificate_FullMethodName:         "A",
	certv1.CertService_GetCRL_FullMethodName:                    "AUWwCc",
	certv1.CertService_UploadExternalCertificate_FullMethodName: "A",
	certv1.CertService_ListExternalCertificates_FullMethodName:  "AU",
	certv1.CertService_DeleteExternalCertificate_FullMethodName: "A",
	certv1.CertService_AddWebhookCA_FullMethodName:              "A",
	certv1.CertService_ListWebhookCAs_FullMethodName:            "AU",
	certv1.CertService_DeleteWebhookCA_FullMethodName:           "A",
	certv1.CertService_SetDatabaseCA_FullMethodName:             "A",
	certv1.CertService_GetDatabaseCA_FullMethodName:             "AUWwCc",
	certv1.CertService_WatchCredentials_FullMethodName:          "WC",
	certv1.CertService_AckCredentials_FullMethodName:            "WC",

	secretv1.SecretService_CreateSecret_FullMethodName:         "A",
	secretv1.SecretService_GetSecret_FullMethodName:            "AU",
	secretv1.SecretService_ListSecrets_FullMethodName:          "AU",
	secretv1.SecretService_UpdateSecret_FullMethodName:         "A",
	secretv1.SecretService_DeleteSecret_FullMethodName:         "A",
	secretv1.SecretService_RotateSecret_FullMethodName:         "A",
	secretv1.SecretService_PromoteSecretVersion_FullMethodName: "A",
	secretv1.SecretService_GetRotationStatus_FullMethodName:    "AU",
	secretv1.SecretService_RevealSecret_FullMethodName:         "A",
	secretv1.SecretService_WatchSecrets_FullMethodName:         "WC",
	secretv1.SecretService_AckSecrets_FullMethodName:           "WC",
	secretv1.SecretService_ListClockSkew_FullMethodName:        "AU",

	policyv1.PolicyService_GetPolicy_FullMethodName:                "AU",
	policyv1.PolicyService_SetPolicy_FullMethodName:                "A",
	policyv1.PolicyService_ValidatePolicy_FullMethodName:           "AU",
	policyv1.PolicyService_DiffPolicy_FullMethodName:               "AU",
	policyv1.PolicyService_ListPolicyHistory_FullMethodName:        "AU",
	policyv1.PolicyService_RollbackPolicy_FullMethodName:           "A",
	policyv1.PolicyService_RenderPolicy_FullMethodName:             "AUWC",
	policyv1.PolicyService_ImportDBConnectionOption_FullMethodName: "AU",
	policyv1.PolicyService_WatchPolicy_FullMethodName:              "WC",
	policyv1.PolicyService_AckPolicy_FullMethodName:                "WC",
	policyv1.PolicyService_ListPolicyStatus_FullMethodName:         "AU",

	meshv1.MeshService_WatchPeers_FullMethodName:       "C",
	meshv1.MeshService_ReportPeerHealth_FullMethodName: "C",
	meshv1.MeshService_GetMeshStatus_FullMethodName:    "AU",
	meshv1.MeshService_GetMeshConfig_FullMethodName:    "AUCc",
	meshv1.MeshService_SetMeshConfig_FullMethodName:    "A",

	adminv1.AdminService_Login_FullMethodName:            open,
	adminv1.AdminService_Logout_FullMethodName:           "AUWwCc",
	adminv1.AdminService_ChangePassword_FullMethodName:   "A",
	adminv1.AdminService_WhoAmI_FullMethodName:           "AUWwCc",
	adminv1.AdminService_CreateUser_FullMethodName:       "A",
	adminv1.AdminService_ListUsers_FullMethodName:        "AU",
	adminv1.AdminService_DeleteUser_FullMethodName:       "A",
	adminv1.AdminService_RevokeTokens_FullMethodName:     "A",
	adminv1.AdminService_ListAuditEvents_FullMethodName:  "AU",
	adminv1.AdminService_WatchAuditEvents_FullMethodName: "AU",
	adminv1.AdminService_GetSealStatus_FullMethodName:    "AU",
	adminv1.AdminService_RewrapSealed_FullMethodName:     "A",
	adminv1.AdminService_GetStatus_FullMethodName:        "AU",
}

// mutating RPCs whose empty-ish request as an admin would change the deployment under the test's feet
// (a new CA, a new policy, a rewrap): the admin still must get past the gate, which is all the matrix
// checks, so they are called with a request the handler refuses after authorisation.
var adminHarmless = map[string]func(proto.Message){
	certv1.CertService_PrepareCA_FullMethodName: func(m proto.Message) {
		m.(*certv1.PrepareCARequest).Upload = &certv1.UploadedCA{CertPem: "not a certificate"}
	},
	policyv1.PolicyService_SetPolicy_FullMethodName: func(m proto.Message) {
		m.(*policyv1.SetPolicyRequest).ExpectedRevision = 1 // stale: refused with FailedPrecondition
	},
	policyv1.PolicyService_RollbackPolicy_FullMethodName: func(m proto.Message) {
		m.(*policyv1.RollbackPolicyRequest).ToNumber = 999999
	},
}

func TestMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end matrix: skipped in -short mode")
	}
	env := wardentest.Start(t, wardentest.Options{})
	td := env.Config.TrustDomain
	adminConn := env.AdminConn()
	cert := certv1.NewCertServiceClient(adminConn)
	ctx := t.Context()

	// The nodes exist in the registry, so that handlers past the gate behave normally.
	for _, n := range []struct {
		id   string
		role certv1.NodeRole
	}{{"web-own", certv1.NodeRole_NODE_ROLE_WEBAPP}, {"core-own", certv1.NodeRole_NODE_ROLE_COREAPP}, {"web-revoked", certv1.NodeRole_NODE_ROLE_WEBAPP}} {
		if _, err := cert.CreateNode(ctx, &certv1.CreateNodeRequest{NodeId: n.id, Role: n.role, Zone: "z", Addresses: []string{"127.0.0.1"}}); err != nil {
			t.Fatalf("create node %s: %v", n.id, err)
		}
	}
	revoked := bootstrapAndRevoke(t, env, cert, "web-revoked")

	callers := map[rune]struct {
		conn   *grpc.ClientConn
		nodeID string
	}{
		admin:      {adminConn, "nobody"},
		auditor:    {env.Dial(env.Mint(identity.AuditorID(td, "aud"))), "nobody"},
		webOwn:     {env.NodeConn(identity.RoleWebapp, "web-own"), "web-own"},
		webOther:   {env.NodeConn(identity.RoleWebapp, "web-own"), "core-own"},
		coreOwn:    {env.NodeConn(identity.RoleCoreapp, "core-own"), "core-own"},
		coreOther:  {env.NodeConn(identity.RoleCoreapp, "core-own"), "web-own"},
		noCert:     {env.AnonConn(), "web-own"},
		revokedWeb: {env.Dial(revoked), "web-revoked"},
	}

	methods := registeredMethods(t)
	if len(methods) != len(expected) {
		t.Errorf("the API has %d methods, the matrix lists %d", len(methods), len(expected))
	}
	for _, m := range methods {
		allowed, ok := expected[m.full]
		if !ok {
			t.Errorf("%s: missing from the matrix", m.full)
			continue
		}
		for class, c := range callers {
			t.Run(strings.TrimPrefix(m.full, "/")+"/"+string(class), func(t *testing.T) {
				req := request(t, m, c.nodeID)
				if class == admin {
					if f, ok := adminHarmless[m.full]; ok {
						f(req)
					}
				}
				gated, err := call(ctx, c.conn, m, req)
				want := strings.ContainsRune(allowed, class)
				switch {
				case want && gated:
					t.Fatalf("refused, want allowed: %v", err)
				case !want && !gated:
					t.Fatalf("allowed (result: %v), want refused", err)
				}
			})
		}
	}
}

type method struct {
	full   string
	input  protoreflect.MessageType
	stream bool
}

func registeredMethods(t *testing.T) []method {
	t.Helper()
	var out []method
	for _, sd := range []grpc.ServiceDesc{certv1.CertService_ServiceDesc, secretv1.SecretService_ServiceDesc, policyv1.PolicyService_ServiceDesc, meshv1.MeshService_ServiceDesc, adminv1.AdminService_ServiceDesc} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(sd.ServiceName))
		if err != nil {
			t.Fatal(err)
		}
		svc := d.(protoreflect.ServiceDescriptor)
		for i := range svc.Methods().Len() {
			md := svc.Methods().Get(i)
			mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, method{full: "/" + sd.ServiceName + "/" + string(md.Name()), input: mt, stream: md.IsStreamingServer()})
		}
	}
	return out
}

// request builds the method's request, naming nodeID wherever the request names a node.
func request(t *testing.T, m method, nodeID string) proto.Message {
	t.Helper()
	msg := m.input.New()
	if f := msg.Descriptor().Fields().ByName("node_id"); f != nil {
		msg.Set(f, protoreflect.ValueOfString(nodeID))
	}
	if f := msg.Descriptor().Fields().ByName("username"); f != nil {
		msg.Set(f, protoreflect.ValueOfString("nobody"))
	}
	return msg.Interface()
}

// call invokes the method and reports whether the control plane's gate refused it (as opposed to the
// handler answering, with a result or an error of its own).
func call(ctx context.Context, conn *grpc.ClientConn, m method, req proto.Message) (gated bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var trailer metadata.MD
	if !m.stream {
		resp := m.outputFor(req)
		err = conn.Invoke(ctx, m.full, req, resp, grpc.Trailer(&trailer))
		return refused(trailer, err), err
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, m.full)
	if err != nil {
		return false, err
	}
	if err := s.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	_ = s.CloseSend()
	err = s.RecvMsg(m.outputFor(req))
	if status.Code(err) == codes.DeadlineExceeded {
		return false, err // waiting for the next snapshot: the stream was admitted
	}
	return refused(s.Trailer(), err), err
}

// refused tells a refusal by the gate (authentication, authorisation, limits: they set the
// warden-refused-by trailer) from an error of the handler behind it.
func refused(trailer metadata.MD, err error) bool {
	return err != nil && len(trailer.Get(grpcserver.RefusedByTrailer)) > 0
}

// outputFor returns an empty response message of the method m (looked up from the request's service).
func (m method) outputFor(proto.Message) proto.Message {
	svcName := strings.Split(strings.TrimPrefix(m.full, "/"), "/")[0]
	d, _ := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svcName))
	md := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(m.full[strings.LastIndexByte(m.full, '/')+1:]))
	mt, _ := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	return mt.New().Interface()
}

// bootstrapAndRevoke gives node id a real identity through Bootstrap, revokes it, and returns it.
func bootstrapAndRevoke(t *testing.T, env *wardentest.Env, cert certv1.CertServiceClient, id string) *tls.Certificate {
	t.Helper()
	ctx := t.Context()
	tok, err := cert.CreateJoinToken(ctx, &certv1.CreateJoinTokenRequest{NodeId: id})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey(pki.DefaultKeyType)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, identity.NodeID(env.Config.TrustDomain, identity.RoleWebapp, id))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := certv1.NewCertServiceClient(env.AnonConn()).Bootstrap(ctx, &certv1.BootstrapRequest{JoinToken: tok.JoinToken, CsrPem: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM([]byte(resp.CertificatePem))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.RevokeCertificate(ctx, &certv1.RevokeCertificateRequest{Serial: certs[0].SerialNumber.Text(16), Reason: certv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE}); err != nil {
		t.Fatal(err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	// The revocation reaches every replica's view through its watch; wait until this one refuses.
	deadline := time.Now().Add(10 * time.Second)
	for !env.Platform.Certs.IsRevoked(certs[0].SerialNumber.Text(16)) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return tc
}
