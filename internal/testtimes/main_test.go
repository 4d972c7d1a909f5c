package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const events = `{"Action":"start","Package":"a"}
{"Action":"run","Package":"a","Test":"TestFast"}
{"Action":"output","Package":"a","Test":"TestFast","Output":"=== RUN   TestFast\n"}
{"Action":"pass","Package":"a","Test":"TestFast","Elapsed":0.1}
{"Action":"run","Package":"a","Test":"TestSlow"}
{"Action":"output","Package":"a","Test":"TestSlow","Output":"    slow_test.go:9: still here\n"}
{"Action":"pass","Package":"a","Test":"TestSlow","Elapsed":7.5}
{"Action":"run","Package":"a","Test":"TestQueued"}
{"Action":"output","Package":"a","Test":"TestQueued","Output":"    schedule_test.go:1: waited 6s for a slot\n"}
{"Action":"pass","Package":"a","Test":"TestQueued","Elapsed":7}
{"Action":"output","Package":"a","Output":"ok  \ta\t7.6s\n"}
{"Action":"pass","Package":"a","Elapsed":7.6}
{"Action":"run","Package":"b","Test":"TestBroken"}
{"Action":"output","Package":"b","Test":"TestBroken","Output":"    b_test.go:3: want 1, got 2\n"}
{"Action":"fail","Package":"b","Test":"TestBroken","Elapsed":0.2}
{"Action":"output","Package":"b","Output":"FAIL\tb\t0.3s\n"}
{"Action":"fail","Package":"b","Elapsed":0.3}
go: downloading example.com/x v1.0.0
`

func TestSummarize(t *testing.T) {
	var out strings.Builder
	failed, err := summarize(strings.NewReader(events), &out, 10)
	require.NoError(t, err)
	require.True(t, failed)
	got := out.String()
	require.Contains(t, got, "ok  \ta\t7.6s\n")
	require.Contains(t, got, "b_test.go:3: want 1, got 2", "a failed test's output is shown")
	require.NotContains(t, got, "still here", "a passed test's is not")
	require.Contains(t, got, "go: downloading example.com/x v1.0.0", "what is not an event passes through")
	slow := got[strings.Index(got, "slowest tests:"):]
	require.Less(t, strings.Index(slow, "a TestSlow"), strings.Index(slow, "a TestFast"), "slowest first")
	require.Contains(t, got, "slowest packages:\n       7.6s  a\n")
	require.Contains(t, got, "       1.0s  a TestQueued\n", "less the wait for a slot")

	failed, err = summarize(strings.NewReader(strings.Split(events, `{"Action":"run","Package":"b"`)[0]), &out, 10)
	require.NoError(t, err)
	require.False(t, failed)
}
