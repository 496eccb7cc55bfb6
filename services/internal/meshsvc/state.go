package meshsvc

import (
	"fmt"
	"slices"
	"strings"
)

// member is a live member as read from the mirror.
type member struct {
	node  string
	rec   memberRecord
	lease int64
}

// state is one consistent read of the mesh from the mirror.
type state struct {
	config        configRecord
	configVersion int64
	members       []member // sorted by node id
	master        string   // "" when election is off or the master is gone
	version       int64    // of the snapshot inputs: members, master, config
}

func (s *Service) readState() state {
	st := state{config: defaultConfig()}
	if kv, ok := s.mirror.Get(keyConfig); ok {
		if c, err := decodeJSON[configRecord](kv.Value); err == nil {
			st.config, st.configVersion = c, kv.ModRevision
		} else {
			s.cfg.Log.Error("mesh config unreadable; using defaults", "err", err)
		}
	}
	for _, kv := range s.mirror.List(prefixMembers) {
		rec, err := decodeJSON[memberRecord](kv.Value)
		if err != nil {
			s.cfg.Log.Error("mesh member record unreadable; skipping it", "key", kv.Key, "err", err)
			continue
		}
		st.members = append(st.members, member{node: strings.TrimPrefix(kv.Key, prefixMembers), rec: rec, lease: kv.Lease})
	}
	if kv, ok := s.mirror.Get(keyMaster); ok && st.config.MasterElection && st.isMember(string(kv.Value)) {
		st.master = string(kv.Value)
	}
	st.version = max(s.mirror.Version(prefixMembers), s.mirror.Version(keyMaster), s.mirror.Version(keyConfig))
	return st
}

func (st state) isMember(node string) bool {
	_, ok := slices.BinarySearchFunc(st.members, node, func(m member, n string) int { return strings.Compare(m.node, n) })
	return ok
}

// warnings are the mesh's health problems in words.
func (st state) warnings() []string {
	var w []string
	live, shards := len(st.members), int(st.config.Shards)
	if live < shards {
		w = append(w, fmt.Sprintf("%d live Coreapps for %d shards", live, shards))
	}
	if live <= shards {
		w = append(w, "no high availability: live Coreapps not more than shards")
	}
	if st.config.MasterElection && st.master == "" {
		eligible := 0
		for _, m := range st.members {
			if m.rec.MasterEligible {
				eligible++
			}
		}
		if eligible == 0 {
			w = append(w, "master election is on but no live member is master-eligible")
		} else {
			w = append(w, "master election is on but no master is elected yet")
		}
	}
	return w
}
