package storage

import (
	"os"
	"strings"
	"testing"

	"github.com/ferry-cd/ferry/pkg/fleet"
	"github.com/stretchr/testify/require"
)

// The schema document is written by hand; this keeps it in step with the code.
func TestSchemaDocMentionsEveryKey(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../docs/etcd-schema.md")
	require.NoError(t, err)
	doc := string(data)
	for _, k := range fleet.ConfigKeys() {
		require.Contains(t, doc, "| `"+k.Name+"` |", "docs/etcd-schema.md lacks config key %s", k.Name)
		if k.Default != "" {
			require.Contains(t, doc, "`"+k.Default+"`", "docs/etcd-schema.md lacks the default of %s", k.Name)
		}
	}
	for _, key := range allKeys {
		if key == keyPing || key == keyStatusDir {
			continue // no value is kept under them
		}
		require.True(t, strings.Contains(doc, "`"+key), "docs/etcd-schema.md lacks key %s", key)
	}
}
