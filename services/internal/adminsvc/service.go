// Package adminsvc implements warden.admin.v1.AdminService: operator users and bearer tokens, the
// audit log (list, tail, retention), the sealing keys and the status summary.
package adminsvc

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	"github.com/warden-sec/warden/services/internal/audit"
	"github.com/warden-sec/warden/services/internal/authn"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/password"
	"github.com/warden-sec/warden/services/internal/seal"
	"github.com/warden-sec/warden/services/internal/store"
)

// Defaults of Config.
const (
	DefaultTokenLifetime  = 7 * 24 * time.Hour
	DefaultAuditMaxAge    = 90 * 24 * time.Hour
	DefaultAuditMaxEvents = 1_000_000
	DefaultRetentionEvery = time.Hour
)

// RetentionElection picks the one replica that prunes the audit log.
const RetentionElection = "audit-retention"

// Config are the service's dependencies.
type Config struct {
	Store     *store.Store // the service's namespace (Prefix)
	Client    *store.Client
	Certs     *certsvc.View // the node registry, read-only
	Audit     *audit.Log
	Seal      *seal.Keyring // for GetSealStatus and RewrapSealed
	Log       *slog.Logger
	Now       func() time.Time
	ReplicaID string

	// DataDir is wardend's data directory; the bootstrap admin's initial password is written to
	// <DataDir>/admin/initial-password. Empty: no bootstrap admin is created.
	DataDir string
	// DevSeal reports that the seal key was generated in the data dir (a GetStatus warning).
	DevSeal bool
	// TrustDomain and EtcdEndpoints (empty: embedded) are reported by GetStatus.
	TrustDomain   string
	EtcdEndpoints []string
	// Hosted lists the full names of the services this replica hosts.
	Hosted func() []string
	// OpTimeout bounds each etcd call made with the raw client (default store.DefaultOpTimeout).
	OpTimeout time.Duration

	TokenLifetime    time.Duration // default DefaultTokenLifetime
	UserLoginLimit   LoginLimit    // default DefaultUserLoginLimit
	SourceLoginLimit LoginLimit    // default DefaultSourceLoginLimit
	AuditMaxAge      time.Duration // default DefaultAuditMaxAge; negative: no age limit
	AuditMaxEvents   int64         // default DefaultAuditMaxEvents; negative: no count limit
	RetentionEvery   time.Duration // default DefaultRetentionEvery
}

