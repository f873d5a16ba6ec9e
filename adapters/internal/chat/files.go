package chat

import (
	"fmt"
	"path"
	"strings"

	"github.com/talonhq/talon/agent"
)

// MaxParts is how many messages a code block or a table of a reply may
// take before it is sent as a file instead (see Outsized).
const MaxParts = 3

// File is a long code block or table of a reply, sent as an attachment.
type File struct {
	// Name is the file's name, unique per reply: prefix-1.py.
	Name string
	// Content is the block's lines without its fences, or the table.
	Content []byte
	// Table: a Markdown table, not a code block.
	Table bool
	// MediaType is the type of a tool's file, "" when not known.
	MediaType string
}

// Outsized returns text with each code block (```lang … ```) and Markdown
// table that would take more than maxParts messages of limit (as Split
// cuts it) replaced by a short line naming the file that carries it, and
// those files, in order. Files are named prefix-N with an extension from
// the block's language (.txt when unknown; a table is .md). Like Split,
// the result depends only on its arguments, so a resumed delivery plans
// the same messages and files. A text of at most maxParts half-limits is
// returned whole without looking for blocks (the usual short reply).
func Outsized(text string, limit int, unit Unit, maxParts int, prefix string) (string, []File) {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	if unit.size(text) <= max(limit, MinLimit)*maxParts/2 || !strings.Contains(text, "```") && !strings.Contains(text, "|") {
		// No block to cut: none is in it, or the whole text is short
		// enough to be at most maxParts messages unless its lines are
		// longer than a message (then it is sent as messages, as any
		// text is).
		return text, nil
	}
	lines := strings.SplitAfter(text, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var (
		out   strings.Builder
		files []File
	)
	for i := 0; i < len(lines); {
		l := strings.TrimSuffix(lines[i], "\n")
		end, table := i, false
		switch {
		case isFence(l):
			end = i + 1
			for end < len(lines) && !isFence(strings.TrimSuffix(lines[end], "\n")) {
				end++
			}
			if end < len(lines) {
				end++ // the closing fence
			}
		case isTableRow(l) && i+1 < len(lines) && isTableSeparator(strings.TrimSuffix(lines[i+1], "\n")):
			end, table = i+2, true
			for end < len(lines) && isTableRow(strings.TrimSuffix(lines[end], "\n")) {
				end++
			}
		default:
			out.WriteString(lines[i])
			i++
			continue
		}
		block := strings.Join(lines[i:end], "")
		if unit.size(block) <= max(limit, MinLimit) || len(Split(block, limit, unit)) <= maxParts {
			out.WriteString(block)
			i = end
			continue
		}
		f := File{Table: table}
		n := len(files) + 1
		var body []string
		if table {
			body = lines[i:end]
			f.Name = fmt.Sprintf("%s-%d.md", prefix, n)
		} else {
			body = lines[i+1 : end]
			if last := len(body) - 1; last >= 0 && isFence(strings.TrimSuffix(body[last], "\n")) {
				body = body[:last]
			}
			f.Name = fmt.Sprintf("%s-%d%s", prefix, n, extension(l))
		}
		content := strings.Join(body, "")
		if content != "" && !strings.HasSuffix(content, "\n") {
			content += "\n"
		}
		f.Content = []byte(content)
		files = append(files, f)
		what, count := "code", fmt.Sprintf("%d lines", len(body))
		if table {
			what, count = "table", fmt.Sprintf("%d rows", max(len(body)-2, 0))
		}
		fmt.Fprintf(&out, "(The %s, %s, is in the attached file %s.)\n", what, count, f.Name)
		i = end
	}
	return out.String(), files
}

// isTableRow reports whether line is a row of a Markdown table.
func isTableRow(line string) bool {
	t := strings.TrimSpace(line)
	return len(t) > 1 && t[0] == '|' && strings.Count(t, "|") >= 2
}

// isTableSeparator reports whether line is the |---|:--:| row under a
// table's header.
func isTableSeparator(line string) bool {
	t := strings.TrimSpace(line)
	if !isTableRow(t) || !strings.Contains(t, "-") {
		return false
	}
	return strings.Trim(t, "|-: ") == ""
}

// extensions maps a code block's language to a file extension.
var extensions = map[string]string{
	"go": ".go", "golang": ".go", "py": ".py", "python": ".py", "js": ".js", "javascript": ".js",
	"ts": ".ts", "typescript": ".ts", "tsx": ".tsx", "jsx": ".jsx", "json": ".json", "yaml": ".yaml",
	"yml": ".yaml", "toml": ".toml", "sh": ".sh", "bash": ".sh", "shell": ".sh", "zsh": ".sh",
	"console": ".txt", "sql": ".sql", "rust": ".rs", "rs": ".rs", "java": ".java", "kotlin": ".kt",
	"kt": ".kt", "swift": ".swift", "c": ".c", "h": ".h", "cpp": ".cpp", "c++": ".cpp", "cs": ".cs",
	"csharp": ".cs", "rb": ".rb", "ruby": ".rb", "php": ".php", "html": ".html", "css": ".css",
	"xml": ".xml", "md": ".md", "markdown": ".md", "diff": ".diff", "patch": ".diff", "csv": ".csv",
	"dockerfile": ".dockerfile", "makefile": ".mk", "ini": ".ini", "lua": ".lua", "r": ".r",
	"scala": ".scala", "hcl": ".tf", "terraform": ".tf", "proto": ".proto", "graphql": ".graphql",
}

// extension is the file extension for the code block opened by the fence
// line opener: by its language, .txt for none or one not known.
func extension(opener string) string {
	lang := strings.ToLower(strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(opener), "`")))
	if i := strings.IndexAny(lang, " \t{"); i >= 0 {
		lang = lang[:i]
	}
	if ext, ok := extensions[lang]; ok {
		return ext
	}
	return ".txt"
}

// WithReplyFiles returns the files to send with a reply: those Outsized
// cut from its text, then the files its turn's tools returned (as the
// runtime loaded them), in order, every name made unique within the reply
// ("report.csv", "report-2.csv"), so that a file can be told from another
// by its name. MediaType is kept for the platform; "" for a cut block.
func WithReplyFiles(cut []File, out []agent.OutFile) []File {
	files := append([]File(nil), cut...)
	seen := map[string]bool{}
	for _, f := range cut {
		seen[f.Name] = true
	}
	for _, o := range out {
		name := o.Name
		for i := 2; seen[name]; i++ {
			ext := path.Ext(o.Name)
			name = fmt.Sprintf("%s-%d%s", strings.TrimSuffix(o.Name, ext), i, ext)
		}
		seen[name] = true
		files = append(files, File{Name: name, Content: o.Data, MediaType: o.MediaType})
	}
	return files
}
