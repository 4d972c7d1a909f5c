package artifacts

import "time"

// Duration is a length of time in a plan, written as Go writes one ("90s",
// "10m", "1h30m"). It is parsed once, when the plan is read, and written
// back exactly as it was written; Validate names the field of one that is
// not a duration.
type Duration struct {
	text string
	d    time.Duration
	ok   bool
}

// ParseDuration is the Duration written as text.
func ParseDuration(text string) Duration {
	d, err := time.ParseDuration(text)
	return Duration{text: text, d: d, ok: err == nil}
}

// Std is the length of time; 0 when unset or not a duration.
func (d Duration) Std() time.Duration { return d.d }

// String is the duration as written.
func (d Duration) String() string { return d.text }

// IsZero reports whether the duration is unset.
func (d Duration) IsZero() bool { return d.text == "" }

// positive reports whether it is a duration greater than zero.
func (d Duration) positive() bool { return d.ok && d.d > 0 }

// MarshalText writes the duration as it was written.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.text), nil }

// UnmarshalText reads a duration; one that does not parse is kept, for
// Validate to refuse with the field's name.
func (d *Duration) UnmarshalText(b []byte) error {
	*d = ParseDuration(string(b))
	return nil
}
