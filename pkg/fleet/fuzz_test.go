package fleet

import (
	"strings"
	"testing"
)

// FuzzConfigValue: every config key's check takes any string without
// panicking, never echoes a secret in its error, and what it stores
// passes the check again unchanged.
func FuzzConfigValue(f *testing.F) {
	for _, k := range ConfigKeys() {
		f.Add(k.Name, k.Default)
	}
	f.Add(ConfigReleaseTime, "* 9-16 * * 1-5\n0 20 * * *")
	f.Add(ConfigReleaseTime, "@daily")
	f.Add(ConfigProxy, "http://user:pw@proxy:3128")
	f.Add(ConfigGitHubToken, "ghp_abc def")
	f.Add(ConfigWorkerTimeout, "-1s")
	f.Fuzz(func(t *testing.T, name, value string) {
		k, err := LookupConfigKey(name)
		if err != nil {
			return
		}
		stored, err := k.Normalize(value)
		if err != nil {
			if k.Secret && len(value) > 3 && strings.Contains(err.Error(), value) {
				t.Fatalf("the error for %s echoes the secret: %v", name, err)
			}
			return
		}
		again, err := k.Normalize(stored)
		if stored != "" && (err != nil || again != stored) {
			t.Fatalf("%s: %q stored as %q, which normalizes to %q, %v", name, value, stored, again, err)
		}
		_ = k.Display(stored)
	})
}
