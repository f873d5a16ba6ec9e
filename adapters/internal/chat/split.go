package chat

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Unit is what a platform's message limit counts.
type Unit int

// The units of a message limit.
const (
	// Bytes counts the bytes of the UTF-8 text, so a part is also at most
	// that many characters (Slack, whose limits are in characters, some of
	// them counted by Slack in bytes).
	Bytes Unit = iota
	// Runes counts characters, Unicode code points (Discord).
	Runes
)

// MinLimit is the smallest limit Split honours; a smaller one counts as
// MinLimit. It leaves room for a reopened code fence and its close.
const MinLimit = 100

// maxOpener bounds the fence line that is repeated at the start of the
// next part when a code block is cut ("```python"); a longer one is
// reopened as a bare "```".
const maxOpener = 40

// closeMark is the longest close a part can get: a newline and a fence.
const closeMark = "\n```"

// maxSpan bounds how far a link, an entity or inline code is looked for
// when keeping it whole.
const maxSpan = 2048

// graphemeLookback bounds how far a cut moves back to keep an emoji with its
// modifiers or a letter with its combining marks together.
const graphemeLookback = 64

// Split cuts text into messages of at most limit, counted in unit, so that
// each renders on its own:
//
//   - a cut prefers a paragraph break, then a line break, then a space,
//     in the second half of a message; failing those a line break or a
//     space anywhere; and only then cuts inside a line;
//   - a cut never falls inside a link (<url|label>, [label](url)), inline
//     code, an HTML entity (&amp;), a UTF-8 sequence, or a character with
//     its modifiers (an emoji and its skin tone, a zero-width-joiner
//     sequence, a flag, a letter and its combining accents) — unless one of
//     those alone is longer than a message;
//   - a code block (```lang … ```) that is cut is closed at the end of the
//     part and reopened, with its language, at the start of the next, and a
//     block the text leaves open is closed: every part's fences balance.
//
// Nothing else changes: the whitespace at a cut ends the part before it, so
// the parts without the fence lines Split added concatenate to text. A
// part that would hold only whitespace (a blank run longer than a message)
// is left out, and Split returns nil for a text that is blank. The result
// depends only on text, limit and unit, so a delivery that is resumed cuts
// the same parts.
func Split(text string, limit int, unit Unit) []string {
	pieces := split(text, limit, unit)
	out := make([]string, 0, len(pieces))
	for _, p := range pieces {
		if strings.TrimSpace(p.body) == "" {
			continue
		}
		out = append(out, p.open+p.body+p.close)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// piece is one part: body is a slice of the text, open and close the fence
// lines added around it.
type piece struct{ open, body, close string }

func (u Unit) size(s string) int {
	if u == Runes {
		return utf8.RuneCountInString(s)
	}
	return len(s)
}

// prefix returns the end of the longest prefix of s of at most n units
// that does not split a UTF-8 sequence (invalid bytes count one each).
func (u Unit) prefix(s string, n int) int {
	if n <= 0 {
		return 0
	}
	if u == Runes {
		i := 0
		for count := 0; i < len(s) && count < n; count++ {
			_, sz := utf8.DecodeRuneInString(s[i:])
			i += sz
		}
		return i
	}
	if n >= len(s) {
		return len(s)
	}
	for i := n; i > 0 && i > n-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			return i
		}
	}
	return n // not UTF-8 here: any cut will do
}

// fenceState is where a position of the text stands with code fences.
type fenceState struct {
	// opener is the line that opened the code block open here ("```go"),
	// "" when none is.
	opener string
	// openedAt is where that line starts in the text advance scanned, -1
	// when the block was opened before it.
	openedAt int
	// midLine: the position is inside a line, so what follows does not
	// start one.
	midLine bool
}

// isFence reports whether line (a whole line, without its newline) opens
// or closes a code block: it starts with ``` (after indentation) and holds
// no other ``` (```x``` on one line is inline).
func isFence(line string) bool {
	t := strings.TrimLeft(line, " \t")
	return strings.HasPrefix(t, "```") && !strings.Contains(t[3:], "```")
}

// advance returns the fence state after s[:end], s starting in state st.
// A fence line that starts before end counts even when end cuts it.
func advance(st fenceState, s string, end int) fenceState {
	st.openedAt = -1
	for i := 0; i < end; {
		lineEnd := len(s)
		if nl := strings.IndexByte(s[i:], '\n'); nl >= 0 {
			lineEnd = i + nl
		}
		if (i > 0 || !st.midLine) && isFence(s[i:lineEnd]) {
			if st.opener == "" {
				st.opener, st.openedAt = strings.TrimSpace(s[i:lineEnd]), i
			} else {
				st.opener, st.openedAt = "", -1
			}
		}
		if lineEnd+1 > end {
			st.midLine = true
			return st
		}
		i = lineEnd + 1
		st.midLine = false
	}
	return st
}

