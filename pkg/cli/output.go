package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
)

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns; call flush when done.
type table struct{ w *tabwriter.Writer }

func (a *app) newTable(header ...string) *table {
	t := &table{w: tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		// A tab or newline inside a cell would break the columns.
		cols[i] = clean(strings.NewReplacer("\t", " ", "\n", "; ").Replace(c))
	}
	fmt.Fprintln(t.w, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.w.Flush() }

// age says how long ago t was, to the second: "3m12s ago".
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Truncate(time.Second)
	if d < 0 {
		return "in " + (-d).String()
	}
	return d.String() + " ago"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clean replaces control characters in a string from etcd or GitHub before
// it reaches a terminal, where an escape sequence could rewrite what the
// operator sees.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}
