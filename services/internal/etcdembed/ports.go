package etcdembed

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

const endpointsFile = "endpoints.json"

// endpoints is what DataDir/etcd/endpoints.json holds. Ports are picked from
// the kernel's free ports rather than fixed, so a standard etcd on 2379/2380
// or a second wardend with another data dir never collides with us.
type endpoints struct {
	ClientPort int `json:"client_port"`
	// PeerPort is part of the member's identity: etcd stores the advertised
	// peer URL in its membership, so it is chosen once and never changed.
	PeerPort int `json:"peer_port"`
}

func loadEndpoints(dir string) (endpoints, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, endpointsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return endpoints{}, false, nil
	}
	if err != nil {
		return endpoints{}, false, fmt.Errorf("read %s: %w", endpointsFile, err)
	}
	var ep endpoints
	if err := json.Unmarshal(b, &ep); err != nil {
		return endpoints{}, false, fmt.Errorf("parse %s: %w", endpointsFile, err)
	}
	if !validPort(ep.ClientPort) || !validPort(ep.PeerPort) {
		return endpoints{}, false, fmt.Errorf("%s: invalid ports %d/%d", endpointsFile, ep.ClientPort, ep.PeerPort)
	}
	return ep, true, nil
}

func validPort(p int) bool { return p > 0 && p < 65536 }

// saveEndpoints replaces the file atomically: a torn write would lose the peer
// port and with it the ability to restart.
func saveEndpoints(dir string, ep endpoints) error {
	b, err := json.MarshalIndent(ep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", endpointsFile, err)
	}
	tmp, err := os.CreateTemp(dir, "."+endpointsFile+"-")
	if err != nil {
		return fmt.Errorf("create %s: %w", endpointsFile, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", endpointsFile, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", endpointsFile, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", endpointsFile, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, endpointsFile)); err != nil {
		return fmt.Errorf("install %s: %w", endpointsFile, err)
	}
	return nil
}

// freePort asks the kernel for an unused loopback port other than those in
// avoid (ports we hold for ourselves but have not bound yet). Another process
// may take it before etcd binds; Start retries on that.
func freePort(avoid ...int) (int, error) {
	for {
		l, err := net.Listen("tcp", net.JoinHostPort(loopback, "0"))
		if err != nil {
			return 0, fmt.Errorf("find free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !slices.Contains(avoid, port) {
			return port, nil
		}
	}
}

// portFree reports whether port can be bound on loopback right now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(loopback, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
