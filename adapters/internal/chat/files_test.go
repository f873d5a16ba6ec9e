package chat

import (
	"fmt"
	"strings"
	"testing"
)

func codeLines(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "fmt.Println(%d) // line %d of the program\n", i, i)
	}
	return b.String()
}

func TestOutsizedLongCodeBlockBecomesAFile(t *testing.T) {
	code := codeLines(200) // ~8,000 bytes: more than 3 messages of 1,000
	text := "Here is the program:\n\n```go\n" + code + "```\n\nRun it with go run."
	rest, files := Outsized(text, 1000, Bytes, MaxParts, "talon-r7")
	if len(files) != 1 {
		t.Fatalf("files = %d, want 1", len(files))
	}
	f := files[0]
	if f.Name != "talon-r7-1.go" || f.Table {
		t.Errorf("file = %q table=%v, want talon-r7-1.go, code", f.Name, f.Table)
	}
	if string(f.Content) != code {
		t.Errorf("file content is not the block without its fences:\n%.200q", f.Content)
	}
	want := "Here is the program:\n\n(The code, 200 lines, is in the attached file talon-r7-1.go.)\n\nRun it with go run."
	if rest != want {
		t.Errorf("text =\n%q\nwant\n%q", rest, want)
	}
	if parts := Split(rest, 1000, Bytes); len(parts) != 1 {
		t.Errorf("the text beside the file takes %d messages", len(parts))
	}
}

func TestOutsizedKeepsBlocksThatFit(t *testing.T) {
	text := "a\n```py\n" + codeLines(60) + "```\nb\n" // ~2,400 bytes: 3 messages
	rest, files := Outsized(text, 1000, Bytes, MaxParts, "x")
	if len(files) != 0 || rest != text {
		t.Fatalf("a block of 3 messages was changed: %d files", len(files))
	}
	// The same text with a smaller limit is more than 3 messages.
	if _, files := Outsized(text, 500, Bytes, MaxParts, "x"); len(files) != 1 || files[0].Name != "x-1.py" {
		t.Fatalf("files = %+v, want x-1.py", files)
	}
}

func TestOutsizedTableAndUnclosedBlock(t *testing.T) {
	var tb strings.Builder
	tb.WriteString("| name | value |\n|---|:--:|\n")
	for i := range 150 {
		fmt.Fprintf(&tb, "| row %d | %d |\n", i, i*i)
	}
	text := "Table:\n" + tb.String() + "\nAnd code:\n```\n" + codeLines(100) // left open
	rest, files := Outsized(text, 800, Runes, MaxParts, "p")
	if len(files) != 2 {
		t.Fatalf("files = %d, want 2", len(files))
	}
	if files[0].Name != "p-1.md" || !files[0].Table || string(files[0].Content) != tb.String() {
		t.Errorf("table file = %q table=%v", files[0].Name, files[0].Table)
	}
	if files[1].Name != "p-2.txt" || string(files[1].Content) != codeLines(100) {
		t.Errorf("open block file = %q, content %.80q", files[1].Name, files[1].Content)
	}
	for _, w := range []string{"(The table, 150 rows, is in the attached file p-1.md.)", "(The code, 100 lines, is in the attached file p-2.txt.)"} {
		if !strings.Contains(rest, w) {
			t.Errorf("text lacks %q:\n%s", w, rest)
		}
	}
	if strings.Contains(rest, "row 3") || strings.Contains(rest, "Println") {
		t.Errorf("the text still holds what went to files:\n%s", rest)
	}
}

func TestOutsizedExtensionAndDeterminism(t *testing.T) {
	for opener, ext := range map[string]string{"```Python": ".py", "```c++": ".cpp", "```": ".txt", "```../../etc/passwd": ".txt", "```go {linenos}": ".go"} {
		if got := extension(opener); got != ext {
			t.Errorf("extension(%q) = %q, want %q", opener, got, ext)
		}
	}
	text := "x\n```rust\n" + codeLines(300) + "```\n"
	a, fa := Outsized(text, 2000, Bytes, MaxParts, "r")
	b, fb := Outsized(text, 2000, Bytes, MaxParts, "r")
	if a != b || len(fa) != 1 || len(fb) != 1 || string(fa[0].Content) != string(fb[0].Content) {
		t.Fatal("Outsized is not deterministic")
	}
}

func FuzzOutsized(f *testing.F) {
	f.Add("```go\n"+codeLines(50)+"```\n", 200)
	f.Add("| a |\n|---|\n| 1 |\n| 2 |\n", 100)
	f.Fuzz(func(t *testing.T, text string, limit int) {
		limit = max(limit%5000, MinLimit)
		rest, files := Outsized(text, limit, Bytes, MaxParts, "f")
		for _, fl := range files {
			if !strings.Contains(rest, fl.Name) {
				t.Fatalf("file %s not named in the text", fl.Name)
			}
		}
		if len(files) == 0 && rest != strings.ReplaceAll(text, "\r\n", "\n") {
			t.Fatal("text changed without files")
		}
	})
}

// benchReply is a long answer of about 12 KB (three messages of 4,000
// bytes): prose, a 60-line code block and a 20-row table that stay inline.
func benchReply() string {
	var b strings.Builder
	for range 40 {
		b.WriteString("A paragraph of the answer explaining what the code does and why, in a few sentences of prose.\n\n")
	}
	b.WriteString("```go\n" + codeLines(60) + "```\n\n| name | value |\n|---|---|\n")
	for i := range 20 {
		fmt.Fprintf(&b, "| row %d | %d |\n", i, i)
	}
	return b.String()
}

// BenchmarkSplitReply is the delivery's planning before files out: Split
// alone. BenchmarkOutsizedThenSplit adds Outsized, as Deliver now does;
// run both in one go test invocation to compare.
func BenchmarkSplitReply(b *testing.B) {
	text := benchReply()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		_ = Split(text, 4000, Bytes)
	}
}

func BenchmarkOutsizedThenSplit(b *testing.B) {
	text := benchReply()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		rest, _ := Outsized(text, 4000, Bytes, MaxParts, "talon-r1")
		_ = Split(rest, 4000, Bytes)
	}
}
