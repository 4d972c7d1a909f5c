package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-cd/ferry/internal/containerdtest"
	"github.com/ferry-cd/ferry/internal/debtest"
	"github.com/ferry-cd/ferry/internal/githubfake"
	"github.com/ferry-cd/ferry/internal/registrytest"
	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/bootcontents"
	"github.com/ferry-cd/ferry/pkg/deb"
	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/images"
	"github.com/ferry-cd/ferry/pkg/release"
	"github.com/stretchr/testify/require"
)

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestPlanAgainstRealComponents runs a plan with every kind of action on two
// servers: an extra .deb from a GitHub release into each server's dpkg
// root, images from a loopback registry into a real containerd (one
// namespace a server), the restart of the units of changed images, and boot
// contents published once for the fleet. A second rollout of the same set
// downloads nothing.
func TestPlanAgainstRealComponents(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	gh := githubfake.New()
	defer gh.Close()
	reg := registrytest.New()
	defer reg.Close()
	ctd := containerdtest.New(t)

	var osRequests atomic.Int64
	osSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		osRequests.Add(1)
		w.Write([]byte("os-" + r.URL.Path))
	}))
	defer osSrv.Close()

	toolsDeb := debtest.Build(t, f.dir, debtest.Package{Name: "acme-tools", Version: "1.2.0", Files: map[string]string{"/usr/bin/acme-tool": "#!/bin/sh\necho tool\n"}})
	toolsBytes, err := os.ReadFile(toolsDeb)
	require.NoError(t, err)
	gh.AddRelease("acme/tools", githubfake.ReleaseSpec{Tag: "v1.2.0", Assets: map[string][]byte{"acme-tools_1.2.0_amd64.deb": toolsBytes}})
	dnsDigest := reg.MustPush(t, "acme/coredns", "1.11.1")
	ntpDigest := reg.MustPush(t, "acme/chrony", "4.3")

	ignDir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(ignDir, "boot.yml"), []byte(`{"os": "{{.OSVersion}}"}`), 0o644))
	set := &artifacts.Set{
		Debs: []artifacts.Deb{{Name: "acme-tools", Repository: "acme/tools", Release: "v1.2.0", Asset: "acme-tools_1.2.0_amd64.deb", Version: "1.2.0", Size: int64(len(toolsBytes)), SHA256: sha(toolsBytes)}},
		Images: []artifacts.Image{
			{Name: "coredns", Repository: reg.Host + "/acme/coredns", Tag: "1.11.1", Digest: dnsDigest, Units: []string{"coredns.service"}},
			{Name: "chrony", Repository: reg.Host + "/acme/chrony", Tag: "4.3", Digest: ntpDigest},
		},
		OSImage: &artifacts.OSImage{Channel: "stable", Version: "3760.2.0",
			Kernel: artifacts.File{URL: osSrv.URL + "/kernel", Size: int64(len("os-/kernel")), SHA256: sha([]byte("os-/kernel"))},
			Initrd: artifacts.File{URL: osSrv.URL + "/initrd", Size: int64(len("os-/initrd")), SHA256: sha([]byte("os-/initrd"))}},
		Ignitions: []artifacts.Ignition{{Source: "boot.yml", Role: "boot"}},
		Plan: artifacts.Plan{Steps: []artifacts.Step{
			{Name: "debs", Strategy: artifacts.Rolling, Parallel: 1, Actions: []artifacts.Action{{Debs: &artifacts.DebsAction{}}}},
			{Name: "images", Strategy: artifacts.Lockstep, Actions: []artifacts.Action{{Images: &artifacts.ImagesAction{}}}},
			{Name: "boot", Strategy: artifacts.Leader, Actions: []artifacts.Action{{BootContents: &artifacts.BootContentsAction{}}}},
		}},
	}
	require.NoError(t, set.Validate())
	f.useGitHub(gh.APIURL())

	bootDir := filepath.Join(f.dir, "boot-contents")
	restartLog := filepath.Join(f.dir, "restarts")
	servers := []string{"boot-0", "boot-1"}
	roots := map[string]*debtest.Root{}
	// The servers run ferry v1, as dpkg installed it: the worker checks.
	ferryDeb := debtest.Build(t, f.dir, debtest.Package{Name: "ferry", Version: v1})
	for _, s := range servers {
		root, err := debtest.NewRoot(filepath.Join(f.dir, "root-"+s))
		require.NoError(t, err)
		roots[s] = root
		inst := &deb.Installer{Command: root.InstallCommand(), Log: quiet, Output: filepath.Join(f.dir, s+"-dpkg.out")}
		require.NoError(t, inst.Install(f.ctx(), ferryDeb))
		ops := &Ops{
			DataDir: filepath.Join(f.dir, "data-"+s), Log: quiet, Metrics: NewMetrics(),
			Installer: inst,
			Download:  release.DownloadOptions{RetryBase: 10 * time.Millisecond},
			Set:       set, Storage: f.st,
			Images: &images.Containerd{Address: ctd.Address, Namespace: s, WorkDir: f.dir, Log: quiet},
			Boot:   &bootcontents.Publisher{Dir: bootDir, IgnitionDir: ignDir},
			// Stands in for systemctl restart: records what it was asked.
			RestartCommand: []string{"sh", "-c", `echo "$FERRY_SERVER $*" >> ` + restartLog, "restart"},
		}
		f.start(s, v1, &set.Plan, ops)
	}

	f.request(v1, servers...)
	for _, s := range servers {
		f.waitStatus(s, cond(fleet.CondCompleted))
	}
	for _, s := range servers {
		v, err := deb.InstalledVersion(f.ctx(), roots[s].AdminDir(), "acme-tools")
		require.NoError(t, err)
		require.Equal(t, "1.2.0", v, s)
		out, err := exec.Command("ctr", "--address", ctd.Address, "-n", s, "images", "ls").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), dnsDigest)
		require.Contains(t, string(out), ntpDigest)
	}
	restarts, err := os.ReadFile(restartLog)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"boot-0 coredns.service", "boot-1 coredns.service"}, strings.Split(strings.TrimSpace(string(restarts)), "\n"),
		"only the units of changed images restart")
	cur, err := (&bootcontents.Publisher{Dir: bootDir}).Current()
	require.NoError(t, err)
	require.Equal(t, "3760.2.0", cur)
	c, err := f.st.GetContents(f.ctx(), "boot")
	require.NoError(t, err)
	require.True(t, c.Success)
	require.Equal(t, int64(2), osRequests.Load(), "kernel and initrd once, for the fleet")

	// The same set again (a reconfigure at the same version): nothing is
	// downloaded, installed, imported or restarted a second time.
	debDownloads := gh.Counters().Downloads["acme-tools_1.2.0_amd64.deb"]
	require.Equal(t, 2, debDownloads)
	blobs := reg.BlobGets()
	f.request(v1, servers...)
	for _, s := range servers {
		f.waitStatus(s, cond(fleet.CondCompleted))
	}
	require.Equal(t, debDownloads, gh.Counters().Downloads["acme-tools_1.2.0_amd64.deb"], "no deb downloaded twice")
	require.Equal(t, blobs, reg.BlobGets(), "no image pulled twice")
	require.Equal(t, int64(2), osRequests.Load(), "no boot content downloaded twice")
	again, err := os.ReadFile(restartLog)
	require.NoError(t, err)
	require.Equal(t, string(restarts), string(again), "no unit restarted")
}
