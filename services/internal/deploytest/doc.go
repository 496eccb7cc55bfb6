// Package deploytest checks the files under deploy/ without running them: the docker-compose file and
// the Kubernetes manifests are parsed and their network segregation asserted, the systemd units are read
// as INI, and the example configuration files are loaded through the real wardend and warden-agent
// configuration code. It has no non-test code.
package deploytest
