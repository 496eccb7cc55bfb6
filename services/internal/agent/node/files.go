package node

import (
	"fmt"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/pki"
)

// The stable names of the files in <data-dir>/certs. The apps are configured with these paths once, so
// they never change: a renewal replaces the content, never the name.
const (
	// FileTrustBundle holds every trusted root, PEM.
	FileTrustBundle = "ca-bundle.crt"
	// FileCRL is the current CRL, PEM.
	FileCRL = "crl.pem"
	// FileWebhookCA is the webhook CA bundle (Coreapp only).
	FileWebhookCA = "webhook-ca.crt"
	// FileDBCA is the database CA bundle (WA_DB_SSL_CA).
	FileDBCA = "db-ca.crt"
	// FileWASecret holds every held version of wa-secret with its state, JSON, for the fronts and
	// envelope users that must accept staged and retiring versions too (see SecretsFile).
	FileWASecret = "wa-secret.json"
)

// certBase is the base name of a kind's certificate (".crt": leaf then chain) and key (".key").
var certBase = map[certv1.CertKind]string{
	certv1.CertKind_CERT_KIND_IDENTITY:              "identity",
	certv1.CertKind_CERT_KIND_WEBAPP_HTTPS:          "webapp-https",
	certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION: "coreapp-communication",
	certv1.CertKind_CERT_KIND_COREAPP_CONTROL:       "coreapp-control",
	certv1.CertKind_CERT_KIND_DB_CLIENT:             "db-client",
}

// CertFile is the certificate file name of kind.
func CertFile(kind certv1.CertKind) string { return certBase[kind] + ".crt" }

// KeyFile is the private key file name of kind.
func KeyFile(kind certv1.CertKind) string { return certBase[kind] + ".key" }

// roleKinds are the kinds each role holds; anything else in a snapshot is ignored, so that a Webapp
// never writes Coreapp material even if a server sent it.
var roleKinds = map[identity.Role][]certv1.CertKind{
	identity.RoleWebapp: {
		certv1.CertKind_CERT_KIND_IDENTITY, certv1.CertKind_CERT_KIND_WEBAPP_HTTPS, certv1.CertKind_CERT_KIND_DB_CLIENT,
	},
	identity.RoleCoreapp: {
		certv1.CertKind_CERT_KIND_IDENTITY, certv1.CertKind_CERT_KIND_COREAPP_COMMUNICATION,
		certv1.CertKind_CERT_KIND_COREAPP_CONTROL, certv1.CertKind_CERT_KIND_DB_CLIENT,
	},
}

// Kinds returns the certificate kinds role holds.
func Kinds(role identity.Role) []certv1.CertKind {
	return append([]certv1.CertKind(nil), roleKinds[role]...)
}

func roleHolds(role identity.Role, kind certv1.CertKind) bool {
	for _, k := range roleKinds[role] {
		if k == kind {
			return true
		}
	}
	return false
}

// KindName is the short lowercase name of a kind for logs and status ("webapp-https").
func KindName(kind certv1.CertKind) string {
	if b, ok := certBase[kind]; ok {
		return b
	}
	return kind.String()
}

// keyType maps the API's key type; unspecified means the default.
func keyType(k certv1.KeyType) (pki.KeyType, error) {
	switch k {
	case certv1.KeyType_KEY_TYPE_UNSPECIFIED, certv1.KeyType_KEY_TYPE_ECDSA_P256:
		return pki.KeyECDSAP256, nil
	case certv1.KeyType_KEY_TYPE_ECDSA_P384:
		return pki.KeyECDSAP384, nil
	case certv1.KeyType_KEY_TYPE_ED25519:
		return pki.KeyEd25519, nil
	case certv1.KeyType_KEY_TYPE_RSA_2048:
		return pki.KeyRSA2048, nil
	case certv1.KeyType_KEY_TYPE_RSA_3072:
		return pki.KeyRSA3072, nil
	default:
		return "", fmt.Errorf("unknown key type %v", k)
	}
}
