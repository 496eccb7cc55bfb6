package certsvc

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/identity"
	"github.com/warden-sec/warden/services/internal/paging"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/store"
)

// versionCond is the condition of a write naming expected_version: 0 skips the check.
func versionCond(key string, expected int64) store.Cond {
	if expected == 0 {
		return store.Any()
	}
	return store.AtRevision(key, expected)
}

// externalKey maps the API's node id ("" for every Webapp) to the record's key suffix.
func externalKey(node string) string {
	if node == "" {
		return allWebapps
	}
	return node
}

// UploadExternalCertificate implements CertService.
func (s *Service) UploadExternalCertificate(ctx context.Context, req *certv1.UploadExternalCertificateRequest) (*certv1.UploadExternalCertificateResponse, error) {
	node := req.GetNodeId()
	conds := []store.Cond{versionCond(keyExternal(externalKey(node)), req.GetExpectedVersion())}
	if node != "" {
		if err := validNodeID("node_id", node); err != nil {
			return nil, err
		}
		n, rev, err := s.readNode(ctx, node)
		if err != nil {
			return nil, err
		}
		if n.Role != roleWebapp {
			return nil, apierr.InvalidArg("node_id", "%s is a %s node; external certificates replace the Webapp HTTPS certificate only", node, n.Role)
		}
		conds = append(conds, store.AtRevision(keyNode(node), rev))
	}
	now := s.cfg.Now()
	b, err := pki.ParseExternalBundle([]byte(req.GetBundlePem()), nil, now)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.MarshalKeyPEM(b.Key)
	if err != nil {
		return nil, err
	}
	key := keyExternal(externalKey(node))
	sealed, err := s.cfg.Seal.Seal(keyPEM, Prefix+key)
	if err != nil {
		return nil, fmt.Errorf("seal external key: %w", err)
	}
	names := append([]string(nil), b.Leaf.DNSNames...)
	for _, ip := range b.Leaf.IPAddresses {
		names = append(names, ip.String())
	}
	rec := externalRecord{
		NodeID:      node,
		ChainPEM:    string(pki.EncodeCertsPEM(append([]*x509.Certificate{b.Leaf}, b.Intermediates...)...)),
		SealedKey:   sealed,
		Names:       names,
		NotAfter:    b.Leaf.NotAfter,
		Fingerprint: pki.Fingerprint(b.Leaf),
	}
	rev, err := s.st.Txn(ctx, conds, []store.Op{
		store.PutOp(key, encode(rec)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "external/" + externalKey(node), Outcome: audit.Success, Reason: "external certificate uploaded",
			Details: map[string]string{"fingerprint": rec.Fingerprint, "names": strings.Join(names, ","), "not_after": rec.NotAfter.UTC().Format(time.RFC3339), "self_anchored": fmt.Sprint(b.SelfAnchored)}}),
	})
	if err != nil {
		return nil, err
	}
	return &certv1.UploadExternalCertificateResponse{Certificate: externalToPB(rec, rev)}, nil
}