// reopen is the line that starts a part continuing the block opened by
// opener.
func reopen(opener string) string {
	if opener == "" {
		return ""
	}
	if len(opener) > maxOpener || strings.Contains(opener[3:], "`") {
		return "```\n"
	}
	return opener + "\n"
}

// closer is what ends a part whose body is head when a block is open at
// its end.
func closer(head, opener string) string {
	if opener == "" {
		return ""
	}
	if strings.HasSuffix(head, "\n") {
		return "```"
	}
	return closeMark
}

func split(text string, limit int, unit Unit) []piece {
	limit = max(limit, MinLimit)
	var out []piece
	st := fenceState{openedAt: -1}
	for rest := text; rest != ""; {
		open := reopen(st.opener)
		if end := advance(st, rest, len(rest)); unit.size(open)+unit.size(rest)+unit.size(closer(rest, end.opener)) <= limit {
			return append(out, piece{open, rest, closer(rest, end.opener)})
		}
		// The close of a block open at the cut takes room too: reserve it
		// when the cut chosen without it needs one that does not fit.
		room := limit - unit.size(open)
		cut := chooseCut(rest, unit.prefix(rest, room))
		after := advance(st, rest, cut)
		if unit.size(open)+unit.size(rest[:cut])+unit.size(closer(rest[:cut], after.opener)) > limit {
			cut = chooseCut(rest, unit.prefix(rest, room-len(closeMark)))
			after = advance(st, rest, cut)
		}
		// A block opened in this part that would be cut starts the next
		// part instead when it fits in one whole, and a part never ends
		// with the line that opens a block.
		if after.opener != "" && after.openedAt > 0 {
			end := blockEnd(rest, after.openedAt)
			if strings.HasPrefix(after.opener, strings.TrimSpace(rest[after.openedAt:cut])) ||
				(end > 0 && unit.size(rest[after.openedAt:end]) <= limit) {
				cut = after.openedAt
				after = advance(st, rest, cut)
			}
		}
		// A block that closes right after the cut closes in this part
		// when its fence line fits: no empty block in the next.
		if after.opener != "" && !after.midLine {
			lineEnd := len(rest)
			if nl := strings.IndexByte(rest[cut:], '\n'); nl >= 0 {
				lineEnd = cut + nl + 1
			}
			if isFence(strings.TrimSuffix(rest[cut:lineEnd], "\n")) && unit.size(open)+unit.size(rest[:lineEnd]) <= limit {
				cut = lineEnd
				after = advance(st, rest, cut)
			}
		}
		head := rest[:cut]
		out = append(out, piece{open, head, closer(head, after.opener)})
		st, rest = after, rest[cut:]
	}
	return out
}

// blockEnd returns the end of the line that closes the block opened by
// the line at open in s (after its newline), or -1 when the block is not
// closed.
func blockEnd(s string, open int) int {
	i := open
	for first := true; i < len(s); first = false {
		lineEnd, next := len(s), len(s)
		if nl := strings.IndexByte(s[i:], '\n'); nl >= 0 {
			lineEnd, next = i+nl, i+nl+1
		}
		if !first && isFence(s[i:lineEnd]) {
			return next
		}
		i = next
	}
	return -1
}

// chooseCut returns where to end a part of s that may hold s[:end] (end
// at least one character): see Split for the order of preference. The
// result is in (0, end].
func chooseCut(s string, end int) int {
	if end >= len(s) {
		return len(s)
	}
	w := s[:end]
	half := end / 2
	if i := strings.LastIndex(w, "\n\n"); i >= 0 && i+2 > half {
		return i + 2
	}
	lastNL := strings.LastIndexByte(w, '\n')
	if lastNL+1 > half {
		return lastNL + 1
	}
	lineStart := lastNL + 1
	spans := atomicSpans(s, lineStart, end)
	if c := lastSpace(w, max(lineStart, half), spans); c > 0 {
		return c
	}
	if lineStart > 0 {
		return lineStart
	}
	if c := lastSpace(w, 0, spans); c > 0 {
		return c
	}
	// No boundary at all: cut inside the line, outside any span and
	// cluster if that leaves something before the cut.
	c := end
	for _, sp := range spans {
		if sp.start < c && c < sp.end && sp.start > 0 {
			c = sp.start
		}
	}
	return graphemeCut(s, c)
}

