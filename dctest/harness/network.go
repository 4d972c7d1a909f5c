package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"

	"github.com/ferry-cd/ferry/dctest/machine"
)

// network is where the datacenter's services listen and how the test
// reaches them: the host's loopback for process scenarios, or a lab
// network of namespaces for machine scenarios.
type network interface {
	// listen opens a listener for a service on the named host.
	listen(host string, port int) (net.Listener, error)
	// command prepares a program to run on the named host's network.
	command(ctx context.Context, host, name string, args ...string) *exec.Cmd
	// dial connects from the test process, as the admin host would.
	dial(ctx context.Context, network, addr string) (net.Conn, error)
	// addr is the named host's address.
	addr(host string) string
	close() error
}

// loopback is the host's own loopback: every service on a free port.
type loopback struct{}

func (loopback) listen(string, int) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func (loopback) command(ctx context.Context, _, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

func (loopback) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (loopback) addr(string) string { return "127.0.0.1" }
func (loopback) close() error       { return nil }

// Hosts of a lab datacenter, besides the boot servers.
const (
	hostAdmin    = "admin"    // the test itself and the admin CLI
	hostGitHub   = "github"   // the GitHub fake, alone so that it can be cut off
	hostServices = "services" // registry, boot-content source, notification receiver
)

// lab is a private network of namespaces (dctest/machine).
type lab struct {
	*machine.Lab
}

func newLab(etcdMembers int) (*lab, error) {
	l, err := machine.NewLab()
	if err != nil {
		return nil, fmt.Errorf("lab network: %w", err)
	}
	names := []string{hostAdmin, hostGitHub, hostServices}
	for i := range etcdMembers {
		names = append(names, etcdHost(i))
	}
	for _, n := range names {
		if _, err := l.AddHost(n); err != nil {
			l.Close()
			return nil, fmt.Errorf("lab host %s: %w", n, err)
		}
	}
	return &lab{Lab: l}, nil
}

func etcdHost(i int) string { return fmt.Sprintf("etcd%d", i) }

func (l *lab) host(name string) *machine.Host {
	h, ok := l.Host(name)
	if !ok {
		panic("lab has no host " + name)
	}
	return h
}

func (l *lab) listen(host string, port int) (net.Listener, error) { return l.host(host).Listen(port) }

func (l *lab) command(ctx context.Context, host, name string, args ...string) *exec.Cmd {
	return l.host(host).Command(ctx, name, args...)
}

func (l *lab) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return l.host(hostAdmin).DialContext(ctx, network, addr)
}

func (l *lab) addr(host string) string { return l.host(host).IP }
func (l *lab) close() error            { return l.Close() }

// serve starts an HTTP test server on l.
func serve(l net.Listener, h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	return srv
}

// listenAddr is a free address on a host of the network: a fixed port on
// a lab host (each has its own address), a free one on loopback.
func listenAddr(n network, host string, port int) (string, error) {
	if _, ok := n.(loopback); ok {
		return freePort()
	}
	return net.JoinHostPort(n.addr(host), strconv.Itoa(port)), nil
}

// uplinkHosts are the lab's "internet": GitHub, and the registry beside the
// other services.
var uplinkHosts = []string{hostGitHub, hostServices}

// ShapeUplink limits what GitHub and the registry send into a lab
// datacenter to rate (tc's notation, such as 100mbit), as the site's
// uplink would.
func (dc *Datacenter) ShapeUplink(rate string) error {
	l, ok := dc.net.(*lab)
	if !ok {
		return fmt.Errorf("only a lab datacenter has an uplink to shape")
	}
	for _, h := range uplinkHosts {
		if err := l.host(h).Shape(rate); err != nil {
			return err
		}
	}
	return nil
}

// UplinkBytes is how many bytes GitHub and the registry have sent into a
// lab datacenter.
func (dc *Datacenter) UplinkBytes() (int64, error) {
	l, ok := dc.net.(*lab)
	if !ok {
		return 0, fmt.Errorf("only a lab datacenter has an uplink")
	}
	var total int64
	for _, h := range uplinkHosts {
		n, err := l.host(h).SentBytes()
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}
