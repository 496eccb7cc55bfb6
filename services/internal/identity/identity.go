// Package identity defines the SPIFFE identities Warden puts into every
// certificate it issues, and parses them back strictly.
//
// Every certificate carries exactly one URI SAN of one of these shapes:
//
//	spiffe://<trust-domain>/node/webapp/<id>
//	spiffe://<trust-domain>/node/coreapp/<id>
//	spiffe://<trust-domain>/admin/<name>
//	spiffe://<trust-domain>/auditor/<name>
//	spiffe://<trust-domain>/controlplane/wardend
//
// Parsing is deliberately narrower than RFC 3986 and the SPIFFE spec: an
// identity is accepted only if it is already in the one canonical spelling
// String produces, so two different strings can never name the same peer.
package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrInvalid is wrapped by every error this package returns, so callers can
// report bad input (for example as InvalidArgument) without matching text.
var ErrInvalid = errors.New("invalid identity")

// Kind is the first path segment of an identity.
type Kind string

// The kinds of principal Warden knows.
const (
	KindNode         Kind = "node"
	KindAdmin        Kind = "admin"
	KindAuditor      Kind = "auditor"
	KindControlPlane Kind = "controlplane"
)

// Role distinguishes the two node flavours; it is empty for every other kind.
type Role string

// The node roles of a deployment.
const (
	RoleWebapp  Role = "webapp"
	RoleCoreapp Role = "coreapp"
)

// ControlPlaneName is the only name a control-plane identity may carry: there
// is one control plane per trust domain, whatever its replica count.
const ControlPlaneName = "wardend"

const (
	scheme = "spiffe"
	// maxTrustDomainLen is the SPIFFE limit on a trust domain name.
	maxTrustDomainLen = 255
	maxNameLen        = 63
)

// ID is a parsed Warden identity. The zero value is not valid; build IDs with
// NodeID, AdminID, AuditorID, ControlPlaneID or Parse.
type ID struct {
	TrustDomain string
	Kind        Kind
	Role        Role
	Name        string
}

// NodeID returns the identity of node name in role. It does not validate;
// call Validate when the parts come from outside.
func NodeID(td string, role Role, name string) ID {
	return ID{TrustDomain: td, Kind: KindNode, Role: role, Name: name}
}

// AdminID returns the identity of administrator name.
func AdminID(td, name string) ID {
	return ID{TrustDomain: td, Kind: KindAdmin, Name: name}
}

// AuditorID returns the identity of auditor name.
func AuditorID(td, name string) ID {
	return ID{TrustDomain: td, Kind: KindAuditor, Name: name}
}

// ControlPlaneID returns the identity of the control plane of td.
func ControlPlaneID(td string) ID {
	return ID{TrustDomain: td, Kind: KindControlPlane, Name: ControlPlaneName}
}

// String returns the SPIFFE URI of id. For an invalid ID the result is not
// parseable; it is still printed so that log lines show what was wrong.
func (id ID) String() string {
	return scheme + "://" + id.TrustDomain + "/" + id.path()
}

// URL returns id as a URL for certificate and CSR templates.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: scheme, Host: id.TrustDomain, Path: "/" + id.path()}
}

func (id ID) path() string {
	if id.Kind == KindNode {
		return string(id.Kind) + "/" + string(id.Role) + "/" + id.Name
	}
	return string(id.Kind) + "/" + id.Name
}

// Validate reports whether id is one of the identity shapes Warden issues.
func (id ID) Validate() error {
	if err := ValidTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	switch id.Kind {
	case KindNode:
		if id.Role != RoleWebapp && id.Role != RoleCoreapp {
			return invalidf("node role %q is not %q or %q", id.Role, RoleWebapp, RoleCoreapp)
		}
	case KindAdmin, KindAuditor:
		if id.Role != "" {
			return invalidf("%s identity cannot have a role", id.Kind)
		}
	case KindControlPlane:
		if id.Role != "" {
			return invalidf("%s identity cannot have a role", id.Kind)
		}
		if id.Name != ControlPlaneName {
			return invalidf("control plane name must be %q, got %q", ControlPlaneName, id.Name)
		}
		return nil
	default:
		return invalidf("unknown kind %q", id.Kind)
	}
	if err := ValidName(id.Name); err != nil {
		return err
	}
	return nil
}

