// Package etcdcluster runs a real multi-member etcd cluster in-process on loopback for scale-out and
// fault tests: members can be stopped (member loss, quorum loss) and restarted. Imported only by tests.
package etcdcluster

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is a running cluster.
type Cluster struct {
	t       testing.TB
	mu      sync.Mutex
	members []*member
	initial string
}

type member struct {
	name               string
	dir                string
	clientURL, peerURL url.URL
	etcd               *embed.Etcd
}

// Start starts n members and waits until they serve.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var parts []string
	for i := range n {
		m := &member{name: fmt.Sprintf("m%d", i), dir: t.TempDir(), clientURL: freeURL(t), peerURL: freeURL(t)}
		c.members = append(c.members, m)
		parts = append(parts, m.name+"="+m.peerURL.String())
	}
	c.initial = strings.Join(parts, ",")
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- c.startMember(i, embed.ClusterStateFlagNew) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.StopAll)
	return c
}

func freeURL(t testing.TB) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

func (c *Cluster) startMember(i int, state string) error {
	m := c.members[i]
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.InitialCluster = c.initial
	cfg.InitialClusterToken = "warden-test"
	cfg.ClusterState = state
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.EnableGRPCGateway = false
	// Short election timeouts make member-loss tests converge quickly on loopback.
	cfg.TickMs = 50
	cfg.ElectionMs = 500
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return fmt.Errorf("%s not ready after 60s", m.name)
	}
	c.mu.Lock()
	m.etcd = e
	c.mu.Unlock()
	return nil
}

// Endpoints are every member's client URL.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.clientURL.String())
	}
	return out
}

// Stop stops member i (a member loss).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	e := c.members[i].etcd
	c.members[i].etcd = nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts a stopped member again with its data.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.startMember(i, embed.ClusterStateFlagExisting); err != nil {
		c.t.Fatal(err)
	}
}

// StopAll stops every member.
func (c *Cluster) StopAll() {
	for i := range c.members {
		c.Stop(i)
	}
}
