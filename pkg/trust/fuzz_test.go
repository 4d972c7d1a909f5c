package trust

import (
	"strings"
	"testing"
	"time"

	"aead.dev/minisign"
)

// FuzzManifest feeds arbitrary bytes to the manifest decoder, signed and
// unsigned: it must never panic, and whatever it accepts must validate and
// survive its own checks.
func FuzzManifest(f *testing.F) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	_, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		f.Fatal(err)
	}
	good, _, err := manifest(now).Sign(priv)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"product":"ferry","version":"1","channel":"test","assets":[{"name":"a","size":-1,"sha256":"x"}]}`))
	f.Add([]byte(strings.Replace(string(good), `"staging"`, `"nightly"`, 1)))
	f.Add([]byte(`{"product":"ferry","extra":1}`))
	f.Add([]byte("\x00\xff{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeManifest(data)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid manifest: %v", err)
		}
		_ = m.Check(Product, m.Version, []string{m.Channel}, m.Created)
		if _, _, err := m.Sign(priv); err != nil {
			t.Fatalf("an accepted manifest cannot be signed again: %v", err)
		}
	})
}

// FuzzParseKeys: arbitrary key files never panic the parser.
func FuzzParseKeys(f *testing.F) {
	pub, _, err := minisign.GenerateKey(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("untrusted comment: minisign public key\n" + pub.String() + "\n")
	f.Add("# comment\n\nRWQ\n")
	f.Add("RW" + strings.Repeat("A", 54))
	f.Fuzz(func(t *testing.T, text string) {
		keys, err := ParseKeys(text)
		if err == nil {
			for _, k := range keys {
				if k.String() == "" {
					t.Fatal("an accepted key has no text form")
				}
			}
		}
	})
}

// FuzzStatement: a statement from etcd, whatever its bytes, decodes or is
// refused, and never verifies without the key's signature.
func FuzzStatement(f *testing.F) {
	pub, key, err := minisign.GenerateKey(nil)
	if err != nil {
		f.Fatal(err)
	}
	good, err := (&Statement{Product: Product, Kind: KindWithdrawals, Serial: 1, Created: time.Unix(0, 0), Withdrawn: []string{"1.0"}}).Sign(key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good.Data, good.Sig)
	f.Add([]byte(`{"product":"ferry","kind":"keys","serial":1}`), []byte{})
	f.Fuzz(func(t *testing.T, data, sig []byte) {
		DecodeStatement(data)
		s, err := (&Signed{Data: data, Sig: sig}).Verify(KindWithdrawals, []minisign.PublicKey{pub})
		if err == nil && !minisign.Verify(pub, data, sig) {
			t.Fatalf("verified without a signature: %+v", s)
		}
	})
}
