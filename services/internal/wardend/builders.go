package wardend

import (
	"time"

	adminv1 "github.com/warden-sec/warden/gen/warden/admin/v1"
	certv1 "github.com/warden-sec/warden/gen/warden/cert/v1"
	meshv1 "github.com/warden-sec/warden/gen/warden/mesh/v1"
	policyv1 "github.com/warden-sec/warden/gen/warden/policy/v1"
	secretv1 "github.com/warden-sec/warden/gen/warden/secret/v1"
	"github.com/warden-sec/warden/services/internal/adminsvc"
	"github.com/warden-sec/warden/services/internal/certsvc"
	"github.com/warden-sec/warden/services/internal/meshsvc"
	"github.com/warden-sec/warden/services/internal/policysvc"
	"github.com/warden-sec/warden/services/internal/secretsvc"
)

// Builders are the services selectable with --services.
func Builders() []Builder {
	return []Builder{
		{Name: SvcCert, ServiceName: certv1.CertService_ServiceDesc.ServiceName, Build: func(p *Platform) (Hosted, error) {
			return certsvc.New(certsvc.Config{
				Store: p.Client.Namespace(certsvc.Prefix), Client: p.Client, Authority: p.Authority, View: p.Certs,
				Audit: p.Audit, Seal: p.Seal, Log: p.Log.With("service", "cert"), Now: time.Now, ReplicaID: p.ReplicaID,
				Metrics: p.Metrics,
			})
		}},
		{Name: SvcSecret, ServiceName: secretv1.SecretService_ServiceDesc.ServiceName, Build: func(p *Platform) (Hosted, error) {
			return secretsvc.New(secretsvc.Config{
				Store: p.Client.Namespace(secretsvc.Prefix), Client: p.Client, Certs: p.Certs, Audit: p.Audit,
				Seal: p.Seal, Metrics: p.Metrics,
				Log: p.Log.With("service", "secret"), Now: time.Now, ReplicaID: p.ReplicaID, TrustDomain: p.Config.TrustDomain,
			})
		}},
		{Name: SvcPolicy, ServiceName: policyv1.PolicyService_ServiceDesc.ServiceName, Build: func(p *Platform) (Hosted, error) {
			return policysvc.New(policysvc.Config{
				Store: p.Client.Namespace(policysvc.Prefix), Client: p.Client, Certs: p.Certs, Audit: p.Audit,
				Log: p.Log.With("service", "policy"), Now: time.Now, ReplicaID: p.ReplicaID, TrustDomain: p.Config.TrustDomain,
				Metrics: p.Metrics,
			})
		}},
		{Name: SvcMesh, ServiceName: meshv1.MeshService_ServiceDesc.ServiceName, Build: func(p *Platform) (Hosted, error) {
			return meshsvc.New(meshsvc.Config{
				Store: p.Client.Namespace(meshsvc.Prefix), Client: p.Client, Certs: p.Certs, Audit: p.Audit,
				Log: p.Log.With("service", "mesh"), Now: time.Now, ReplicaID: p.ReplicaID,
			})
		}},
	}
}

// AlwaysHosted are the services every replica hosts whatever --services says.
func AlwaysHosted() []Builder {
	return []Builder{
		{ServiceName: adminv1.AdminService_ServiceDesc.ServiceName, Build: func(p *Platform) (Hosted, error) {
			return adminsvc.New(adminsvc.Config{
				Store: p.Client.Namespace(adminsvc.Prefix), Client: p.Client, Certs: p.Certs, Audit: p.Audit,
				Seal: p.Seal, Log: p.Log.With("service", "admin"), Now: time.Now, ReplicaID: p.ReplicaID,
				DataDir: p.Config.DataDir, DevSeal: p.DevSeal, TrustDomain: p.Config.TrustDomain,
				EtcdEndpoints: p.Config.EtcdEndpoints, OpTimeout: p.Config.EtcdTimeout,
				Hosted: func() []string { return hostedServices(p.Config) },
			})
		}},
	}
}

// hostedServices are the full names of the services a replica with cfg hosts, in the order wardend
// builds them.
func hostedServices(cfg *Config) []string {
	var names []string
	for _, b := range append(AlwaysHosted(), Builders()...) {
		if b.Name == "" || cfg.Hosts(b.Name) {
			names = append(names, b.ServiceName)
		}
	}
	return names
}
