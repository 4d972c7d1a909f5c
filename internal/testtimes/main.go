// Command testtimes reads `go test -json` on standard input and writes what
// `go test` would: a line per package, and the whole output of every test
// that failed. At the end it lists the slowest tests and packages, so that
// whoever makes `make test` slower sees where. It exits 1 when a test, a
// package or a build failed.
//
// A test's time is go test's, less what the test says it spent waiting
// for its turn: a line "waited 1m2s for a slot" in its output (dctest's
// scheduler writes one when a scenario starts), so that scenarios queued
// behind others do not crowd the list.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string
	Test       string
	Elapsed    float64
	Output     string
}

type timing struct {
	name    string
	elapsed time.Duration
}

func main() {
	failed, err := summarize(os.Stdin, os.Stdout, 10)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testtimes:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

// summarize copies the verdicts of in to out, and the slowest n tests and
// packages; it reports whether anything failed.
func summarize(in io.Reader, out io.Writer, n int) (bool, error) {
	failed := false
	output := map[string][]string{} // by package and test
	waited := map[string]time.Duration{}
	var tests, pkgs []timing
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		var e event
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &e) != nil {
			fmt.Fprintln(out, line) // not an event: go's own words
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			output[key] = append(output[key], e.Output)
			if m := slotWait.FindStringSubmatch(e.Output); m != nil {
				if d, err := time.ParseDuration(m[1]); err == nil {
					waited[key] += d
				}
			}
		case "build-output":
			fmt.Fprint(out, e.Output)
		case "build-fail":
			failed = true
		case "pass", "fail", "skip":
			d := time.Duration(e.Elapsed*float64(time.Second)) - waited[key]
			switch {
			case e.Test != "" && e.Action == "fail":
				failed = true
				fmt.Fprint(out, strings.Join(output[key], ""))
			case e.Test != "":
				if !strings.Contains(e.Test, "/") { // a subtest's time is its test's
					tests = append(tests, timing{e.Package + " " + e.Test, d})
				}
			default:
				if e.Action == "fail" {
					failed = true
					// A package that failed outside its tests (a
					// panic, TestMain, a timeout) says why here.
					fmt.Fprint(out, strings.Join(output[key], ""))
				} else {
					fmt.Fprint(out, last(output[key]))
				}
				if e.Action != "skip" {
					pkgs = append(pkgs, timing{e.Package, d})
				}
			}
			delete(output, key)
			delete(waited, key)
		}
	}
	if err := sc.Err(); err != nil {
		return true, err
	}
	list(out, "slowest tests", tests, n)
	list(out, "slowest packages", pkgs, n)
	return failed, nil
}

// slotWait is the line in which a test says how long it waited for its turn.
var slotWait = regexp.MustCompile(`waited (\S+) for a slot`)

// last is the package's verdict line ("ok  \tpkg\t1.2s"), the last line of
// its output.
func last(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}

func list(out io.Writer, title string, ts []timing, n int) {
	if len(ts) == 0 {
		return
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].elapsed > ts[j].elapsed })
	fmt.Fprintf(out, "\n%s:\n", title)
	for _, t := range ts[:min(n, len(ts))] {
		fmt.Fprintf(out, "  %8.1fs  %s\n", t.elapsed.Seconds(), t.name)
	}
}
