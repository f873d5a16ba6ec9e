package llm

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
)

// minSubstringSecret is the shortest configured secret (API key, header
// value) redacted wherever it occurs in error text. A shorter one, such as
// the "x" a local server accepts as a key, would match inside ordinary words
// ("exceeded"), so it is redacted only where it stands as a whole token.
const minSubstringSecret = 8

// redactedMark replaces a configured secret in error text.
const redactedMark = "[redacted]"

// redactSecrets returns s with every configured secret replaced by
// redactedMark: anywhere when the secret is at least minSubstringSecret
// bytes long, also as it is written inside a URL (query or path escaped)
// or a JSON string, else only as a whole token (not touching a letter,
// digit or one of "-_.~" on either side: the bytes of a word or of a
// URL's value).
func redactSecrets(s string, secrets ...string) string {
	for _, sec := range secrets {
		if strings.TrimSpace(sec) == "" {
			continue
		}
		if len(sec) < minSubstringSecret {
			if strings.Contains(s, sec) {
				s = replaceTokens(s, sec)
			}
			continue
		}
		for _, form := range secretForms(sec) {
			s = strings.ReplaceAll(s, form, redactedMark)
		}
	}
	return s
}

// secretForms are the ways a secret is written in error text: as itself,
// escaped for a URL's query or path, and inside a JSON string (with and
// without HTML escaping), longest first so that no form is cut by another.
func secretForms(sec string) []string {
	forms := []string{sec, url.QueryEscape(sec), url.PathEscape(sec)}
	for _, html := range []bool{true, false} {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(html)
		if enc.Encode(sec) == nil {
			quoted := strings.TrimSuffix(b.String(), "\n")
			forms = append(forms, quoted[1:len(quoted)-1])
		}
	}
	slices.SortFunc(forms, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return slices.Compact(forms)
}

// replaceTokens replaces the occurrences of tok in s that are whole tokens.
func replaceTokens(s, tok string) string {
	var b strings.Builder
	rest := s
	for {
		i := strings.Index(rest, tok)
		if i < 0 {
			break
		}
		end := i + len(tok)
		done := len(s) - len(rest) // bytes of s already consumed
		whole := (done+i == 0 || !tokenByte(s[done+i-1])) && (done+end == len(s) || !tokenByte(s[done+end]))
		if whole {
			b.WriteString(rest[:i])
			b.WriteString(redactedMark)
		} else {
			b.WriteString(rest[:end])
		}
		rest = rest[end:]
	}
	b.WriteString(rest)
	return b.String()
}

// tokenByte reports whether c continues a word or a URL's unreserved value.
func tokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c >= 0x80: // part of a multi-byte rune: a word, not a delimiter
		return true
	}
	return strings.IndexByte("-_.~", c) >= 0
}
