package discord

import (
	"strings"

	"github.com/talonhq/talon/adapters/internal/chat"
)

// splitMessage cuts text into messages of at most limit characters
// (runes) with chat.Split: paragraph, then line boundaries preferred, code
// blocks closed and reopened with their language, links, inline code and
// emoji kept whole. Markdown tables, which Discord does not render, become
// code blocks first. It returns nil for a blank text.
func splitMessage(text string, limit int) []string {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = tablesToCode(text)
	return chat.Split(strings.Trim(text, "\n"), limit, chat.Runes)
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
