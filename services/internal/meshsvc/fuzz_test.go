package meshsvc

import (
	"net"
	"strconv"
	"testing"
)

// FuzzValidAddress checks that control addresses from agents are either refused or really host:port.
func FuzzValidAddress(f *testing.F) {
	for _, s := range []string{"127.0.0.1:7500", "[::1]:443", "core-1.example:0", ":80", "host", "h:99999", "h:-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		if validAddress(addr) != nil {
			return
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || len(addr) > 255 {
			t.Fatalf("accepted %q", addr)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			t.Fatalf("accepted port of %q", addr)
		}
	})
}

func TestPartitions(t *testing.T) {
	nodes := []string{"a", "b", "c", "d"}
	reach := map[[2]string]bool{
		{"a", "b"}: true, {"b", "a"}: true, // mutual
		{"c", "d"}: true, {"d", "c"}: false, // one-way only
		{"b", "c"}: true, // no answer from c
	}
	got := partitions(nodes, reach)
	want := [][]string{{"a", "b"}, {"c"}, {"d"}}
	if len(got) != len(want) {
		t.Fatalf("partitions %v, want %v", got, want)
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("partitions %v, want %v", got, want)
		}
		for j := range want[i] {
			if got[i][j] != want[i][j] {
				t.Fatalf("partitions %v, want %v", got, want)
			}
		}
	}
}
