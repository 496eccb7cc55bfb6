package certsvc

import (
	"context"
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
	"github.com/warden-sec/warden/services/internal/token"
)

// errBadJoinToken is all a caller learns about a refused join token: whether it was unknown, expired or
// used is recorded in the audit log only.
var errBadJoinToken = fmt.Errorf("%w: the join token is invalid, expired or already used", apierr.ErrUnauthenticated)

// joinToken is a freshly minted token with the writes that store its hash.
type joinToken struct {
	tok     token.Token
	expires time.Time
	lease   int64
	op      store.Op
}

// newJoinToken mints a token for node and grants the lease that deletes its hash when it expires. If
// the transaction carrying op fails, call drop.
func (s *Service) newJoinToken(ctx context.Context, node string, ttl time.Duration, now time.Time) (joinToken, error) {
	tok, err := token.New(token.JoinPrefix)
	if err != nil {
		return joinToken{}, err
	}
	lease, err := s.st.GrantLease(ctx, ttl)
	if err != nil {
		return joinToken{}, err
	}
	exp := now.Add(ttl).UTC()
	rec := tokenRecord{NodeID: node, ExpiresAt: exp}
	return joinToken{tok: tok, expires: exp, lease: lease, op: store.PutWithLeaseOp(keyToken(tok.Hash()), encode(rec), lease)}, nil
}

func (s *Service) drop(ctx context.Context, jt joinToken) {
	if err := s.st.RevokeLease(context.WithoutCancel(ctx), jt.lease); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.cfg.Log.Warn("revoking the lease of an unused join token failed; it expires with its TTL", "err", err)
	}
}

// CreateNode implements CertService.
func (s *Service) CreateNode(ctx context.Context, req *certv1.CreateNodeRequest) (*certv1.CreateNodeResponse, error) {
	if err := validNodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	role := roleFromPB(req.GetRole())
	if role == "" {
		return nil, apierr.InvalidArg("role", "must be NODE_ROLE_WEBAPP or NODE_ROLE_COREAPP")
	}
	if err := identity.ValidName(req.GetZone()); err != nil {
		return nil, apierr.InvalidArg("zone", "%v", err)
	}
	addrs, err := normalizeAddresses("addresses", req.GetAddresses())
	if err != nil {
		return nil, err
	}
	ttl, err := ttlOf("token_ttl", req.GetTokenTtl(), defaultTokenTTL, time.Second, maxTokenTTL)
	if err != nil {
		return nil, err
	}
	st, _, err := s.cfg.Authority.State(ctx)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	n := nodeRecord{ID: req.GetNodeId(), Role: role, Zone: req.GetZone(), Addresses: addrs, CreatedAt: now.UTC()}
	jt, err := s.newJoinToken(ctx, n.ID, ttl, now)
	if err != nil {
		return nil, err
	}
	rev, err := s.st.Txn(ctx, []store.Cond{store.MustNotExist(keyNode(n.ID))}, []store.Op{
		store.PutOp(keyNode(n.ID), encode(n)), jt.op,
		s.cfg.Audit.Op(ctx, audit.Event{Target: "node/" + n.ID, Outcome: audit.Success, Reason: "node registered",
			Details: map[string]string{"role": role, "zone": n.Zone, "addresses": strings.Join(addrs, ","), "token_expires_at": jt.expires.Format(time.RFC3339)}}),
	})
	if err != nil {
		s.drop(ctx, jt)
		if errors.Is(err, store.ErrConflict) {
			return nil, apierr.AlreadyExists("node " + n.ID)
		}
		return nil, err
	}
	return &certv1.CreateNodeResponse{
		Node:           s.nodeToPB(n, rev, nil),
		JoinToken:      jt.tok.Value(),
		TokenExpiresAt: ts(jt.expires),
		CaFingerprint:  pinFingerprint(st),
	}, nil
}

