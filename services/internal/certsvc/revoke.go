package certsvc

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/pki"
	"github.com/warden-sec/warden/services/internal/store"
)

// maxConflictRetries bounds how often a write that raced another one on the CRL or a node is retried.
const maxConflictRetries = 8

// retryConflicts runs fn again while it fails with a store conflict it did not cause by stale input:
// fn re-reads everything on each attempt.
func retryConflicts(ctx context.Context, fn func() error) error {
	var err error
	for range maxConflictRetries {
		if err = fn(); !errors.Is(err, store.ErrConflict) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// nextCRL builds the writes of the next CRLs for CA state st: one per CA of st.crlSigners, each listing
// the revoked certificates it issued that have not expired, plus adding (revocations written in the
// same transaction). Expired entries are pruned from etcd at the same time. have holds CAs the caller
// already loaded (a CA prepared in the same transaction has no stored key yet). The condition keeps two
// writers from publishing the same CRL number; every CA state change that changes the signers
// publishes CRLs too, so it also fails a writer that read an older CA state.
func (s *Service) nextCRL(ctx context.Context, st caState, have []*pki.CA, adding []revokedRecord, now time.Time) ([]store.Op, []store.Cond, crlRecord, error) {
	var prev crlRecord
	var prevRev int64
	kv, err := s.st.Get(ctx, keyCRL)
	switch {
	case err == nil:
		if prev, err = decode[crlRecord](kv); err != nil {
			return nil, nil, crlRecord{}, err
		}
		prevRev = kv.ModRevision
	case !errors.Is(err, store.ErrNotFound):
		return nil, nil, crlRecord{}, fmt.Errorf("read CRL: %w", err)
	}
	kvs, _, _, err := s.st.List(ctx, prefRevoked, "", 0)
	if err != nil {
		return nil, nil, crlRecord{}, err
	}
	var ops []store.Op
	all := make([]revokedRecord, 0, len(kvs)+len(adding))
	for _, kv := range kvs {
		r, err := decode[revokedRecord](kv)
		if err != nil {
			return nil, nil, crlRecord{}, err
		}
		if !r.NotAfter.After(now) {
			// An expired certificate fails verification anyway; the CRL need not carry it.
			ops = append(ops, store.DeleteOp(keyRevoked(r.Serial)))
			continue
		}
		all = append(all, r)
	}
	for _, r := range adding {
		if r.NotAfter.After(now) {
			all = append(all, r)
		}
	}
	rec := crlRecord{Number: prev.Number + 1, ThisUpdate: now.UTC().Truncate(time.Second)}
	rec.NextUpdate = rec.ThisUpdate.Add(s.cfg.CRLValidity)
	var out bytes.Buffer
	for _, signer := range st.crlSigners() {
		ca, err := s.loadCA(ctx, signer, have)
		if err != nil {
			return nil, nil, crlRecord{}, err
		}
		var entries []pki.Revoked
		for _, r := range all {
			// Revocations recorded before issuers were kept go on every CRL: serials are random
			// 128-bit numbers, so listing one under another CA revokes nothing else.
			if r.IssuerID != signer.ID && r.IssuerID != "" {
				continue
			}
			n, ok := new(big.Int).SetString(r.Serial, 16)
			if !ok {
				return nil, nil, crlRecord{}, fmt.Errorf("revoked serial %q is not hex", r.Serial)
			}
			entries = append(entries, pki.Revoked{Serial: n, At: r.At, Reason: r.Reason})
		}
		der, err := ca.CreateCRL(entries, rec.Number, rec.ThisUpdate, rec.NextUpdate)
		if err != nil {
			return nil, nil, crlRecord{}, err
		}
		_ = pem.Encode(&out, &pem.Block{Type: "X509 CRL", Bytes: der}) // a bytes.Buffer does not fail
		rec.Signers = append(rec.Signers, signer.ID)
	}
	if len(rec.Signers) == 0 {
		return nil, nil, crlRecord{}, errors.New("no active CA to sign the CRL")
	}
	rec.PEM = out.String()
	ops = append(ops, store.PutOp(keyCRL, encode(rec)))
	return ops, []store.Cond{store.AtRevision(keyCRL, prevRev)}, rec, nil
}

// revocation is the record of c revoked now for reason.
func revocation(c certRecord, reason certv1.RevocationReason, now time.Time) revokedRecord {
	return revokedRecord{Serial: c.Serial, At: now.UTC().Truncate(time.Second), Reason: int(reason), NotAfter: c.NotAfter, NodeID: c.NodeID, IssuerID: c.IssuerID}
}

// loadCA returns the CA of rec with its key, from have when the caller holds it already.
func (s *Service) loadCA(ctx context.Context, rec caRecord, have []*pki.CA) (*pki.CA, error) {
	for _, ca := range have {
		if pki.Fingerprint(ca.Cert) == rec.ID {
			return ca, nil
		}
	}
	return s.cfg.Authority.load(ctx, rec)
}

// crlDue says, from the mirror, whether the CRL must be re-signed: missing, not signed by exactly the CAs of crlSigners, past
// half its validity, or listing an expired certificate.
func (s *Service) crlDue(now time.Time) bool {
	m := s.cfg.View.Mirror()
	kv, ok := m.Get(keyCRL)
	if !ok {
		return true
	}
	rec, err := decode[crlRecord](kv)
	if err != nil {
		return true
	}
	stKV, ok := m.Get(keyCAState)
	if !ok {
		return false
	}
	st, err := decode[caState](stKV)
	if err != nil {
		return false
	}
	var want []string
	for _, signer := range st.crlSigners() {
		want = append(want, signer.ID)
	}
	if !slices.Equal(want, rec.Signers) {
		return true
	}
	if now.After(rec.ThisUpdate.Add(rec.NextUpdate.Sub(rec.ThisUpdate) / 2)) {
		return true
	}
	for _, kv := range m.List(prefRevoked) {
		if r, err := decode[revokedRecord](kv); err == nil && !r.NotAfter.After(now) {
			return true
		}
	}
	return false
}

// resignCRL publishes a new CRL when one is due. Losing the race to another replica is fine: the
// winner's CRL is as new.
func (s *Service) resignCRL(ctx context.Context) error {
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	now := s.cfg.Now()
	if !s.crlDue(now) {
		return nil
	}
	st, _, err := s.cfg.Authority.State(ctx)
	if err != nil {
		return err
	}
	ops, conds, _, err := s.nextCRL(ctx, st, nil, nil, now)
	if err != nil {
		return err
	}
	if _, err := s.st.Txn(ctx, conds, ops); err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("publish CRL: %w", err)
	}
	return nil
}

// crlJob runs on the elected replica: it keeps the CRL signed well before its next_update and pruned,
// and every TidyEvery removes the records of certificates expired for longer than Retention.
func (s *Service) crlJob(ctx context.Context) error {
	var tidied time.Time
	for {
		if err := s.resignCRL(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Log.Error("re-signing the CRL failed; retrying", "err", err, "in", s.cfg.CRLCheck)
		}
		if now := s.cfg.Now(); now.Sub(tidied) >= s.cfg.TidyEvery {
			n, more, err := s.tidy(ctx, now)
			if !more {
				tidied = now
			}
			if err != nil && ctx.Err() == nil {
				s.cfg.Log.Error("pruning expired certificate records failed; retrying", "err", err, "pruned", n, "in", s.cfg.TidyEvery)
			} else if n > 0 {
				s.cfg.Log.Info("pruned the records of expired certificates", "count", n, "retention", s.cfg.Retention, "more", more)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.cfg.CRLCheck):
		}
	}
}

// GetCRL implements CertService.
func (s *Service) GetCRL(ctx context.Context, _ *certv1.GetCRLRequest) (*certv1.GetCRLResponse, error) {
	kv, err := s.st.Get(ctx, keyCRL)
	if errors.Is(err, store.ErrNotFound) {
		// Only before the elected job's first run.
		if err := s.resignCRL(ctx); err != nil {
			return nil, err
		}
		kv, err = s.st.Get(ctx, keyCRL)
	}
	if err != nil {
		return nil, err
	}
	rec, err := decode[crlRecord](kv)
	if err != nil {
		return nil, err
	}
	return &certv1.GetCRLResponse{CrlPem: rec.PEM, Number: rec.Number, ThisUpdate: ts(rec.ThisUpdate), NextUpdate: ts(rec.NextUpdate)}, nil
}

// RevokeCertificate implements CertService.
func (s *Service) RevokeCertificate(ctx context.Context, req *certv1.RevokeCertificateRequest) (*certv1.RevokeCertificateResponse, error) {
	serial, err := normalizeSerial(req.GetSerial())
	if err != nil {
		return nil, err
	}
	if _, ok := certv1.RevocationReason_name[int32(req.GetReason())]; !ok {
		return nil, apierr.InvalidArg("reason", "unknown revocation reason %d", req.GetReason())
	}
	var out *certv1.RevokeCertificateResponse
	err = retryConflicts(ctx, func() error {
		now := s.cfg.Now()
		kv, err := s.st.Get(ctx, keyCert(serial))
		if errors.Is(err, store.ErrNotFound) {
			return apierr.NotFound("certificate " + serial)
		} else if err != nil {
			return err
		}
		c, err := decode[certRecord](kv)
		if err != nil {
			return err
		}
		if rkv, err := s.st.Get(ctx, keyRevoked(serial)); err == nil {
			// Revoking twice changes nothing; report the standing revocation.
			r, err := decode[revokedRecord](rkv)
			if err != nil {
				return err
			}
			crl, err := s.GetCRL(ctx, nil)
			if err != nil {
				return err
			}
			out = &certv1.RevokeCertificateResponse{Certificate: certToPB(c, &r), CrlNumber: crl.GetNumber()}
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		st, _, err := s.cfg.Authority.State(ctx)
		if err != nil {
			return err
		}
		r := revocation(c, req.GetReason(), now)
		ops, conds, crl, err := s.nextCRL(ctx, st, nil, []revokedRecord{r}, now)
		if err != nil {
			return err
		}
		ops = append(ops, store.PutOp(keyRevoked(serial), encode(r)),
			s.cfg.Audit.Op(ctx, audit.Event{Target: "certificate/" + serial, Outcome: audit.Success, Reason: "certificate revoked",
				Details: map[string]string{"node": c.NodeID, "kind": c.Kind, "reason": req.GetReason().String(), "crl_number": fmt.Sprint(crl.Number)}}))
		if _, err := s.st.Txn(ctx, append(conds, store.MustNotExist(keyRevoked(serial))), ops); err != nil {
			return err
		}
		out = &certv1.RevokeCertificateResponse{Certificate: certToPB(c, &r), CrlNumber: crl.Number}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
