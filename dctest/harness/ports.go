package harness

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Addresses that a process must be able to bind again later (an etcd
// member's client and peer URLs, an updater's status page across restarts)
// cannot be taken with port 0 and kept: the port is free between the test
// choosing it and the process binding it, and whenever the process is
// down. Datacenters run side by side, so another one's listener or any
// outgoing connection could take it in between. These ports therefore
// come from below the kernel's ephemeral range, which port 0 and outgoing
// connections never use, and each is handed out once per test process.
var ports struct {
	sync.Mutex
	next, low, high int
}

// freePort returns a loopback address on a port no other caller of this
// process got, and that nothing listened on when it was chosen.
func freePort() (string, error) {
	ports.Lock()
	defer ports.Unlock()
	if ports.high == 0 {
		ports.low, ports.high = reservedRange()
		// Start where another test process is unlikely to: by process id.
		ports.next = ports.low + os.Getpid()%(ports.high-ports.low)
	}
	for range ports.high - ports.low {
		port := ports.next
		ports.next++
		if ports.next >= ports.high {
			ports.next = ports.low
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr, nil
		}
	}
	return "", fmt.Errorf("no free loopback port in %d-%d", ports.low, ports.high)
}

// reservedRange is the range ports come from: from 10000 to the start of
// the ephemeral range (32768 by default).
func reservedRange() (low, high int) {
	low, high = 10000, 32768
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return low, high
	}
	f := strings.Fields(string(data))
	if len(f) == 2 {
		if start, err := strconv.Atoi(f[0]); err == nil && start > low+1000 {
			high = start
		}
	}
	return low, high
}