// Service implements warden.admin.v1.AdminService.
type Service struct {
	adminv1.UnsafeAdminServiceServer
	cfg        Config
	userFails  *failureLimiter
	srcFails   *failureLimiter
	dummyHash  string
	rewrapping chan struct{} // one RewrapSealed at a time per replica
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Client == nil || cfg.Certs == nil || cfg.Audit == nil || cfg.Log == nil || cfg.Seal == nil {
		return nil, errors.New("adminsvc: Store, Client, Certs, Audit, Seal and Log are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = store.DefaultOpTimeout
	}
	if cfg.TokenLifetime <= 0 {
		cfg.TokenLifetime = DefaultTokenLifetime
	}
	if cfg.UserLoginLimit.Burst <= 0 || cfg.UserLoginLimit.Every <= 0 {
		cfg.UserLoginLimit = DefaultUserLoginLimit
	}
	if cfg.SourceLoginLimit.Burst <= 0 || cfg.SourceLoginLimit.Every <= 0 {
		cfg.SourceLoginLimit = DefaultSourceLoginLimit
	}
	if cfg.AuditMaxAge == 0 {
		cfg.AuditMaxAge = DefaultAuditMaxAge
	}
	if cfg.AuditMaxEvents == 0 {
		cfg.AuditMaxEvents = DefaultAuditMaxEvents
	}
	if cfg.RetentionEvery <= 0 {
		cfg.RetentionEvery = DefaultRetentionEvery
	}
	if cfg.Hosted == nil {
		cfg.Hosted = func() []string { return []string{adminv1.AdminService_ServiceDesc.ServiceName} }
	}
	// Login verifies unknown users against this hash so that timing does not tell which names exist.
	dummy, err := password.Hash(rand.Text())
	if err != nil {
		return nil, fmt.Errorf("adminsvc: %w", err)
	}
	return &Service{
		cfg:        cfg,
		userFails:  newFailureLimiter(cfg.UserLoginLimit, cfg.Now),
		srcFails:   newFailureLimiter(cfg.SourceLoginLimit, cfg.Now),
		dummyHash:  dummy,
		rewrapping: make(chan struct{}, 1),
	}, nil
}

// Register adds the service to s.
func (s *Service) Register(r grpc.ServiceRegistrar) { adminv1.RegisterAdminServiceServer(r, s) }

// Run creates the bootstrap admin if needed and runs audit retention on the elected replica until
// ctx is done.
func (s *Service) Run(ctx context.Context) error {
	if err := s.bootstrapWithRetry(ctx); err != nil {
		return err
	}
	return s.cfg.Client.RunElected(ctx, RetentionElection, s.cfg.ReplicaID, s.retention)
}

func (s *Service) bootstrapWithRetry(ctx context.Context) error {
	if s.cfg.DataDir == "" {
		return nil
	}
	delay := 100 * time.Millisecond
	for {
		err := s.bootstrap(ctx)
		if err == nil || !errors.Is(err, store.ErrUnavailable) {
			return err
		}
		s.cfg.Log.Warn("bootstrap admin: etcd unavailable, retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// bootstrap creates the user "admin" with a random password on the very first start, when there are
// no users. The marker key makes it happen once per cluster: deleting every user later does not bring
// a known-password admin back. Only the replica whose transaction wins writes the password file.
func (s *Service) bootstrap(ctx context.Context) error {
	if _, err := s.cfg.Store.Get(ctx, keyBootstrap); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	users, _, _, err := s.cfg.Store.List(ctx, prefixUsers, "", 1)
	if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	now := s.cfg.Now()
	if len(users) > 0 {
		_, err := s.cfg.Store.Put(ctx, keyBootstrap, encodeJSON(map[string]any{"at": now, "skipped": true}), store.MustNotExist(keyBootstrap))
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("bootstrap admin: %w", err)
		}
		return nil
	}
	pw := initialPassword()
	hash, err := password.Hash(pw)
	if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	// Write the file first under a temporary name: if the transaction then fails nothing is lost, and
	// if the file cannot be written no admin with an unknowable password is created.
	dir := filepath.Join(s.cfg.DataDir, "admin")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	final := filepath.Join(dir, initialPasswordFile)
	tmp, err := writeTemp(dir, initialPasswordFile, []byte(pw+"\n"))
	if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	defer os.Remove(tmp)
	rec := userRecord{Role: authn.RoleAdmin, PasswordHash: hash, MustChangePassword: true, Created: now}
	ctx = audit.System(ctx, s.cfg.TrustDomain, s.cfg.ReplicaID)
	_, err = s.cfg.Store.Txn(ctx,
		[]store.Cond{store.MustNotExist(keyBootstrap), store.MustNotExist(keyUser(bootstrapUser))},
		[]store.Op{
			store.PutOp(keyBootstrap, encodeJSON(map[string]any{"at": now})),
			store.PutOp(keyUser(bootstrapUser), encodeJSON(rec)),
			s.cfg.Audit.Op(ctx, audit.Event{Target: "user/" + bootstrapUser, Outcome: audit.Success,
				Reason: "bootstrap admin created on first start", Details: map[string]string{"role": string(authn.RoleAdmin)}}),
		})
	if errors.Is(err, store.ErrConflict) {
		return nil // another replica did it
	}
	if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	s.cfg.Log.Warn("created the bootstrap operator \"admin\"; its initial password must be changed at first login", "password_file", final)
	return nil
}

// initialPassword is random and always satisfies the password rules.
func initialPassword() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return "Wd1-" + base64.RawURLEncoding.EncodeToString(b[:])
}

func writeTemp(dir, name string, data []byte) (string, error) {
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-*")
	if err != nil {
		return "", err
	}
	err = errors.Join(f.Chmod(0o600), func() error { _, e := f.Write(data); return e }(), f.Sync(), f.Close())
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// retention prunes the audit log while this replica leads "audit-retention".
func (s *Service) retention(ctx context.Context) error {
	t := time.NewTicker(s.cfg.RetentionEvery)
	defer t.Stop()
	for {
		maxAge, maxEvents := max(s.cfg.AuditMaxAge, 0), max(s.cfg.AuditMaxEvents, 0)
		n, err := audit.Prune(ctx, s.cfg.Client, s.cfg.OpTimeout, s.cfg.Now(), maxAge, maxEvents)
		if err != nil && ctx.Err() == nil {
			s.cfg.Log.Warn("audit retention", "err", err, "deleted", n)
		} else if n > 0 {
			s.cfg.Log.Info("audit retention", "deleted", n, "max_age", maxAge, "max_events", maxEvents)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