// ListExternalCertificates implements CertService.
func (s *Service) ListExternalCertificates(ctx context.Context, req *certv1.ListExternalCertificatesRequest) (*certv1.ListExternalCertificatesResponse, error) {
	size, err := paging.Size(req.GetPageSize(), defaultPageSize, maxPageSize)
	if err != nil {
		return nil, err
	}
	after, err := paging.After(req.GetPageToken(), prefExt)
	if err != nil {
		return nil, err
	}
	out := &certv1.ListExternalCertificatesResponse{}
	err = s.scan(ctx, prefExt, after, size, func(kv store.KV) (bool, error) {
		e, err := decode[externalRecord](kv)
		if err != nil {
			return false, err
		}
		out.Certificates = append(out.Certificates, externalToPB(e, kv.ModRevision))
		return true, nil
	}, func(last string) { out.NextPageToken = paging.Token(last) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteExternalCertificate implements CertService.
func (s *Service) DeleteExternalCertificate(ctx context.Context, req *certv1.DeleteExternalCertificateRequest) (*certv1.DeleteExternalCertificateResponse, error) {
	node := req.GetNodeId()
	if node != "" {
		if err := validNodeID("node_id", node); err != nil {
			return nil, err
		}
	}
	key := keyExternal(externalKey(node))
	if err := s.deleteVersioned(ctx, key, req.GetExpectedVersion(), "external certificate for "+externalKey(node),
		audit.Event{Target: "external/" + externalKey(node), Outcome: audit.Success, Reason: "external certificate deleted"}); err != nil {
		return nil, err
	}
	return &certv1.DeleteExternalCertificateResponse{}, nil
}

// deleteVersioned deletes an existing key, optionally only at the expected version.
func (s *Service) deleteVersioned(ctx context.Context, key string, expected int64, what string, ev audit.Event) error {
	kv, err := s.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return apierr.NotFound(what)
	} else if err != nil {
		return err
	}
	if err := checkVersion(expected, kv.ModRevision); err != nil {
		return err
	}
	_, err = s.st.Txn(ctx, []store.Cond{store.AtRevision(key, kv.ModRevision)}, []store.Op{store.DeleteOp(key), s.cfg.Audit.Op(ctx, ev)})
	return err
}

// caBundle validates a CA bundle upload and summarises it.
func caBundle(field, pemText string, now time.Time) (bundleRecord, error) {
	certs, err := pki.ValidateCABundle([]byte(pemText), now)
	if err != nil {
		return bundleRecord{}, pki.WithField(err, field)
	}
	b := bundleRecord{BundlePEM: string(pki.EncodeCertsPEM(certs...))}
	for _, c := range certs {
		b.Subjects = append(b.Subjects, c.Subject.String())
		if b.NotAfter.IsZero() || c.NotAfter.Before(b.NotAfter) {
			b.NotAfter = c.NotAfter
		}
	}
	return b, nil
}

// AddWebhookCA implements CertService.
func (s *Service) AddWebhookCA(ctx context.Context, req *certv1.AddWebhookCARequest) (*certv1.AddWebhookCAResponse, error) {
	if err := identity.ValidName(req.GetName()); err != nil {
		return nil, apierr.InvalidArg("name", "%v", err)
	}
	if req.GetExpectedVersion() < 0 {
		return nil, apierr.InvalidArg("expected_version", "must not be negative")
	}
	b, err := caBundle("bundle_pem", req.GetBundlePem(), s.cfg.Now())
	if err != nil {
		return nil, err
	}
	b.Name = req.GetName()
	key := keyWebhook(b.Name)
	if req.GetExpectedVersion() == 0 {
		if _, err := s.st.Get(ctx, key); err == nil {
			return nil, apierr.AlreadyExists("webhook CA " + b.Name + " (pass its version as expected_version to replace it)")
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	rev, err := s.st.Txn(ctx, []store.Cond{store.AtRevision(key, req.GetExpectedVersion())}, []store.Op{
		store.PutOp(key, encode(b)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "webhook-ca/" + b.Name, Outcome: audit.Success, Reason: "webhook CA stored",
			Details: map[string]string{"subjects": strings.Join(b.Subjects, "; ")}}),
	})
	if err != nil {
		return nil, err
	}
	return &certv1.AddWebhookCAResponse{WebhookCa: webhookToPB(b, rev)}, nil
}

// ListWebhookCAs implements CertService.
func (s *Service) ListWebhookCAs(ctx context.Context, req *certv1.ListWebhookCAsRequest) (*certv1.ListWebhookCAsResponse, error) {
	size, err := paging.Size(req.GetPageSize(), defaultPageSize, maxPageSize)
	if err != nil {
		return nil, err
	}
	after, err := paging.After(req.GetPageToken(), prefWebhook)
	if err != nil {
		return nil, err
	}
	out := &certv1.ListWebhookCAsResponse{}
	err = s.scan(ctx, prefWebhook, after, size, func(kv store.KV) (bool, error) {
		b, err := decode[bundleRecord](kv)
		if err != nil {
			return false, err
		}
		out.WebhookCas = append(out.WebhookCas, webhookToPB(b, kv.ModRevision))
		return true, nil
	}, func(last string) { out.NextPageToken = paging.Token(last) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteWebhookCA implements CertService.
func (s *Service) DeleteWebhookCA(ctx context.Context, req *certv1.DeleteWebhookCARequest) (*certv1.DeleteWebhookCAResponse, error) {
	if err := identity.ValidName(req.GetName()); err != nil {
		return nil, apierr.InvalidArg("name", "%v", err)
	}
	if err := s.deleteVersioned(ctx, keyWebhook(req.GetName()), req.GetExpectedVersion(), "webhook CA "+req.GetName(),
		audit.Event{Target: "webhook-ca/" + req.GetName(), Outcome: audit.Success, Reason: "webhook CA deleted"}); err != nil {
		return nil, err
	}
	return &certv1.DeleteWebhookCAResponse{}, nil
}

// SetDatabaseCA implements CertService.
func (s *Service) SetDatabaseCA(ctx context.Context, req *certv1.SetDatabaseCARequest) (*certv1.SetDatabaseCAResponse, error) {
	cond := versionCond(keyDBCA, req.GetExpectedVersion())
	if strings.TrimSpace(req.GetBundlePem()) == "" {
		kv, err := s.st.Get(ctx, keyDBCA)
		if errors.Is(err, store.ErrNotFound) {
			if err := checkVersion(req.GetExpectedVersion(), 0); err != nil {
				return nil, err
			}
			return &certv1.SetDatabaseCAResponse{}, nil
		} else if err != nil {
			return nil, err
		}
		if err := checkVersion(req.GetExpectedVersion(), kv.ModRevision); err != nil {
			return nil, err
		}
		rev, err := s.st.Txn(ctx, []store.Cond{store.AtRevision(keyDBCA, kv.ModRevision)}, []store.Op{store.DeleteOp(keyDBCA),
			s.cfg.Audit.Op(ctx, audit.Event{Target: "database-ca", Outcome: audit.Success, Reason: "database CA removed"})})
		if err != nil {
			return nil, err
		}
		return &certv1.SetDatabaseCAResponse{Version: rev}, nil
	}
	b, err := caBundle("bundle_pem", req.GetBundlePem(), s.cfg.Now())
	if err != nil {
		return nil, err
	}
	rev, err := s.st.Txn(ctx, []store.Cond{cond}, []store.Op{store.PutOp(keyDBCA, encode(b)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "database-ca", Outcome: audit.Success, Reason: "database CA stored",
			Details: map[string]string{"subjects": strings.Join(b.Subjects, "; ")}})})
	if err != nil {
		return nil, err
	}
	return &certv1.SetDatabaseCAResponse{Version: rev}, nil
}

// GetDatabaseCA implements CertService.
func (s *Service) GetDatabaseCA(ctx context.Context, _ *certv1.GetDatabaseCARequest) (*certv1.GetDatabaseCAResponse, error) {
	kv, err := s.st.Get(ctx, keyDBCA)
	if errors.Is(err, store.ErrNotFound) {
		return &certv1.GetDatabaseCAResponse{}, nil
	} else if err != nil {
		return nil, err
	}
	b, err := decode[bundleRecord](kv)
	if err != nil {
		return nil, err
	}
	return &certv1.GetDatabaseCAResponse{BundlePem: b.BundlePEM, Version: kv.ModRevision}, nil
}
