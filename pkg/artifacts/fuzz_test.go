package artifacts

import (
	"testing"
)

// FuzzParse: an artifact set is read strictly; no input may panic the
// parser, and a set it accepts validates and marshals back to a set that
// parses again.
func FuzzParse(f *testing.F) {
	f.Add(Embedded)
	f.Add([]byte("debs: []\nplan:\n  steps: []\n"))
	f.Add([]byte("plan:\n  steps:\n  - name: a\n    strategy: rolling\n    parallel: -1\n"))
	f.Add([]byte("unknown: 1\n"))
	f.Add([]byte("images:\n- name: x\n  digest: sha256:zz\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := Parse(data)
		if err != nil {
			return
		}
		if err := set.Validate(); err != nil {
			t.Fatalf("Parse accepted a set that does not validate: %v", err)
		}
		out, err := set.Marshal()
		if err != nil {
			t.Fatalf("an accepted set does not marshal: %v", err)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("a marshalled set does not parse again: %v\n%s", err, out)
		}
	})
}
