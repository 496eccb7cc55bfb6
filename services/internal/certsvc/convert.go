package certsvc

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// Certificate kinds as stored (current/<node>/<kind>, certRecord.Kind).
const (
	kindIdentity    = "identity"
	kindWebappHTTPS = "webapp_https"
	kindCoreappComm = "coreapp_communication"
	kindCoreappCtl  = "coreapp_control"
	kindDBClient    = "db_client"
	roleWebapp      = string(identity.RoleWebapp)
	roleCoreapp     = string(identity.RoleCoreapp)
)

var kindToPB = map[string]certv1.CertKind{
	kindIdentity:    certv1.CertKind_CERT_KIND_IDENTITY,
	kindWebappHTTPS: certv1.CertKind_CERT_KIND_WEBAPP_HTTPS,
	kindCoreappComm: certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION,
	kindCoreappCtl:  certv1.CertKind_CERT_KIND_COREAPP_CONTROL,
	kindDBClient:    certv1.CertKind_CERT_KIND_DB_CLIENT,
}

// kindFromPB returns "" for unspecified and unknown kinds.
func kindFromPB(k certv1.CertKind) string {
	for s, v := range kindToPB {
		if v == k {
			return s
		}
	}
	return ""
}

// roleKinds lists, in order, the certificate kinds each node role holds.
var roleKinds = map[string][]string{
	roleWebapp:  {kindIdentity, kindWebappHTTPS, kindDBClient},
	roleCoreapp: {kindIdentity, kindCoreappComm, kindCoreappCtl, kindDBClient},
}

func roleHolds(role, kind string) bool {
	for _, k := range roleKinds[role] {
		if k == kind {
			return true
		}
	}
	return false
}

func roleFromPB(r certv1.NodeRole) string {
	switch r {
	case certv1.NodeRole_NODE_ROLE_WEBAPP:
		return roleWebapp
	case certv1.NodeRole_NODE_ROLE_COREAPP:
		return roleCoreapp
	}
	return ""
}

func roleToPB(r string) certv1.NodeRole {
	switch r {
	case roleWebapp:
		return certv1.NodeRole_NODE_ROLE_WEBAPP
	case roleCoreapp:
		return certv1.NodeRole_NODE_ROLE_COREAPP
	}
	return certv1.NodeRole_NODE_ROLE_UNSPECIFIED
}

var keyTypeToPB = map[pki.KeyType]certv1.KeyType{
	pki.KeyECDSAP256: certv1.KeyType_KEY_TYPE_ECDSA_P256,
	pki.KeyECDSAP384: certv1.KeyType_KEY_TYPE_ECDSA_P384,
	pki.KeyEd25519:   certv1.KeyType_KEY_TYPE_ED25519,
	pki.KeyRSA2048:   certv1.KeyType_KEY_TYPE_RSA_2048,
	pki.KeyRSA3072:   certv1.KeyType_KEY_TYPE_RSA_3072,
}

func caStateToPB(s string) certv1.CAState {
	switch s {
	case caPrepared:
		return certv1.CAState_CA_STATE_PREPARED
	case caActive:
		return certv1.CAState_CA_STATE_ACTIVE
	case caRetiring:
		return certv1.CAState_CA_STATE_RETIRING
	}
	return certv1.CAState_CA_STATE_UNSPECIFIED
}

func phaseToPB(p string) certv1.CAPhase {
	switch p {
	case phaseStable:
		return certv1.CAPhase_CA_PHASE_STABLE
	case phasePrepared:
		return certv1.CAPhase_CA_PHASE_PREPARED
	case phaseActivated:
		return certv1.CAPhase_CA_PHASE_ACTIVATED
	}
	return certv1.CAPhase_CA_PHASE_UNSPECIFIED
}

func sourceToPB(s string) certv1.CASource {
	switch s {
	case sourceGenerated:
		return certv1.CASource_CA_SOURCE_GENERATED
	case sourceRoot:
		return certv1.CASource_CA_SOURCE_UPLOADED_ROOT
	case sourceIntermediate:
		return certv1.CASource_CA_SOURCE_UPLOADED_INTERMEDIATE
	}
	return certv1.CASource_CA_SOURCE_UNSPECIFIED
}

func caToPB(c caRecord) *certv1.CA {
	return &certv1.CA{
		Id:        c.ID,
		CertPem:   c.CertPEM,
		ChainPem:  c.ChainPEM,
		Subject:   caSubject(c),
		NotBefore: ts(c.NotBefore),
		NotAfter:  ts(c.NotAfter),
		State:     caStateToPB(c.State),
		Source:    sourceToPB(c.Source),
	}
}

func caSubject(c caRecord) string {
	certs, err := pki.ParseCertsPEM([]byte(c.CertPEM))
	if err != nil || len(certs) == 0 {
		return ""
	}
	return certs[0].Subject.String()
}

// casToPB lists the CAs issuer first, then prepared, then retiring.
func casToPB(st caState) []*certv1.CA {
	var out []*certv1.CA
	for _, state := range []string{caActive, caPrepared, caRetiring} {
		for _, c := range st.CAs {
			if c.State == state {
				out = append(out, caToPB(c))
			}
		}
	}
	return out
}

func (s *Service) nodeToPB(n nodeRecord, version int64, ack *ackRecord) *certv1.Node {
	out := &certv1.Node{
		NodeId:    n.ID,
		Role:      roleToPB(n.Role),
		Zone:      n.Zone,
		Addresses: append([]string(nil), n.Addresses...),
		SpiffeId:  identity.NodeID(s.cfg.Authority.TrustDomain(), identity.Role(n.Role), n.ID).String(),
		CreatedAt: ts(n.CreatedAt),
		Version:   version,
	}
	if !n.BootstrappedAt.IsZero() {
		out.BootstrappedAt = ts(n.BootstrappedAt)
	}
	if ack != nil {
		out.AckedVersion = ack.Version
		out.AckedAt = ts(ack.At)
	}
	return out
}

func certToPB(c certRecord, rev *revokedRecord) *certv1.Certificate {
	out := &certv1.Certificate{
		Serial:         c.Serial,
		NodeId:         c.NodeID,
		Kind:           kindToPB[c.Kind],
		SpiffeId:       c.SPIFFEID,
		DnsNames:       append([]string(nil), c.DNSNames...),
		IpAddresses:    append([]string(nil), c.IPs...),
		NotBefore:      ts(c.NotBefore),
		NotAfter:       ts(c.NotAfter),
		IssuerId:       c.IssuerID,
		KeyType:        keyTypeToPB[pki.KeyType(c.KeyType)],
		CertificatePem: c.PEM,
	}
	if rev != nil {
		out.RevokedAt = ts(rev.At)
		out.RevocationReason = certv1.RevocationReason(rev.Reason)
	}
	return out
}

func externalToPB(e externalRecord, version int64) *certv1.ExternalCertificate {
	node := e.NodeID
	return &certv1.ExternalCertificate{
		NodeId:      node,
		ChainPem:    e.ChainPEM,
		Names:       append([]string(nil), e.Names...),
		NotAfter:    ts(e.NotAfter),
		Fingerprint: e.Fingerprint,
		Version:     version,
	}
}

func webhookToPB(b bundleRecord, version int64) *certv1.WebhookCA {
	return &certv1.WebhookCA{
		Name:      b.Name,
		BundlePem: b.BundlePEM,
		Subjects:  append([]string(nil), b.Subjects...),
		NotAfter:  ts(b.NotAfter),
		Version:   version,
	}
}

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
