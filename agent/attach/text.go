package attach

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Excerpt is the text of a file as a model gets it.
type Excerpt struct {
	Text string
	// Cut is set when the middle of the text was left out to keep it
	// within the budget; Omitted is how many bytes were.
	Cut     bool
	Omitted int64
}

// ReadText reads the text of r (size bytes) within budget bytes: all of
// it when it fits, otherwise its head and its tail, cut at line ends where
// there is one nearby, with a marker in the middle saying how much was
// left out. Only the bytes kept are read. Invalid UTF-8 is replaced.
func ReadText(r io.ReaderAt, size int64, budget int) (Excerpt, error) {
	budget = max(budget, 64)
	if size <= int64(budget) {
		b := make([]byte, size)
		if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
			return Excerpt{}, fmt.Errorf("attach: read text: %w", err)
		}
		return Excerpt{Text: clean(b)}, nil
	}
	headN, tailN := budget*2/3, budget/3
	head := make([]byte, headN)
	if _, err := r.ReadAt(head, 0); err != nil && err != io.EOF {
		return Excerpt{}, fmt.Errorf("attach: read text: %w", err)
	}
	tail := make([]byte, tailN)
	if _, err := r.ReadAt(tail, size-int64(tailN)); err != nil && err != io.EOF {
		return Excerpt{}, fmt.Errorf("attach: read text: %w", err)
	}
	return joinCut(head, tail, size), nil
}

// CutText keeps s within budget bytes as ReadText does.
func CutText(s string, budget int) Excerpt {
	budget = max(budget, 64)
	if len(s) <= budget {
		return Excerpt{Text: clean([]byte(s))}
	}
	headN, tailN := budget*2/3, budget/3
	return joinCut([]byte(s[:headN]), []byte(s[len(s)-tailN:]), int64(len(s)))
}

func joinCut(head, tail []byte, size int64) Excerpt {
	// Cut at a line end near each edge, so that no line is half shown.
	if i := strings.LastIndexByte(string(head), '\n'); i >= len(head)*3/4 {
		head = head[:i+1]
	}
	if i := strings.IndexByte(string(tail), '\n'); i >= 0 && i < len(tail)/4 {
		tail = tail[i+1:]
	}
	omitted := size - int64(len(head)) - int64(len(tail))
	var b strings.Builder
	b.WriteString(clean(head))
	if !strings.HasSuffix(b.String(), "\n") {
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "[… %d bytes left out here; only the beginning and the end of the file are shown …]\n", omitted)
	b.WriteString(clean(tail))
	return Excerpt{Text: b.String(), Cut: true, Omitted: omitted}
}

// clean is b as valid UTF-8: runes cut at either edge are dropped, other
// invalid bytes replaced, NULs removed.
func clean(b []byte) string {
	for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.RuneStart(b[0]); i++ {
		b = b[1:]
	}
	for i := 0; i < utf8.UTFMax && len(b) > 0; i++ {
		if r, n := utf8.DecodeLastRune(b); r != utf8.RuneError || n > 1 {
			break
		}
		b = b[:len(b)-1]
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "")
}
