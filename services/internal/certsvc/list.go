package certsvc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/paging"
	"github.com/warden-sec/warden/services/internal/store"
)

// maxExpiringWithin bounds ListCertificates.expiring_within (longer than any certificate lives).
const maxExpiringWithin = 100 * 365 * 24 * time.Hour

// GetCertificate implements CertService.
func (s *Service) GetCertificate(ctx context.Context, req *certv1.GetCertificateRequest) (*certv1.GetCertificateResponse, error) {
	serial, err := normalizeSerial(req.GetSerial())
	if err != nil {
		return nil, err
	}
	kv, err := s.st.Get(ctx, keyCert(serial))
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.NotFound("certificate " + serial)
	} else if err != nil {
		return nil, err
	}
	c, err := decode[certRecord](kv)
	if err != nil {
		return nil, err
	}
	if caller := authn.FromContext(ctx); caller.IsNode() && c.NodeID != caller.Name {
		return nil, fmt.Errorf("%w: certificate %s belongs to another node", apierr.ErrPermission, serial)
	}
	var rev *revokedRecord
	if rkv, err := s.st.Get(ctx, keyRevoked(serial)); err == nil {
		r, err := decode[revokedRecord](rkv)
		if err != nil {
			return nil, err
		}
		rev = &r
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return &certv1.GetCertificateResponse{Certificate: certToPB(c, rev)}, nil
}

// ListCertificates implements CertService. Certificates of one node are found through the nodecerts/
// index; either way the page is sorted by serial.
func (s *Service) ListCertificates(ctx context.Context, req *certv1.ListCertificatesRequest) (*certv1.ListCertificatesResponse, error) {
	size, err := paging.Size(req.GetPageSize(), defaultPageSize, maxPageSize)
	if err != nil {
		return nil, err
	}
	prefix := prefCerts
	if node := req.GetNodeId(); node != "" {
		if err := validNodeID("node_id", node); err != nil {
			return nil, err
		}
		prefix = prefNodeIdx + node + "/"
	}
	after, err := paging.After(req.GetPageToken(), prefix)
	if err != nil {
		return nil, err
	}
	kind := ""
	if req.GetKind() != certv1.CertKind_CERT_KIND_UNSPECIFIED {
		if kind = kindFromPB(req.GetKind()); kind == "" {
			return nil, apierr.InvalidArg("kind", "unknown kind %d", req.GetKind())
		}
	}
	var within time.Duration
	if req.GetExpiringWithin() != nil {
		if within, err = ttlOf("expiring_within", req.GetExpiringWithin(), 0, time.Second, maxExpiringWithin); err != nil {
			return nil, err
		}
	}
	revoked, err := s.revokedSet(ctx)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	out := &certv1.ListCertificatesResponse{}
	err = s.scan(ctx, prefix, after, size, func(kv store.KV) (bool, error) {
		var c certRecord
		if prefix == prefCerts {
			var err error
			if c, err = decode[certRecord](kv); err != nil {
				return false, err
			}
		} else {
			ckv, err := s.st.Get(ctx, keyCert(strings.TrimPrefix(kv.Key, prefix)))
			if errors.Is(err, store.ErrNotFound) {
				return false, nil
			} else if err != nil {
				return false, err
			}
			if c, err = decode[certRecord](ckv); err != nil {
				return false, err
			}
		}
		if kind != "" && c.Kind != kind {
			return false, nil
		}
		if within > 0 && (!c.NotAfter.After(now) || c.NotAfter.After(now.Add(within))) {
			return false, nil
		}
		var rev *revokedRecord
		if r, ok := revoked[c.Serial]; ok {
			rev = &r
		}
		switch {
		case req.GetRevokedOnly() && rev == nil:
			return false, nil
		case rev != nil && !req.GetIncludeRevoked() && !req.GetRevokedOnly():
			return false, nil
		}
		out.Certificates = append(out.Certificates, certToPB(c, rev))
		return true, nil
	}, func(last string) { out.NextPageToken = paging.Token(last) })
	if err != nil {
		return nil, err
	}
	return out, nil
}
