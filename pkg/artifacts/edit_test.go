package artifacts

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const handWritten = `# Our boot servers' stack. Keep the plan short.
debs:
  - name: tools # from our fork
    repository: acme/tools
    release: v1.2.0
    asset: tools_1.2.0_amd64.deb
    assetGlob: tools_*_amd64.deb
    version: 1.2.0
    size: 100
    sha256: 0000000000000000000000000000000000000000000000000000000000000000
plan:
  steps:
    # The canary goes first; we look at it.
    - {name: restart, strategy: rolling, canary: 1, actions: [{run: {command: systemctl, args: [restart, tools]}}]}
    - name: debs
      strategy: lockstep
      actions:
        - debs: {}
`

// TestRewriteKeepsWhatAPersonWrote: the generator's edit changes the
// values that changed, in place, and nothing else: comments, flow style,
// an unquoted canary count, and the defaults a person left out stay.
func TestRewriteKeepsWhatAPersonWrote(t *testing.T) {
	t.Parallel()
	from, err := Parse([]byte(handWritten))
	require.NoError(t, err)
	to, err := Parse([]byte(handWritten))
	require.NoError(t, err)
	d := &to.Debs[0]
	d.Release, d.Asset, d.Version, d.Size, d.SHA256 = "v1.5.0", "tools_1.5.0_amd64.deb", "1.5.0", 123456, strings.Repeat("a", 64)

	out, err := Rewrite([]byte(handWritten), from, to)
	require.NoError(t, err)
	want := strings.NewReplacer("v1.2.0", "v1.5.0", "tools_1.2.0_amd64.deb", "tools_1.5.0_amd64.deb", "version: 1.2.0", "version: 1.5.0",
		"size: 100", "size: 123456", strings.Repeat("0", 64), strings.Repeat("a", 64)).Replace(handWritten)
	require.Equal(t, want, string(out))
	again, err := Parse(out)
	require.NoError(t, err)
	require.Equal(t, to.Debs, again.Debs)

	// Nothing changed: the same bytes.
	out, err = Rewrite([]byte(handWritten), from, from)
	require.NoError(t, err)
	require.Equal(t, handWritten, string(out))

	// A component the generator adds is appended; one it drops goes.
	to.Images = []Image{{Name: "coredns", Repository: "registry.example/coredns", Tag: "1.12.0", Digest: "sha256:" + strings.Repeat("b", 64), Units: []string{"coredns.service"}}}
	out, err = Rewrite([]byte(handWritten), from, to)
	require.NoError(t, err)
	require.Contains(t, string(out), "images:\n  - name: coredns\n")
	require.Contains(t, string(out), "# The canary goes first; we look at it.")
	to.Debs = nil
	out, err = Rewrite([]byte(handWritten), from, to)
	require.NoError(t, err)
	require.NotContains(t, string(out), "acme/tools")
	require.Contains(t, string(out), "canary: 1,")
}
