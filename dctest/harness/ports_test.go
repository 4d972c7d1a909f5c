package harness

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortsAreDistinctAndBelowTheEphemeralRange: a port once handed
// out is not handed out again, and none comes from the range the kernel
// gives port 0 listeners and outgoing connections.
func TestFreePortsAreDistinctAndBelowTheEphemeralRange(t *testing.T) {
	low, high := reservedRange()
	seen := map[string]bool{}
	for range 50 {
		addr, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if port < low || port >= high {
			t.Fatalf("%s is outside %d-%d", addr, low, high)
		}
	}
	// A port something listens on is skipped.
	ports.Lock()
	next := ports.next
	ports.Unlock()
	taken := net.JoinHostPort("127.0.0.1", strconv.Itoa(next))
	// If something else holds it already, it is taken all the same.
	if l, err := net.Listen("tcp", taken); err == nil {
		defer l.Close()
	}
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	if addr == taken {
		t.Fatalf("%s handed out while something listens on it", addr)
	}
}
