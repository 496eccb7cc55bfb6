package agenttest

import (
	"bufio"
	"io"
	"net"
	"testing"
)

// LineEcho listens on loopback as a stand-in Coreapp: every connection gets back prefix followed by
// the first line it sent. It stops when the test ends.
func LineEcho(t testing.TB, prefix string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				_, _ = io.WriteString(c, prefix+line)
			}()
		}
	}()
	return ln
}
