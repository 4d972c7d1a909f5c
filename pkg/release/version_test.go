package release

import (
	"os/exec"
	"testing"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/ferry-cd/ferry/pkg/trust"

	"github.com/stretchr/testify/require"
)

func TestParseVersion(t *testing.T) {
	t.Parallel()
	for _, good := range []string{"2026.01.02-1", "2026.12.31-15", "1.4.2", "0.1.0-rc.1", "1.4.2~rc1", "1:1.4.2-1", "1.4.2+b1"} {
		_, err := ParseVersion(good)
		require.NoError(t, err, good)
	}
	for _, bad := range []string{"", "abc", "v1.4.2", "dev", "2026.1.2-1", "2026.01.02", "2026.01.02-0", "2026.01.02-x", "1.2 3"} {
		_, err := ParseVersion(bad)
		require.Error(t, err, bad)
	}
	_, err := ParseVersion("2026.01.02")
	require.ErrorContains(t, err, "YYYY.MM.DD-N")
}

func TestVersionOrder(t *testing.T) {
	t.Parallel()
	ordered := []string{"2026.01.02-1", "2026.01.02-2", "2026.01.02-10", "2026.01.03-1", "2026.12.31-1", "2027.01.01-1"}
	for i := 1; i < len(ordered); i++ {
		a, b := MustParseVersion(ordered[i-1]), MustParseVersion(ordered[i])
		require.True(t, b.Newer(a), "%s > %s", b, a)
		require.False(t, a.Newer(b))
		require.Equal(t, -1, a.Compare(b))
	}
	require.Equal(t, 0, MustParseVersion("2026.01.02-1").Compare(MustParseVersion("2026.01.02-1")))
	require.True(t, MustParseVersion("1.10.0").Newer(MustParseVersion("1.9.9")))
	require.True(t, MustParseVersion("1.0.0").Newer(Version{}), "every version is newer than none")
	require.Equal(t, "2026.01.02-1", MustParseVersion("2026.01.02-1").String())
}

// TestVersionOrderIsDpkgs compares every pair as dpkg itself does.
func TestVersionOrderIsDpkgs(t *testing.T) {
	t.Parallel()
	versions := []string{"1.4.2~rc1", "1.4.2", "1.4.2-1", "1.4.2+b1", "1.4.2-1~bpo1", "1.4.10", "1:0.1", "2026.01.02-1", "2026.01.02-10", "2026.01.02-9", "1.0a", "1.0"}
	for _, a := range versions {
		for _, b := range versions {
			var want int
			switch {
			case exec.Command("dpkg", "--compare-versions", a, "lt", b).Run() == nil:
				want = -1
			case exec.Command("dpkg", "--compare-versions", a, "gt", b).Run() == nil:
				want = 1
			}
			require.Equal(t, want, MustParseVersion(a).Compare(MustParseVersion(b)), "%s vs %s", a, b)
		}
	}
}

func TestSplitTag(t *testing.T) {
	t.Parallel()
	p, v, ok := SplitTag("release-2026.01.02-3")
	require.True(t, ok)
	require.Equal(t, PrefixRelease, p)
	require.Equal(t, "2026.01.02-3", v.String())
	p, _, ok = SplitTag("test-1.2.3")
	require.True(t, ok)
	require.Equal(t, PrefixTest, p)
	for _, bad := range []string{"v1.2.3", "release-", "release-abc", "nightly-2026.01.02-1"} {
		_, _, ok := SplitTag(bad)
		require.False(t, ok, bad)
	}
}

// MustParseVersion parses a version known to be valid.
func MustParseVersion(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

// TestChannelsNarrowNeverWiden: what a server takes is what the fleet's env
// takes and its own channels allow; the updater looks for releases of the
// widest env within them.
func TestChannelsNarrowNeverWiden(t *testing.T) {
	prod := []string{trust.ChannelProduction}
	lab := trust.Channels
	cases := []struct {
		env      fleet.Env
		allowed  []string
		accepted []string
		within   fleet.Env
	}{
		{fleet.EnvDev, prod, prod, fleet.EnvProd},
		{fleet.EnvStaging, prod, prod, fleet.EnvProd},
		{fleet.EnvProd, prod, prod, fleet.EnvProd},
		{fleet.EnvNone, prod, nil, fleet.EnvNone},
		{fleet.EnvDev, lab, lab, fleet.EnvDev},
		{fleet.EnvProd, lab, prod, fleet.EnvProd},
		{fleet.EnvStaging, []string{trust.ChannelStaging, trust.ChannelProduction}, []string{trust.ChannelStaging, trust.ChannelProduction}, fleet.EnvStaging},
		{fleet.EnvProd, []string{trust.ChannelTest}, nil, fleet.EnvNone},
	}
	for _, c := range cases {
		require.Equal(t, c.accepted, Accepted(c.env, c.allowed), "env %s, allowed %v", c.env, c.allowed)
		require.Equal(t, c.within, EnvWithin(c.env, c.allowed), "env %s, allowed %v", c.env, c.allowed)
	}
}
