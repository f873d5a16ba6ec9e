package store

import (
	"bytes"
	"encoding/json"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/talonhq/talon/agent/llm"
)

// decodeMessage reads the JSON of a stored llm.Message. Most messages are a
// role and a text, which json.Marshal writes as {"role":"…","content":"…"};
// those are read directly, without reflection. Anything else goes to
// encoding/json, so the result is always what json.Unmarshal would give.
func decodeMessage(b []byte, m *llm.Message) error {
	if decodeSimple(b, m) {
		return nil
	}
	*m = llm.Message{}
	return json.Unmarshal(b, m)
}

var (
	simplePrefix = []byte(`{"role":"`)
	simpleMiddle = []byte(`","content":"`)
	simpleSuffix = []byte(`"}`)
)

// decodeSimple decodes b into m when b is exactly the form json.Marshal
// gives a message with only a role and a content, and reports whether it
// did. The role must be a plain string (no escapes).
func decodeSimple(b []byte, m *llm.Message) bool {
	rest, ok := bytes.CutPrefix(b, simplePrefix)
	if !ok {
		return false
	}
	i := bytes.IndexByte(rest, '"')
	if i < 0 || bytes.IndexByte(rest[:i], '\\') >= 0 {
		return false
	}
	role := rest[:i]
	rest, ok = bytes.CutPrefix(rest[i:], simpleMiddle)
	if !ok {
		return false
	}
	rest, ok = bytes.CutSuffix(rest, simpleSuffix)
	if !ok {
		return false
	}
	content, ok := unquote(rest)
	if !ok || !utf8.Valid(role) {
		return false
	}
	*m = llm.Message{Role: llm.Role(role), Content: content}
	return true
}

// unquote decodes the inside of a JSON string. It reports false for
// anything it is not sure of (an unescaped quote or control character,
// invalid UTF-8, a malformed escape, a lone surrogate), leaving those to
// encoding/json.
func unquote(s []byte) (string, bool) {
	if bytes.IndexByte(s, '\\') < 0 {
		for _, c := range s {
			if c < 0x20 || c == '"' {
				return "", false
			}
		}
		if !utf8.Valid(s) {
			return "", false
		}
		return string(s), true
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c < 0x20:
			return "", false
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(s) {
			return "", false
		}
		switch s[i+1] {
		case '"', '\\', '/':
			out = append(out, s[i+1])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(s[i+2:])
			if !ok {
				return "", false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if len(s) < i+6 || s[i] != '\\' || s[i+1] != 'u' {
					return "", false
				}
				r2, ok := hex4(s[i+2:])
				if !ok {
					return "", false
				}
				if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
					return "", false
				}
				i += 6
			}
			out = utf8.AppendRune(out, r)
			continue
		default:
			return "", false
		}
		i += 2
	}
	if !utf8.Valid(out) {
		return "", false
	}
	return string(out), true
}

// hex4 reads four hex digits.
func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
