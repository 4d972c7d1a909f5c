package machine

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLabBootsMachines boots two machines on a lab and checks that they
// reach each other and the test's own listener, that a cut link drops
// their traffic, and that nothing is left when the lab closes.
func TestLabBootsMachines(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the lab needs root (network namespaces, mounts, systemd-nspawn); run it as root, after make deps")
	}
	base, err := Image(context.Background(), "")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lab, err := NewLab()
	require.NoError(t, err)
	defer func() {
		require.NoError(t, lab.Close())
		require.Empty(t, LeftoversOf(lab.Name()))
		require.False(t, isMountPoint(nspawnRun) && nspawnMount.mounted)
	}()
	svc, err := lab.AddHost("svc")
	require.NoError(t, err)
	l, err := svc.Listen(8080)
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from the lab") })}
	go srv.Serve(l)
	defer srv.Close()

	dir := t.TempDir()
	m, err := lab.NewMachine("boot-0", base, dir)
	require.NoError(t, err)
	began := time.Now()
	require.NoError(t, m.Boot(ctx))
	t.Logf("booted in %s", time.Since(began))
	get := `exec 3<>/dev/tcp/` + svc.IP + `/8080 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && timeout 3 cat <&3`
	out, err := m.Exec(ctx, "bash", "-c", get)
	require.NoError(t, err)
	require.Contains(t, out, "hello from the lab")
	// A cut link drops the machine's packets.
	require.NoError(t, m.Host.Cut())
	_, err = m.Exec(ctx, "timeout", "2", "bash", "-c", get)
	require.Error(t, err)
	require.NoError(t, m.Host.Mend())
	// The failed address resolution of the cut may answer "no route to
	// host" for a moment after the link is back, until the kernel asks
	// again: a client tries again, as ferry's do.
	require.Eventually(t, func() bool {
		out, err = m.Exec(ctx, "bash", "-c", get)
		return err == nil
	}, 20*time.Second, 200*time.Millisecond, "the mended link carries the machine's packets: %s", out)
	// The machine's own root: a file written inside shows in its root.
	_, err = m.Exec(ctx, "sh", "-c", "echo inside > /root/mark")
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(m.Root, "root/mark"))
	require.NoError(t, err)
	require.Equal(t, "inside\n", string(data))
	// The host's network is not the machine's.
	out, err = m.Exec(ctx, "ip", "-4", "-o", "addr")
	require.NoError(t, err)
	require.Contains(t, out, m.Host.IP)
	// Powered off and booted again, it keeps its root.
	m.PowerOff()
	require.NoError(t, m.Boot(ctx))
	data, err = os.ReadFile(filepath.Join(m.Root, "root/mark"))
	require.NoError(t, err)
	require.Equal(t, "inside\n", string(data))
}