// Parse parses a SPIFFE URI into an ID. Only the canonical spelling is
// accepted: lowercase scheme and trust domain, no port, userinfo, query,
// fragment, percent-encoding, empty or dot segments, and exactly one of the
// path shapes listed in the package comment.
func Parse(uri string) (ID, error) {
	rest, ok := strings.CutPrefix(uri, scheme+"://")
	if !ok {
		return ID{}, invalidf("%q does not start with %q", uri, scheme+"://")
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return ID{}, invalidf("%q has no path", uri)
	}
	if err := ValidTrustDomain(td); err != nil {
		return ID{}, fmt.Errorf("parse %q: %w", uri, err)
	}
	segs := strings.Split(path, "/")
	var id ID
	switch {
	case len(segs) == 3 && segs[0] == string(KindNode):
		id = NodeID(td, Role(segs[1]), segs[2])
	case len(segs) == 2 && segs[0] == string(KindAdmin):
		id = AdminID(td, segs[1])
	case len(segs) == 2 && segs[0] == string(KindAuditor):
		id = AuditorID(td, segs[1])
	case len(segs) == 2 && segs[0] == string(KindControlPlane):
		id = ID{TrustDomain: td, Kind: KindControlPlane, Name: segs[1]}
	default:
		return ID{}, invalidf("%q: path %q is not one of node/<role>/<name>, admin/<name>, auditor/<name>, controlplane/%s", uri, "/"+path, ControlPlaneName)
	}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("parse %q: %w", uri, err)
	}
	return id, nil
}

// FromCertificate returns the identity of c. The certificate must carry
// exactly one URI SAN, as X509-SVIDs do, so a certificate cannot present a
// second identity that some other verifier might pick instead.
func FromCertificate(c *x509.Certificate) (ID, error) {
	if c == nil {
		return ID{}, invalidf("no certificate")
	}
	if len(c.URIs) != 1 {
		return ID{}, invalidf("certificate has %d URI SANs, want exactly one spiffe URI", len(c.URIs))
	}
	id, err := Parse(c.URIs[0].String())
	if err != nil {
		return ID{}, fmt.Errorf("certificate URI SAN: %w", err)
	}
	return id, nil
}

// ValidName checks a node id or user name: 1 to 63 characters, lowercase
// letters, digits, '.', '_' and '-', starting with a letter or digit. The
// limit keeps names usable as DNS labels and as certificate common names.
func ValidName(s string) error {
	if s == "" {
		return invalidf("name is empty")
	}
	if len(s) > maxNameLen {
		return invalidf("name %.20q… is %d characters long, at most %d allowed", s, len(s), maxNameLen)
	}
	if !isLowerAlnum(s[0]) {
		return invalidf("name %q must start with a lowercase letter or digit", s)
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isLowerAlnum(c) && c != '.' && c != '_' && c != '-' {
			return invalidf("name %q contains %q; allowed are a-z, 0-9, '.', '_' and '-'", s, c)
		}
	}
	return nil
}

// ValidTrustDomain checks a trust domain name as SPIFFE defines it, which
// also rules out ports, userinfo and uppercase spellings of the same domain.
func ValidTrustDomain(td string) error {
	if td == "" {
		return invalidf("trust domain is empty")
	}
	if len(td) > maxTrustDomainLen {
		return invalidf("trust domain is %d characters long, at most %d allowed", len(td), maxTrustDomainLen)
	}
	for i := 0; i < len(td); i++ {
		if c := td[i]; !isLowerAlnum(c) && c != '.' && c != '_' && c != '-' {
			return invalidf("trust domain %q contains %q; allowed are a-z, 0-9, '.', '_' and '-'", td, c)
		}
	}
	return nil
}

func isLowerAlnum(c byte) bool {
	return ('a' <= c && c <= 'z') || ('0' <= c && c <= '9')
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
