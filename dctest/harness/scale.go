package harness

import (
	"fmt"
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

// Scale is the factor FERRY_DCTEST_SCALE sets. A value that is not a
// number of at least 1 stops the program, saying so: timings shorter than
// the tuned ones, or a typo taken silently for 1, would only make a run
// fail later for a reason it does not show.
var Scale = scale()

func scale() float64 {
	v := os.Getenv(ScaleEnv)
	if v == "" {
		return 1
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 1 {
		fmt.Fprintf(os.Stderr, "%s=%q: want a number of at least 1 (2 doubles every lease, grace and wait); unset it for 1\n", ScaleEnv, v)
		os.Exit(2)
	}
	return f
}

// Scaled is d stretched by Scale: use it for every lease, grace and wait
// of a scenario, so that one factor moves them together.
func Scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * Scale).Round(time.Millisecond)
}