// CreateJoinToken implements CertService.
func (s *Service) CreateJoinToken(ctx context.Context, req *certv1.CreateJoinTokenRequest) (*certv1.CreateJoinTokenResponse, error) {
	if err := validNodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	ttl, err := ttlOf("ttl", req.GetTtl(), defaultTokenTTL, time.Second, maxTokenTTL)
	if err != nil {
		return nil, err
	}
	st, _, err := s.cfg.Authority.State(ctx)
	if err != nil {
		return nil, err
	}
	_, rev, err := s.readNode(ctx, req.GetNodeId())
	if err != nil {
		return nil, err
	}
	jt, err := s.newJoinToken(ctx, req.GetNodeId(), ttl, s.cfg.Now())
	if err != nil {
		return nil, err
	}
	_, err = s.st.Txn(ctx, []store.Cond{store.AtRevision(keyNode(req.GetNodeId()), rev)}, []store.Op{jt.op,
		s.cfg.Audit.Op(ctx, audit.Event{Target: "node/" + req.GetNodeId(), Outcome: audit.Success, Reason: "join token created",
			Details: map[string]string{"token_expires_at": jt.expires.Format(time.RFC3339)}}),
	})
	if err != nil {
		s.drop(ctx, jt)
		if errors.Is(err, store.ErrConflict) {
			return nil, apierr.FailedPrecondition("node %s changed or was removed meanwhile; retry", req.GetNodeId())
		}
		return nil, err
	}
	return &certv1.CreateJoinTokenResponse{JoinToken: jt.tok.Value(), ExpiresAt: ts(jt.expires), CaFingerprint: pinFingerprint(st)}, nil
}

// Bootstrap implements CertService.
func (s *Service) Bootstrap(ctx context.Context, req *certv1.BootstrapRequest) (*certv1.BootstrapResponse, error) {
	deny := func(target, reason string) error {
		s.cfg.Audit.Record(ctx, audit.Event{Target: target, Outcome: audit.Denied, Reason: reason})
		return errBadJoinToken
	}
	tok, err := token.Parse(req.GetJoinToken(), token.JoinPrefix)
	if err != nil {
		return nil, deny("bootstrap", "malformed join token")
	}
	hash := tok.Hash()
	for attempt := 0; ; attempt++ {
		now := s.cfg.Now()
		kv, err := s.st.Get(ctx, keyToken(hash))
		if errors.Is(err, store.ErrNotFound) {
			if attempt > 0 {
				return nil, deny("bootstrap", "join token used concurrently by another request")
			}
			return nil, deny("bootstrap", "unknown, expired or already used join token")
		} else if err != nil {
			return nil, err
		}
		tr, err := decode[tokenRecord](kv)
		if err != nil {
			return nil, err
		}
		if !now.Before(tr.ExpiresAt) {
			return nil, deny("node/"+tr.NodeID, "expired join token")
		}
		n, nodeRev, err := s.readNode(ctx, tr.NodeID)
		if errors.Is(err, apierr.ErrNotFound) {
			return nil, deny("node/"+tr.NodeID, "join token of a removed node")
		} else if err != nil {
			return nil, err
		}
		// The CSR is checked only once the token is known good, so an unauthenticated caller learns
		// nothing, and a bad CSR does not use the token up.
		csr, err := pki.ParseCSR([]byte(req.GetCsrPem()))
		if err != nil {
			return nil, err
		}
		is, err := s.prepareIssue(ctx, n, nodeRev, kindIdentity, csr.PublicKey, s.inputsFromEtcd, now)
		if err != nil {
			return nil, err
		}
		if n.BootstrappedAt.IsZero() {
			n.BootstrappedAt = now.UTC()
		}
		ops := append(is.ops, store.DeleteOp(keyToken(hash)), store.PutOp(keyNode(n.ID), encode(n)),
			s.cfg.Audit.Op(ctx, issuedEvent(is.rec, "node bootstrapped")))
		// The token's own revision guards single use: of two racing requests only one deletes it.
		conds := append(is.conds, store.AtRevision(keyToken(hash), kv.ModRevision))
		if is.reused {
			// The key already holds a current identity: record the bootstrap, hand the same certificate out.
			conds = append(conds, store.AtRevision(keyNode(n.ID), nodeRev))
		}
		rev, err := s.st.Txn(ctx, conds, ops)
		if errors.Is(err, store.ErrConflict) && attempt < maxConflictRetries {
			continue
		} else if err != nil {
			return nil, err
		}
		st, _, err := s.cfg.Authority.State(ctx)
		if err != nil {
			return nil, err
		}
		return &certv1.BootstrapResponse{Node: s.nodeToPB(n, rev, nil), CertificatePem: is.rec.PEM, TrustBundlePem: string(st.trustBundle())}, nil
	}
}

