package harness

import (
	"os"
	"strconv"
	"time"
)

// ScaleEnv names the environment variable that stretches every timing of
// a datacenter and its scenarios: leases, graces, and how long a scenario
// waits for something. 1 (the default) is tuned for this 2-core machine
// with scenarios side by side; 2 doubles them all, for a slower or busier
// machine.
const ScaleEnv = "FERRY_DCTEST_SCALE"

// Scale is the factor FERRY_DCTEST_SCALE sets (at least 1).
var Scale = scale()

func scale() float64 {
	f, err := strconv.ParseFloat(os.Getenv(ScaleEnv), 64)
	if err != nil || f < 1 {
		return 1
	}
	return f
}

// Scaled is d stretched by Scale: use it for every lease, grace and wait
// of a scenario, so that one factor moves them together.
func Scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * Scale).Round(time.Millisecond)
}
