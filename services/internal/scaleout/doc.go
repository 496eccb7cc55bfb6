// Package scaleout holds the scale-out integration test of issue 8: a real three-member etcd cluster on
// loopback, three in-process wardend replicas sharing it, a raw stream client with a list of endpoints
// and a real warden-agent (internal/agent, in-process) pointed at all three replicas. It shows that any
// replica serves any agent, that periodic jobs run on exactly one replica and move when it stops, that
// agents fail over without duplicate deliveries, that writes and pushes survive the loss of one etcd
// member and one replica, and that with quorum lost writes fail with Unavailable while agents keep
// serving their cached state.
//
// The package has no code outside its tests.
package scaleout