// GetNode implements CertService.
func (s *Service) GetNode(ctx context.Context, req *certv1.GetNodeRequest) (*certv1.GetNodeResponse, error) {
	if err := validNodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	kv, err := s.st.Get(ctx, keyNode(req.GetNodeId()))
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.NotFound("node " + req.GetNodeId())
	} else if err != nil {
		return nil, err
	}
	n, err := decode[nodeRecord](kv)
	if err != nil {
		return nil, err
	}
	var ack *ackRecord
	if akv, err := s.st.Get(ctx, keyAck(n.ID)); err == nil {
		if a, err := decode[ackRecord](akv); err == nil {
			ack = &a
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return &certv1.GetNodeResponse{Node: s.nodeToPB(n, kv.ModRevision, ack)}, nil
}

// ListNodes implements CertService.
func (s *Service) ListNodes(ctx context.Context, req *certv1.ListNodesRequest) (*certv1.ListNodesResponse, error) {
	size, err := paging.Size(req.GetPageSize(), defaultPageSize, maxPageSize)
	if err != nil {
		return nil, err
	}
	after, err := paging.After(req.GetPageToken(), prefNodes)
	if err != nil {
		return nil, err
	}
	role := ""
	if req.GetRole() != certv1.NodeRole_NODE_ROLE_UNSPECIFIED {
		if role = roleFromPB(req.GetRole()); role == "" {
			return nil, apierr.InvalidArg("role", "unknown role %d", req.GetRole())
		}
	}
	out := &certv1.ListNodesResponse{}
	err = s.scan(ctx, prefNodes, after, size, func(kv store.KV) (bool, error) {
		n, err := decode[nodeRecord](kv)
		if err != nil || (role != "" && n.Role != role) {
			return false, err
		}
		var ack *ackRecord
		if akv, ok := s.cfg.View.Mirror().Get(keyAck(n.ID)); ok {
			if a, err := decode[ackRecord](akv); err == nil {
				ack = &a
			}
		}
		out.Nodes = append(out.Nodes, s.nodeToPB(n, kv.ModRevision, ack))
		return true, nil
	}, func(last string) { out.NextPageToken = paging.Token(last) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// maxScanned bounds the keys one filtered list call reads; past it the page ends early with a token.
const maxScanned = 10000

// scan pages through prefix after the key after, calling take for each key until size were taken.
// When keys remain, next gets the last key looked at.
func (s *Service) scan(ctx context.Context, prefix, after string, size int, take func(store.KV) (bool, error), next func(last string)) error {
	taken, scanned := 0, 0
	for {
		kvs, _, more, err := s.st.List(ctx, prefix, after, size-taken)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			scanned++
			after = kv.Key
			ok, err := take(kv)
			if err != nil {
				return err
			}
			if ok {
				taken++
			}
		}
		switch {
		case !more:
			return nil
		case taken >= size || scanned >= maxScanned:
			next(after)
			return nil
		}
	}
}

// UpdateNode implements CertService.
func (s *Service) UpdateNode(ctx context.Context, req *certv1.UpdateNodeRequest) (*certv1.UpdateNodeResponse, error) {
	if err := validNodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	if err := identity.ValidName(req.GetZone()); err != nil {
		return nil, apierr.InvalidArg("zone", "%v", err)
	}
	addrs, err := normalizeAddresses("addresses", req.GetAddresses())
	if err != nil {
		return nil, err
	}
	n, rev, err := s.readNode(ctx, req.GetNodeId())
	if err != nil {
		return nil, err
	}
	if err := checkVersion(req.GetExpectedVersion(), rev); err != nil {
		return nil, err
	}
	before := strings.Join(n.Addresses, ",")
	n.Zone, n.Addresses = req.GetZone(), addrs
	newRev, err := s.st.Txn(ctx, []store.Cond{store.AtRevision(keyNode(n.ID), rev)}, []store.Op{
		store.PutOp(keyNode(n.ID), encode(n)),
		s.cfg.Audit.Op(ctx, audit.Event{Target: "node/" + n.ID, Outcome: audit.Success, Reason: "node updated",
			Details: map[string]string{"zone": n.Zone, "addresses": strings.Join(addrs, ","), "addresses_before": before}}),
	})
	if err != nil {
		return nil, err
	}
	return &certv1.UpdateNodeResponse{Node: s.nodeToPB(n, newRev, nil)}, nil
}

// DecommissionNode implements CertService.
func (s *Service) DecommissionNode(ctx context.Context, req *certv1.DecommissionNodeRequest) (*certv1.DecommissionNodeResponse, error) {
	if err := validNodeID("node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	if len(req.GetReason()) > 1024 {
		return nil, apierr.InvalidArg("reason", "at most 1024 characters")
	}
	id := req.GetNodeId()
	var out *certv1.DecommissionNodeResponse
	err := retryConflicts(ctx, func() error {
		now := s.cfg.Now()
		_, rev, err := s.readNode(ctx, id)
		if err != nil {
			return err
		}
		idx, _, _, err := s.st.List(ctx, prefNodeIdx+id+"/", "", 0)
		if err != nil {
			return err
		}
		var adding []revokedRecord
		var ops []store.Op
		conds := []store.Cond{store.AtRevision(keyNode(id), rev)}
		for _, kv := range idx {
			serial := strings.TrimPrefix(kv.Key, prefNodeIdx+id+"/")
			ckv, err := s.st.Get(ctx, keyCert(serial))
			if errors.Is(err, store.ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			c, err := decode[certRecord](ckv)
			if err != nil {
				return err
			}
			if !c.NotAfter.After(now) {
				continue
			}
			if _, err := s.st.Get(ctx, keyRevoked(serial)); err == nil {
				continue
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			r := revocation(c, certv1.RevocationReason_REVOCATION_REASON_CESSATION_OF_OPERATION, now)
			adding = append(adding, r)
			ops = append(ops, store.PutOp(keyRevoked(serial), encode(r)))
			conds = append(conds, store.MustNotExist(keyRevoked(serial)))
		}
		tokens, _, _, err := s.st.List(ctx, prefTokens, "", 0)
		if err != nil {
			return err
		}
		for _, kv := range tokens {
			if tr, err := decode[tokenRecord](kv); err == nil && tr.NodeID == id {
				ops = append(ops, store.DeleteOp(kv.Key))
			}
		}
		ops = append(ops, store.DeleteOp(keyNode(id)), store.DeletePrefixOp(prefCurrent+id+"/"), store.DeletePrefixOp(prefByKey+id+"/"), store.DeleteOp(keyAck(id)), store.DeleteOp(keyExternal(id)))
		serials := make([]string, len(adding))
		for i, r := range adding {
			serials[i] = r.Serial
		}
		details := map[string]string{"revoked": strings.Join(serials, ",")}
		if len(adding) > 0 {
			st, _, err := s.cfg.Authority.State(ctx)
			if err != nil {
				return err
			}
			crlOps, crlConds, crl, err := s.nextCRL(ctx, st, nil, adding, now)
			if err != nil {
				return err
			}
			ops, conds = append(ops, crlOps...), append(conds, crlConds...)
			details["crl_number"] = fmt.Sprint(crl.Number)
		}
		ops = append(ops, s.cfg.Audit.Op(ctx, audit.Event{Target: "node/" + id, Outcome: audit.Success, Reason: "node decommissioned: " + req.GetReason(), Details: details}))
		if _, err := s.st.Txn(ctx, conds, ops); err != nil {
			return err
		}
		out = &certv1.DecommissionNodeResponse{RevokedSerials: serials}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
