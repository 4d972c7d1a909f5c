package artifacts

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEmbeddedSetIsValidAndCanonical(t *testing.T) {
	t.Parallel()
	set, err := Parse(Embedded)
	require.NoError(t, err)
	require.NotEmpty(t, set.Debs)
	require.NotEmpty(t, set.Images)
	require.NotNil(t, set.OSImage)
	require.Len(t, set.Plan.Steps, 4)

	// Marshal is stable: parse, marshal, parse, marshal gives the same bytes.
	a, err := set.Marshal()
	require.NoError(t, err)
	again, err := Parse(a)
	require.NoError(t, err)
	b, err := again.Marshal()
	require.NoError(t, err)
	require.Equal(t, string(a), string(b))
}

const validBase = `
debs:
  - {name: tools, repository: acme/tools, release: v1, asset: t.deb, version: "1", size: 1, sha256: ` + "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + `}
images:
  - {name: dns, repository: r.example/dns, tag: "1", digest: "sha256:` + "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" + `", units: [dns.service]}
`

func TestSetValidation(t *testing.T) {
	t.Parallel()
	plan := func(actions string) string {
		return validBase + "plan:\n  steps:\n    - name: s\n      strategy: lockstep\n      actions: [" + actions + "]\n"
	}
	_, err := Parse([]byte(plan("{debs: {names: [tools]}}, {images: {names: [dns]}}, {restart-units: {units: [dns.service]}}")))
	require.NoError(t, err)

	cases := map[string]struct{ text, want string }{
		"unknown field":         {validBase + "colour: red\n", "field colour not found"},
		"missing deb digest":    {strings.Replace(validBase, "sha256: aaaa", "sha256: zz", 1), "sha256"},
		"missing image digest":  {strings.Replace(validBase, `digest: "sha256:bbbb`, `digest: "bbbb`, 1), "digest"},
		"unknown deb in plan":   {plan("{debs: {names: [nope]}}"), `debs names "nope"`},
		"unknown image in plan": {plan("{images: {names: [nope]}}"), `images names "nope"`},
		"unknown action":        {plan("{reboot: {}}"), "field reboot not found"},
		"boot without osImage":  {plan("{boot-contents: {}}"), "needs an osImage"},
		"bad unit":              {strings.Replace(validBase, "units: [dns.service]", "units: [dns]", 1), "not a systemd unit"},
		"twice":                 {validBase + "  - {name: dns, repository: r.example/dns, tag: \"1\", digest: \"sha256:" + strings.Repeat("c", 64) + "\"}\n", "listed twice"},
	}
	for name, c := range cases {
		_, err := Parse([]byte(c.text))
		require.Error(t, err, name)
		require.Contains(t, err.Error(), c.want, name)
	}
}
