package daemon

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLoggerWritesDurationsInSeconds(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, slog.LevelInfo).With("server", "boot-0")
	log.Info("retrying", "retry_in", 1500*time.Millisecond, "step_seconds", 2*time.Second, "n", 3)
	var line map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &line))
	require.Equal(t, 1.5, line["retry_in_seconds"])
	require.Equal(t, 2.0, line["step_seconds"])
	require.NotContains(t, line, "retry_in")
	require.Equal(t, 3.0, line["n"])
	require.Equal(t, 1, bytes.Count(buf.Bytes(), []byte(`"server"`)), "each key once")
}
