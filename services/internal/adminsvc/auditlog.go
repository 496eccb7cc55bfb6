package adminsvc

import (
	"context"
	"fmt"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/apierr"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/paging"
	"github.com/warden-sec/warden/services/internal/store"
)

const (
	defaultAuditPage = 100
	maxAuditPage     = 1000
	// maxFilterLen bounds filter strings; nothing stored is longer in practice.
	maxFilterLen = 512
)

// ListAuditEvents pages through the audit log newest first. With selective filters a page may hold
// fewer events than asked (even none) while next_page_token is set: each call examines a bounded
// number of events so that one request cannot walk a log of millions.
func (s *Service) ListAuditEvents(ctx context.Context, req *adminv1.ListAuditEventsRequest) (*adminv1.ListAuditEventsResponse, error) {
	size, err := paging.Size(req.GetPageSize(), defaultAuditPage, maxAuditPage)
	if err != nil {
		return nil, err
	}
	for field, v := range map[string]string{"actor": req.GetActor(), "method": req.GetMethod(), "target_prefix": req.GetTargetPrefix()} {
		if len(v) > maxFilterLen {
			return nil, apierr.InvalidArg(field, "longer than %d bytes", maxFilterLen)
		}
	}
	if _, ok := adminv1.Outcome_name[int32(req.GetOutcome())]; !ok {
		return nil, apierr.InvalidArg("outcome", "unknown outcome %d", req.GetOutcome())
	}
	q := audit.Query{
		Actor: req.GetActor(), Method: req.GetMethod(), TargetPrefix: req.GetTargetPrefix(), Outcome: req.GetOutcome(),
		Limit: size, MaxScan: max(10*size, 5000),
	}
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return nil, apierr.InvalidArg("since", "%v", err)
		}
		q.Since = req.GetSince().AsTime()
	}
	if req.GetPageToken() != "" {
		id, err := paging.After(req.GetPageToken(), "")
		if err != nil || !audit.ValidID(id) {
			return nil, apierr.InvalidArg("page_token", "not a token from next_page_token")
		}
		q.Before = id
	}
	page, err := audit.List(ctx, s.cfg.Client, s.cfg.OpTimeout, q)
	if err != nil {
		return nil, err
	}
	resp := &adminv1.ListAuditEventsResponse{}
	for _, e := range page.Entries {
		resp.Events = append(resp.Events, e.Event)
	}
	if page.Next != "" {
		resp.NextPageToken = paging.Token(page.Next)
	}
	return resp, nil
}

// WatchAuditEvents tails the log. Events are sent in revision order; after_revision 0 means only
// events written after the call.
func (s *Service) WatchAuditEvents(req *adminv1.WatchAuditEventsRequest, stream adminv1.AdminService_WatchAuditEventsServer) error {
	ctx := stream.Context()
	after := req.GetAfterRevision()
	if after < 0 {
		return apierr.InvalidArg("after_revision", "must not be negative")
	}
	if after == 0 {
		rev, err := s.currentRevision(ctx)
		if err != nil {
			return err
		}
		after = rev
	}
	// Headers tell the client the tail has started: everything written from now on will be sent.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for b := range s.cfg.Audit.Store().Watch(ctx, "", after+1) {
		// A Reset (the history was compacted) holds the whole log; audit events are written once and
		// never changed, so the ones written after the resume point are exactly those with a later
		// revision.
		events := b.Events
		if b.Reset {
			events = slices.Clone(events)
			slices.SortFunc(events, func(a, b store.Event) int { return int(a.KV.ModRevision - b.KV.ModRevision) })
		}
		for _, e := range events {
			if e.Type != store.EventPut || e.KV.ModRevision <= after {
				continue
			}
			ev, err := audit.Decode(e.KV.Value)
			if err != nil {
				s.cfg.Log.Warn("skipping undecodable audit event", "key", e.KV.Key, "err", err)
				continue
			}
			if err := stream.Send(&adminv1.WatchAuditEventsResponse{Event: ev, Revision: e.KV.ModRevision}); err != nil {
				return err
			}
			after = e.KV.ModRevision
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("audit watch ended: %w", store.ErrUnavailable)
}

// currentRevision is etcd's revision now, read with a count-only request that touches no data.
func (s *Service) currentRevision(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	resp, err := s.cfg.Client.Raw().Get(rctx, audit.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithLimit(1))
	if err != nil {
		return 0, fmt.Errorf("current revision: %w: %w", store.ErrUnavailable, err)
	}
	return resp.Header.Revision, nil
}
