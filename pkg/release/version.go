package release

import (
	"fmt"
	"regexp"
	"strings"

	"pault.ag/go/debian/version"
)

// Tag prefixes. A tag is a prefix followed by a version.
const (
	PrefixTest    = "test-"    // built and gated by the nightly job
	PrefixRelease = "release-" // published for staging, then production
)

var (
	datePattern = regexp.MustCompile(`^\d{4}\.\d{2}\.\d{2}-[1-9]\d*$`)
	looksDated  = regexp.MustCompile(`^\d{4}\.\d+\.\d+`)
)

// Version is a ferry release version: YYYY.MM.DD-N (the nightly job's
// form) or any Debian package version, such as 1.4.2, 1.4.2-1 or
// 1.4.2~rc1. Versions are ordered exactly as dpkg orders them, because
// what ferry installs are Debian packages: 2026.01.02-10 is newer than
// 2026.01.02-9, and 1.4.2~rc1 is older than 1.4.2.
type Version struct {
	v   *version.Version
	raw string
}

// ParseVersion parses a version.
func ParseVersion(s string) (Version, error) {
	if looksDated.MatchString(s) && !datePattern.MatchString(s) {
		return Version{}, fmt.Errorf("version %q: a dated version is YYYY.MM.DD-N with N >= 1, e.g. 2026.01.02-1", s)
	}
	v, err := version.Parse(s)
	if err != nil || s == "" || s[0] < '0' || s[0] > '9' || strings.ContainsAny(s, " \t/") {
		return Version{}, fmt.Errorf("version %q: want YYYY.MM.DD-N (e.g. 2026.01.02-1) or a Debian package version (e.g. 1.4.2-1)", s)
	}
	return Version{v: &v, raw: s}, nil
}

// ParseVersionOrZero parses a version and returns the zero Version for a
// string that is not one (such as "dev").
func ParseVersionOrZero(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		return Version{}
	}
	return v
}

// String returns the version as written.
func (v Version) String() string {
	return v.raw
}

// IsZero reports whether v is the zero Version.
func (v Version) IsZero() bool { return v.v == nil }

// Compare returns -1, 0 or 1 as v is older than, equal to or newer than o.
// The zero Version is older than every other.
func (v Version) Compare(o Version) int {
	switch {
	case v.v == nil && o.v == nil:
		return 0
	case v.v == nil:
		return -1
	case o.v == nil:
		return 1
	}
	return max(-1, min(1, version.Compare(*v.v, *o.v)))
}

// CompareStrings orders two version strings as dpkg does; a string that is
// not a version counts as older than every version, so that a floor
// refuses it.
func CompareStrings(a, b string) int {
	return ParseVersionOrZero(a).Compare(ParseVersionOrZero(b))
}

// Newer reports whether v is newer than o.
func (v Version) Newer(o Version) bool { return v.Compare(o) > 0 }

// SplitTag splits a tag into its prefix (PrefixTest or PrefixRelease) and
// version. ok is false for tags that are not ferry release tags.
func SplitTag(tag string) (prefix string, v Version, ok bool) {
	for _, p := range []string{PrefixTest, PrefixRelease} {
		if rest, found := strings.CutPrefix(tag, p); found {
			v, err := ParseVersion(rest)
			if err != nil {
				return "", Version{}, false
			}
			return p, v, true
		}
	}
	return "", Version{}, false
}
