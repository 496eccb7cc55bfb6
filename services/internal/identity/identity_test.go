package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		uri  string
		want ID
	}{
		{"spiffe://prod.example/node/webapp/web-01", NodeID("prod.example", RoleWebapp, "web-01")},
		{"spiffe://prod.example/node/coreapp/0", NodeID("prod.example", RoleCoreapp, "0")},
		{"spiffe://td/admin/alice", AdminID("td", "alice")},
		{"spiffe://td/auditor/bob.smith_2", AuditorID("td", "bob.smith_2")},
		{"spiffe://my_td-1.local/controlplane/wardend", ControlPlaneID("my_td-1.local")},
		{"spiffe://td/admin/" + strings.Repeat("a", 63), AdminID("td", strings.Repeat("a", 63))},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			got, err := Parse(tt.uri)
			if err != nil {
				t.Fatalf("Parse(%q) error = %v, want nil", tt.uri, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.uri, got, tt.want)
			}
			if s := got.String(); s != tt.uri {
				t.Fatalf("String() = %q, want %q", s, tt.uri)
			}
			if u := got.URL().String(); u != tt.uri {
				t.Fatalf("URL().String() = %q, want %q", u, tt.uri)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name, uri string
	}{
		{"empty", ""},
		{"other scheme", "https://td/admin/alice"},
		{"uppercase scheme", "SPIFFE://td/admin/alice"},
		{"no path", "spiffe://td"},
		{"root path", "spiffe://td/"},
		{"empty trust domain", "spiffe:///admin/alice"},
		{"uppercase trust domain", "spiffe://TD/admin/alice"},
		{"port", "spiffe://td:443/admin/alice"},
		{"userinfo", "spiffe://u@td/admin/alice"},
		{"query", "spiffe://td/admin/alice?x=1"},
		{"fragment", "spiffe://td/admin/alice#x"},
		{"percent encoding", "spiffe://td/admin/%61lice"},
		{"trailing slash", "spiffe://td/admin/alice/"},
		{"double slash", "spiffe://td//admin/alice"},
		{"unknown kind", "spiffe://td/user/alice"},
		{"node without role", "spiffe://td/node/web-01"},
		{"unknown role", "spiffe://td/node/dbapp/web-01"},
		{"admin with role", "spiffe://td/admin/webapp/alice"},
		{"control plane other name", "spiffe://td/controlplane/other"},
		{"control plane no name", "spiffe://td/controlplane"},
		{"uppercase name", "spiffe://td/admin/Alice"},
		{"name starts with dot", "spiffe://td/admin/.alice"},
		{"dot dot", "spiffe://td/admin/.."},
		{"name too long", "spiffe://td/admin/" + strings.Repeat("a", 64)},
		{"space", "spiffe://td/admin/al ice"},
		{"trust domain too long", "spiffe://" + strings.Repeat("a", 256) + "/admin/alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := Parse(tt.uri)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error", tt.uri, id)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrInvalid", tt.uri, err)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"9", true},
		{"web-01.eu_west", true},
		{strings.Repeat("z", 63), true},
		{"", false},
		{strings.Repeat("z", 64), false},
		{"-a", false},
		{"_a", false},
		{"A", false},
		{"a/b", false},
		{"é", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidName(tt.name)
			if tt.ok && err != nil {
				t.Fatalf("ValidName(%q) = %v, want nil", tt.name, err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("ValidName(%q) = %v, want an ErrInvalid error", tt.name, err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		id   ID
		ok   bool
	}{
		{"node", NodeID("td", RoleCoreapp, "n1"), true},
		{"zero", ID{}, false},
		{"node bad role", NodeID("td", "x", "n1"), false},
		{"admin with role", ID{TrustDomain: "td", Kind: KindAdmin, Role: RoleWebapp, Name: "a"}, false},
		{"control plane with role", ID{TrustDomain: "td", Kind: KindControlPlane, Role: RoleWebapp, Name: ControlPlaneName}, false},
		{"bad trust domain", AdminID("t d", "a"), false},
		{"bad name", AuditorID("td", "A"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.id.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate(%+v) = %v, want ok=%v", tt.id, err, tt.ok)
			}
		})
	}
}

func TestFromCertificate(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", s, err)
		}
		return u
	}
	node := NodeID("td", RoleWebapp, "w1")
	tests := []struct {
		name    string
		uris    []*url.URL
		want    ID
		wantErr bool
	}{
		{"one spiffe uri", []*url.URL{node.URL()}, node, false},
		{"no uri", nil, ID{}, true},
		{"two uris", []*url.URL{node.URL(), AdminID("td", "a").URL()}, ID{}, true},
		{"spiffe plus https", []*url.URL{node.URL(), mustURL("https://example.com/")}, ID{}, true},
		{"non-canonical", []*url.URL{mustURL("spiffe://td/node/webapp/%771")}, ID{}, true},
		{"trust domain only", []*url.URL{mustURL("spiffe://td")}, ID{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(1),
				NotBefore:    time.Unix(0, 0),
				NotAfter:     time.Unix(3600, 0),
				URIs:         tt.uris,
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
			if err != nil {
				t.Fatalf("create certificate: %v", err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatalf("parse certificate: %v", err)
			}
			got, err := FromCertificate(cert)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("FromCertificate = %+v, %v; want an ErrInvalid error", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("FromCertificate = %+v, %v; want %+v, nil", got, err, tt.want)
			}
		})
	}
	if _, err := FromCertificate(nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("FromCertificate(nil) = %v, want an ErrInvalid error", err)
	}
}
