package discord

import (
	"strings"
	"unicode/utf8"
)

// splitMessage cuts text into messages of at most limit characters (runes),
// preferring paragraph boundaries, then line boundaries. A code block cut in
// two is closed at the end of one message and reopened, with its language,
// at the start of the next, so every message renders on its own. Markdown
// tables, which Discord does not render, become code blocks first. A single
// line longer than a message is cut at a space, or anywhere as a last resort.
func splitMessage(text string, limit int) []string {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = tablesToCode(text)
	text = strings.Trim(text, "\n")
	if strings.TrimSpace(text) == "" {
		return nil
	}
	if utf8.RuneCountInString(text) <= limit {
		return []string{text}
	}
	s := splitter{limit: limit}
	for _, l := range strings.Split(text, "\n") {
		s.add(l)
	}
	s.flush(true)
	return s.out
}

// splitter accumulates lines into the message being built.
type splitter struct {
	limit int
	out   []string
	lines []string // the current message's lines
	n     int      // runes in the current message, newlines included
	// open is the fence line ("```go") of a code block open at the end of
	// the current message, or "".
	open string
	// para is the number of lines of the current message up to its last
	// blank line outside a code block (a paragraph break), 0 if none.
	para int
}

const fenceClose = "```"

func (s *splitter) add(l string) {
	// A line that cannot fit even in an empty message is cut first.
	room := s.limit - utf8.RuneCountInString(s.open) - len(fenceClose) - 2
	for utf8.RuneCountInString(l) > room {
		head, tail := cutLine(l, room)
		s.add(head)
		l = tail
	}
	isFence := strings.HasPrefix(strings.TrimSpace(l), "```")
	// The current message, this line and a closing fence must fit.
	opening, closing := isFence && s.open == "", isFence && s.open != ""
	closer := 0
	if (s.open != "" && !closing) || opening {
		closer = 1 + len(fenceClose)
	}
	for len(s.lines) > 0 && s.n+1+utf8.RuneCountInString(l)+closer > s.limit {
		s.flush(false)
	}
	s.push(l)
	if isFence {
		if s.open == "" {
			s.open = strings.TrimSpace(l)
		} else {
			s.open = ""
		}
	} else if s.open == "" && strings.TrimSpace(l) == "" && s.n >= s.limit/2 {
		s.para = len(s.lines)
	}
}

func (s *splitter) push(l string) {
	if len(s.lines) > 0 {
		s.n++
	}
	s.lines = append(s.lines, l)
	s.n += utf8.RuneCountInString(l)
}

// flush ends the current message: at its last paragraph break when there
// is one (the rest starts the next message), otherwise whole, closing an
// open code block and reopening it in the next message.
func (s *splitter) flush(final bool) {
	if len(s.lines) == 0 {
		return
	}
	if !final && s.para > 0 && s.para < len(s.lines) {
		head, rest := s.lines[:s.para], append([]string(nil), s.lines[s.para:]...)
		s.emit(head)
		s.lines, s.n, s.para = nil, 0, 0
		for len(rest) > 0 && strings.TrimSpace(rest[0]) == "" {
			rest = rest[1:]
		}
		for _, l := range rest {
			s.push(l)
		}
		return
	}
	lines := s.lines
	if s.open != "" && !final {
		lines = append(lines, fenceClose)
	}
	s.emit(lines)
	s.lines, s.n, s.para = nil, 0, 0
	if s.open != "" && !final {
		s.push(s.open)
	}
}

func (s *splitter) emit(lines []string) {
	msg := strings.Trim(strings.Join(lines, "\n"), "\n")
	if strings.TrimSpace(msg) != "" {
		s.out = append(s.out, msg)
	}
}

// cutLine cuts l after at most n runes, at the last space if there is one
// in the second half, else exactly at n runes.
func cutLine(l string, n int) (string, string) {
	i, count := 0, 0
	for i < len(l) && count < n {
		_, size := utf8.DecodeRuneInString(l[i:])
		i += size
		count++
	}
	if sp := strings.LastIndexByte(l[:i], ' '); sp > i/2 {
		return l[:sp], l[sp+1:]
	}
	return l[:i], l[i:]
}

// tablesToCode wraps Markdown tables (a header row, a |---| separator row
// and body rows, outside code blocks) in code blocks, since Discord shows
// them as raw text anyway and a monospace font keeps the columns aligned.
func tablesToCode(text string) string {
	lines := strings.Split(text, "\n")
	var out []string
	inFence := false
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inFence = !inFence
		}
		if !inFence && isTableRow(l) && i+1 < len(lines) && isTableSeparator(lines[i+1]) {
			j := i + 2
			for j < len(lines) && isTableRow(lines[j]) {
				j++
			}
			out = append(out, "```")
			out = append(out, lines[i:j]...)
			out = append(out, "```")
			i = j - 1
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func isTableRow(l string) bool {
	t := strings.TrimSpace(l)
	return strings.HasPrefix(t, "|") && strings.Count(t, "|") >= 2
}

func isTableSeparator(l string) bool {
	t := strings.TrimSpace(l)
	if !isTableRow(t) || !strings.Contains(t, "-") {
		return false
	}
	return strings.Trim(t, "|-: ") == ""
}
