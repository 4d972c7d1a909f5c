package release

import (
	"strings"
	"testing"
)

// FuzzParseSums: SHA256SUMS from a release is untrusted input until its
// signature is checked; the parser must never panic and must return only
// well-formed lines.
func FuzzParseSums(f *testing.F) {
	f.Add([]byte(strings.Repeat("ab", 32) + "  ferry_1_amd64.deb\n"))
	f.Add([]byte(strings.Repeat("AB", 32) + " *bin.deb\n\n"))
	f.Add([]byte("zz  x\n"))
	f.Add([]byte(strings.Repeat("a", 64) + "\n"))
	f.Add([]byte("\x00\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sums, err := ParseSums(data)
		if err != nil {
			return
		}
		for name, sum := range sums {
			if name == "" || len(sum) != 64 || strings.ToLower(sum) != sum {
				t.Fatalf("accepted %q for %q", sum, name)
			}
		}
	})
}
