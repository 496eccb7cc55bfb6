package policysvc

import (
	"crypto/tls"
	"strings"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	"github.com/warden-sec/warden/services/internal/dbssl"
	"github.com/warden-sec/warden/services/internal/netzone"
	"github.com/warden-sec/warden/services/internal/tlsprofile"
)

func issuesPB(in []Issue) []*policyv1.Issue {
	out := make([]*policyv1.Issue, 0, len(in))
	for _, i := range in {
		out = append(out, &policyv1.Issue{FieldPath: i.Field, Message: i.Message, Downgrade: i.Downgrade})
	}
	return out
}

func issuesFromPB(in []*policyv1.Issue) []Issue {
	out := make([]Issue, 0, len(in))
	for _, i := range in {
		out = append(out, Issue{Field: i.GetFieldPath(), Message: i.GetMessage(), Downgrade: i.GetDowngrade()})
	}
	return out
}

// formatIssues lists issues for an error message, each with its path.
func formatIssues(in []Issue) string {
	parts := make([]string, 0, len(in))
	for _, i := range in {
		parts = append(parts, i.Field+": "+i.Message)
	}
	return strings.Join(parts, "; ")
}

func dbSSLPB(s dbssl.Settings) *policyv1.DBSSLSettings {
	return &policyv1.DBSSLSettings{
		KeyPath: proto.String(s.KeyPath), CertPath: proto.String(s.CertPath), CaPath: proto.String(s.CAPath),
		Verify: proto.Bool(s.Verify),
	}
}

func profileEnum(n tlsprofile.Name) policyv1.TLSProfile {
	for k, v := range profileNames {
		if v == n {
			return k
		}
	}
	return policyv1.TLSProfile_TLS_PROFILE_UNSPECIFIED
}

// defaultDocument is version 1: the built-in policy written out, so that operators read and edit
// concrete values. Header values are implied by the mode rather than copied, so they keep following
// package webheaders.
func defaultDocument() *policyv1.PolicyDocument {
	rules := netzone.Defaults()
	net := &policyv1.NetworkSettings{}
	for _, z := range rules.Zones {
		net.Zones = append(net.Zones, &policyv1.Zone{Name: z.Name})
	}
	for _, ep := range netzone.Endpoints() {
		if zones, ok := rules.Reach[ep]; ok {
			net.Reach = append(net.Reach, &policyv1.Reach{Endpoint: endpointEnum(ep), FromZones: zones})
		}
	}
	return &policyv1.PolicyDocument{Defaults: &policyv1.PolicySettings{
		Tls:     &policyv1.TLSSettings{Profile: profileEnum(tlsprofile.Modern)},
		Headers: &policyv1.WebAdminHeaders{Mode: policyv1.HeaderMode_HEADER_MODE_RECOMMENDED},
		DbSsl:   dbSSLPB(dbssl.Defaults()),
		Network: net,
	}}
}

// versionName renders a TLS version as the front configures it ("TLS1.2").
func versionName(v uint16) string {
	return strings.ReplaceAll(tls.VersionName(v), " ", "")
}

func renderedTLS(n tlsprofile.Name) (*policyv1.RenderedTLS, error) {
	p, err := tlsprofile.Get(n)
	if err != nil {
		return nil, err
	}
	_, unsupported := p.TLSConfig()
	out := &policyv1.RenderedTLS{
		Profile:          profileEnum(p.Name),
		Guideline:        p.Guideline,
		MinVersion:       versionName(p.MinVersion),
		MaxVersion:       versionName(p.MaxVersion),
		CipherSuites:     p.CipherSuitesOpenSSL,
		Groups:           p.Groups,
		CertificateTypes: p.CertificateTypes,
		HstsMaxAge:       int64(p.HSTSMaxAge),
	}
	for _, u := range unsupported {
		out.Unsupported = append(out.Unsupported, u.Suite+": "+u.Why)
	}
	return out, nil
}
