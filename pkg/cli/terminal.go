package cli

import (
	"bytes"
	"fmt"
	"io"
	"unicode/utf8"
)

// unsafeRune reports whether r must not reach a terminal as it is: a
// control character other than newline and tab (an escape sequence could
// set the title, clear the screen or move the cursor), a C1 control, or a
// bidirectional override or isolate (which could reorder what the operator
// reads). Everything the CLI prints comes from etcd or GitHub in part, and
// whoever writes those must not rewrite the operator's screen.
func unsafeRune(r rune) bool {
	switch {
	case r == '\n' || r == '\t':
		return false
	case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
		return true
	case r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069):
		return true
	}
	return false
}

// safeWriter passes text on with every unsafe rune, and every byte that
// is not UTF-8, replaced by '?'. A rune split across writes is held back
// until its end arrives.
type safeWriter struct {
	w       io.Writer
	pending []byte
}

func newSafeWriter(w io.Writer) *safeWriter { return &safeWriter{w: w} }

func (s *safeWriter) Write(p []byte) (int, error) {
	buf := append(s.pending, p...)
	end := len(buf)
	// An incomplete rune at the end waits for the next write.
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-utf8.UTFMax; i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) {
				end = i
			}
			break
		}
	}
	s.pending = append([]byte(nil), buf[end:]...)
	if _, err := s.w.Write(sanitize(buf[:end])); err != nil {
		return 0, err
	}
	return len(p), nil
}

// sanitize replaces the unsafe runes of b, and bytes that are not UTF-8,
// with '?'.
func sanitize(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if (r == utf8.RuneError && size == 1) || unsafeRune(r) {
			out = append(out, '?')
		} else {
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return out
}

// escapeJSON writes the unsafe runes of a JSON text as \u escapes, which
// keep their meaning for a program and cannot act on a terminal. (The
// encoder escapes control characters already, but not the bidirectional
// ones.)
func escapeJSON(b []byte) []byte {
	var out bytes.Buffer
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r != '\n' && r != '\t' && unsafeRune(r) {
			fmt.Fprintf(&out, `\u%04x`, r)
		} else {
			out.Write(b[i : i+size])
		}
		i += size
	}
	return out.Bytes()
}
