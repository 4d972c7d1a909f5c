package fleet

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestReleaseWindow(t *testing.T) {
	t.Parallel()
	c, err := ParseConfig(map[string]string{
		ConfigReleaseTime:     "* 9-16 * * 1-5",
		ConfigReleaseTimezone: "Asia/Tokyo",
	})
	require.NoError(t, err)
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	require.NoError(t, err)

	monday10 := time.Date(2026, 11, 23, 10, 30, 15, 0, tokyo)
	require.True(t, c.InReleaseWindow(monday10))
	require.True(t, c.InReleaseWindow(monday10.UTC()), "the zone is release-timezone, not the caller's")
	require.Equal(t, monday10, c.NextReleaseWindow(monday10))

	monday17 := time.Date(2026, 11, 23, 17, 0, 0, 0, tokyo)
	require.False(t, c.InReleaseWindow(monday17))
	require.True(t, c.NextReleaseWindow(monday17).Equal(time.Date(2026, 11, 24, 9, 0, 0, 0, tokyo)))

	saturday := time.Date(2026, 11, 28, 10, 0, 0, 0, tokyo)
	require.False(t, c.InReleaseWindow(saturday))
	require.True(t, c.NextReleaseWindow(saturday).Equal(time.Date(2026, 11, 30, 9, 0, 0, 0, tokyo)))

	always, err := ParseConfig(nil)
	require.NoError(t, err)
	require.True(t, always.InReleaseWindow(saturday))
}
