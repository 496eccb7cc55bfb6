// Package faults holds the fault tests of issue 9, all on loopback and bounded:
//
//   - TestKill9DuringWriteBurst: wardend runs as a process on an embedded etcd; a client records every
//     write it got an OK for, wardend is killed with SIGKILL in the middle of the burst and restarted
//     on the same data dir, and every acknowledged write is still there.
//   - etcd member loss (and quorum loss) is covered by internal/scaleout.TestScaleOut, which runs a real
//     three-member cluster under three replicas.
//   - TestAgentDiskFull and TestAgentReadOnlyCertsDir: a real warden-agent process whose writes start
//     failing (RLIMIT_FSIZE lowered to zero on the running process; the certs directory made immutable,
//     or read-only when not root) reports a clear error, keeps every old file intact, and catches up once
//     the fault is lifted.
//   - TestClockSkew: an agent whose clock runs 8 s ahead (the agent's clock hook) is flagged by
//     ListClockSkew, and the envelope refuses messages sealed 6 s ahead (ErrFuture) or behind
//     (ErrExpired) of the receiver while accepting 4 s, with keys from the WA_SECRET the agent holds.
//
// The package has no code outside its tests.
package faults