// span is a stretch of a line not to be cut: [start, end).
type span struct{ start, end int }

// atomicSpans lists the links, inline code and entities of the line of s
// starting at from that begin before to. A span may end after to.
func atomicSpans(s string, from, to int) []span {
	lineEnd := len(s)
	if nl := strings.IndexByte(s[from:], '\n'); nl >= 0 {
		lineEnd = from + nl
	}
	limitAt := func(i int) int { return min(lineEnd, i+maxSpan) }
	var out []span
	for i := from; i < to && i < lineEnd; i++ {
		end := -1
		switch s[i] {
		case '`':
			n := 1
			for i+n < lineEnd && s[i+n] == '`' {
				n++
			}
			if lim := limitAt(i); i+n < lim {
				if j := strings.Index(s[i+n:lim], s[i:i+n]); j >= 0 {
					end = i + n + j + n
				}
			}
			if end < 0 {
				i += n - 1
			}
		case '<':
			if j := strings.IndexByte(s[i+1:limitAt(i)], '>'); j >= 0 {
				end = i + 1 + j + 1
			}
		case '&':
			end = entityEnd(s[i:limitAt(i)])
			if end >= 0 {
				end += i
			}
		case '[':
			if j := strings.Index(s[i+1:limitAt(i)], "]("); j >= 0 {
				if k := strings.IndexByte(s[i+1+j+2:limitAt(i)], ')'); k >= 0 {
					end = i + 1 + j + 2 + k + 1
				}
			}
		}
		if end > i {
			out = append(out, span{i, end})
			i = end - 1
		}
	}
	return out
}

// entityEnd returns the length of the HTML entity s starts with (&amp;,
// &#39;), or -1.
func entityEnd(s string) int {
	for j := 1; j < len(s) && j <= 12; j++ {
		c := s[j]
		switch {
		case c == ';':
			if j > 1 {
				return j + 1
			}
			return -1
		case c == '#' && j == 1, c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		default:
			return -1
		}
	}
	return -1
}

// lastSpace returns the cut after the last space or tab of w at or after
// from that is outside every span, or 0.
func lastSpace(w string, from int, spans []span) int {
	for j := len(w) - 1; j >= from; j-- {
		if w[j] != ' ' && w[j] != '\t' {
			continue
		}
		inside := false
		for _, sp := range spans {
			if sp.start < j && j < sp.end {
				inside, j = true, sp.start
				break
			}
		}
		if !inside && j+1 > 0 {
			return j + 1
		}
	}
	return 0
}

// graphemeCut moves the cut c back to a place that splits no UTF-8
// sequence and no character from its modifiers, if there is one close
// before it; otherwise it stays at c.
func graphemeCut(s string, c int) int {
	for i := c; i > 0 && c-i <= graphemeLookback; i-- {
		if safeBoundary(s, i) {
			return i
		}
	}
	return c
}

const zwj = '\u200d'

// safeBoundary reports whether cutting s at i keeps every UTF-8 sequence
// and every character with what modifies it (combining marks, variation
// selectors, emoji skin tones, tags, zero-width joins, flag pairs, CR LF).
func safeBoundary(s string, i int) bool {
	if i <= 0 || i >= len(s) {
		return true
	}
	if !utf8.RuneStart(s[i]) {
		return false
	}
	r, _ := utf8.DecodeRuneInString(s[i:])
	p, _ := utf8.DecodeLastRuneInString(s[:i])
	switch {
	case p == '\r' && r == '\n', r == zwj, p == zwj:
		return false
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Mc):
		return false
	case r >= 0xFE00 && r <= 0xFE0F, r >= 0xE0100 && r <= 0xE01EF: // variation selectors
		return false
	case r >= 0x1F3FB && r <= 0x1F3FF: // skin tones
		return false
	case r >= 0xE0020 && r <= 0xE007F: // tags (subdivision flags)
		return false
	case isRegional(r) && isRegional(p):
		// Flags are pairs: cut only after an even number of them.
		n := 0
		for j := i; j > 0; {
			q, sz := utf8.DecodeLastRuneInString(s[:j])
			if !isRegional(q) {
				break
			}
			n++
			j -= sz
		}
		return n%2 == 0
	}
	return true
}

func isRegional(r rune) bool { return r >= 0x1F1E6 && r <= 0x1F1FF }
