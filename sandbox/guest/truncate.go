package guest

import (
	"strings"
	"unicode/utf8"
)

// Truncate returns s cut to at most maxRunes runes, and whether it was cut.
// Invalid UTF-8 in s is replaced by U+FFFD first, so the result is always
// valid UTF-8 and never ends inside a rune. A maxRunes below zero is treated
// as zero.
func Truncate(s string, maxRunes int) (string, bool) {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if maxRunes < 0 {
		maxRunes = 0
	}
	if len(s) <= maxRunes {
		return s, false
	}
	n := 0
	for i := range s {
		if n == maxRunes {
			return s[:i], true
		}
		n++
	}
	return s, false
}
