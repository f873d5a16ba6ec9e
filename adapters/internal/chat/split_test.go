package chat

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// The platforms' limits (docs/platforms.md): Discord's content, Slack's
// section text, Slack's markdown block, Slack's text.
var platformLimits = []int{2000, 3000, 12000, 40000}

var units = []struct {
	name string
	u    Unit
}{{"bytes", Bytes}, {"runes", Runes}}

// genText writes a random reply of about n bytes: prose with links,
// entities, inline code and emoji with modifiers, code blocks with and
// without a language (some longer than a message), long lines without
// spaces, CRLF, flags and combining accents. Blank runs stay short.
func genText(rng *rand.Rand, n int) string {
	words := []string{"alpha", "beta", "gamma", "delta", "x", "naïve", "Grüße", "日本語", "テスト",
		"<https://example.com/a?b=1&amp;c=2|the docs>", "[a link](https://example.com/p?q=1)", "`inline code here`",
		"&amp;", "&lt;tag&gt;", "👍🏽", "👩‍👩‍👧‍👦", "🇫🇷🇩🇪", "e\u0301", "❤️", "<@U123>", "**bold**", "1️⃣"}
	var b strings.Builder
	for b.Len() < n {
		switch rng.IntN(9) {
		case 0, 1, 2: // a paragraph
			for range 5 + rng.IntN(120) {
				b.WriteString(words[rng.IntN(len(words))])
				b.WriteByte(' ')
			}
			b.WriteString(".\n\n")
		case 3: // a code block
			lang := []string{"", "go", "python", "typescriptreact", strings.Repeat("l", 50)}[rng.IntN(5)]
			b.WriteString("```" + lang + "\n")
			for range 1 + rng.IntN(150) {
				b.WriteString(strings.Repeat("    ", rng.IntN(3)) + "fmt.Println(\"a < b && c\") // " + words[rng.IntN(len(words))] + "\n")
			}
			b.WriteString("```\n")
		case 4: // a list
			for range 1 + rng.IntN(10) {
				b.WriteString("- item " + words[rng.IntN(len(words))] + "\n")
			}
			b.WriteByte('\n')
		case 5: // a line without spaces
			b.WriteString(strings.Repeat("é&x", rng.IntN(1500)) + "\n")
		case 6: // CRLF lines
			b.WriteString("line one\r\nline two\r\n")
		case 7: // emoji runs
			for range rng.IntN(800) {
				b.WriteString([]string{"👍🏽", "👩‍👩‍👧‍👦", "🇫🇷", "e\u0301", "❤️"}[rng.IntN(5)])
			}
			b.WriteByte('\n')
		case 8: // a table, and a line with a one-line code block
			b.WriteString("| a | b |\n|---|---|\n| 1 | 2 |\n```one line```\n")
		}
	}
	return b.String()
}

var (
	// Spans a cut must not fall in (when shorter than a message).
	reSpans = regexp.MustCompile("<[^<>\n]*>|\\[[^\\]\n]*\\]\\([^)\n]*\\)|`[^`\n]+`|&[#A-Za-z0-9]{1,10};")
)

// fenceLines counts the lines of s that open or close a block, by the
// common Markdown reading: a line starting with ``` that holds no other.
func fenceLines(s string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		t := strings.TrimLeft(l, " \t")
		if strings.HasPrefix(t, "```") && !strings.Contains(t[3:], "```") {
			n++
		}
	}
	return n
}

// checkSplit checks the properties of Split and split for text.
func checkSplit(t *testing.T, text string, limit int, u Unit) {
	t.Helper()
	checkSplitClusters(t, text, limit, u, true)
}

// checkSplitClusters is checkSplit; clusters false leaves out the check
// that no cut separates a character from its modifiers (for a text that
// is one such cluster, longer than a message).
func checkSplitClusters(t *testing.T, text string, limit int, u Unit, clusters bool) {
	t.Helper()
	pieces := split(text, limit, u)
	limit = max(limit, MinLimit)
	var bodies strings.Builder
	cuts := map[int]bool{}
	at := 0
	for i, p := range pieces {
		part := p.open + p.body + p.close
		if n := u.size(part); n > limit {
			t.Errorf("part %d: %d units, limit %d", i, n, limit)
		}
		if p.body == "" {
			t.Errorf("part %d is empty", i)
		}
		if utf8.ValidString(text) && !utf8.ValidString(part) {
			t.Errorf("part %d is not valid UTF-8", i)
		}
		if fenceLines(part)%2 != 0 {
			t.Errorf("part %d has %d fence lines (unbalanced):\n%.300q…", i, fenceLines(part), part)
		}
		if i > 0 && pieces[i-1].close != "" && (p.open == "" || p.open != reopen(strings.TrimSuffix(p.open, "\n"))) {
			t.Errorf("part %d continues a block without reopening it", i)
		}
		bodies.WriteString(p.body)
		at += len(p.body)
		if i < len(pieces)-1 {
			cuts[at] = true
		}
	}
	if bodies.String() != text {
		t.Fatalf("the parts without the added fence lines are not the text: %d bytes, want %d", bodies.Len(), len(text))
	}
	for _, sp := range reSpans.FindAllStringIndex(text, -1) {
		if sp[1]-sp[0] > limit/4 {
			continue
		}
		for c := sp[0] + 1; c < sp[1]; c++ {
			if cuts[c] {
				t.Errorf("cut at %d inside %q", c, text[sp[0]:sp[1]])
			}
		}
	}
	for c := range cuts {
		r, _ := utf8.DecodeRuneInString(text[c:])
		p, _ := utf8.DecodeLastRuneInString(text[:c])
		flags := 0 // regional indicators just before the cut
		for j := c; j > 0; {
			q, sz := utf8.DecodeLastRuneInString(text[:j])
			if q < 0x1F1E6 || q > 0x1F1FF {
				break
			}
			flags, j = flags+1, j-sz
		}
		if !clusters {
			continue
		}
		if !utf8.RuneStart(text[c]) || r == 0x1F3FD || r == 0xFE0F || r == 0x200D || p == 0x200D || unicode.Is(unicode.Mn, r) ||
			(p == '\r' && r == '\n') || flags%2 != 0 {
			t.Errorf("cut at %d between %U and %U", c, p, r)
		}
	}
	// Split is the pieces rendered, blank ones left out.
	var want []string
	for _, p := range pieces {
		if strings.TrimSpace(p.body) != "" {
			want = append(want, p.open+p.body+p.close)
		}
	}
	if got := Split(text, limit, u); !cmp.Equal(want, got) {
		t.Errorf("Split differs from its pieces")
	}
}

func TestSplitProperties(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 11))
		limit := []int{100, 150, 400, 2000, 3000, 3900}[seed%6]
		text := genText(rng, 2000+rng.IntN(30000))
		for _, u := range units {
			t.Run(fmt.Sprintf("seed%d/%d/%s", seed, limit, u.name), func(t *testing.T) {
				checkSplit(t, text, limit, u.u)
			})
		}
	}
}

// The boundary cases of docs/platforms.md: a text of exactly a platform's
// limit is one message and one more character makes two; a code block
// across the limit is closed and reopened; multi-byte text fills a
// message by characters, not bytes, when the unit is runes.
func TestSplitAtPlatformLimits(t *testing.T) {
	for _, limit := range platformLimits {
		for _, u := range units {
			t.Run(fmt.Sprintf("%d/%s", limit, u.name), func(t *testing.T) {
				exact := strings.Repeat("word ", limit/5)[:limit-1] + "."
				if got := Split(exact, limit, u.u); len(got) != 1 || got[0] != exact {
					t.Errorf("a text of exactly %d: %d parts, want it whole", limit, len(got))
				}
				over := exact + "!"
				got := Split(over, limit, u.u)
				if len(got) != 2 || got[0]+got[1] != over {
					t.Errorf("a text of %d: %d parts, want 2 that join to it", limit+1, len(got))
				}
				checkSplit(t, over, limit, u.u)

				// A go block straddling the limit.
				code := "Intro.\n\n```go\n" + strings.Repeat("x := 1 // é\n", limit/10) + "```\n\nAfter."
				parts := Split(code, limit, u.u)
				if len(parts) < 2 {
					t.Fatalf("%d parts for %d units of code", len(parts), u.u.size(code))
				}
				if !strings.HasPrefix(parts[1], "```go\n") {
					t.Errorf("part 2 starts %.12q, want the go block reopened", parts[1])
				}
				checkSplit(t, code, limit, u.u)

				// limit characters of two bytes each.
				wide := strings.Repeat("é", limit)
				want := 1
				if u.u == Bytes {
					want = 2
				}
				if got := Split(wide, limit, u.u); len(got) != want {
					t.Errorf("%d two-byte characters: %d parts, want %d", limit, len(got), want)
				}
				checkSplit(t, wide, limit, u.u)
			})
		}
	}
}

// Cases carried over from the adapters' own splitters, with the
// preferences spelled out.
func TestSplitCases(t *testing.T) {
	long := func(n int, line string) string {
		var b strings.Builder
		for b.Len() < n {
			b.WriteString(line + "\n")
		}
		return strings.TrimSuffix(b.String(), "\n")
	}
	cases := []struct {
		name  string
		text  string
		limit int
		unit  Unit
		want  []string // nil: only the properties
	}{
		{name: "short", text: "hello", limit: 200, want: []string{"hello"}},
		{name: "blank", text: " \n \t\n", limit: 200, want: nil},
		{name: "empty", text: "", limit: 200, want: nil},
		{name: "paragraphs", limit: 200, unit: Runes,
			text: strings.Repeat("a", 120) + "\n\n" + strings.Repeat("b", 120),
			want: []string{strings.Repeat("a", 120) + "\n\n", strings.Repeat("b", 120)}},
		{name: "paragraph before a line", limit: 200,
			text: strings.Repeat("a", 110) + "\n\n" + strings.Repeat("b", 30) + "\n" + strings.Repeat("c", 80),
			want: []string{strings.Repeat("a", 110) + "\n\n", strings.Repeat("b", 30) + "\n" + strings.Repeat("c", 80)}},
		{name: "line before a space", limit: 200,
			text: strings.Repeat("a ", 60) + "\n" + strings.Repeat("b ", 60),
			want: []string{strings.Repeat("a ", 60) + "\n", strings.Repeat("b ", 60)}},
		{name: "space in the second half", limit: 100,
			text: strings.Repeat("abcdefghi ", 15),
			want: []string{strings.Repeat("abcdefghi ", 10), strings.Repeat("abcdefghi ", 5)}},
		{name: "a link is not cut", limit: 100,
			text: strings.Repeat("w", 70) + " <https://example.com/a/very/long/path|the label> end",
			want: []string{strings.Repeat("w", 70) + " ", "<https://example.com/a/very/long/path|the label> end"}},
		{name: "inline code is not cut", limit: 100,
			text: strings.Repeat("w ", 45) + "`a b c d e f g h` tail",
			want: []string{strings.Repeat("w ", 45), "`a b c d e f g h` tail"}},
		{name: "an entity is not cut", limit: 100,
			text: strings.Repeat("x", 94) + "&amp;&amp;",
			want: []string{strings.Repeat("x", 94) + "&amp;", "&amp;"}},
		{name: "an emoji keeps its skin tone", limit: 100, unit: Runes,
			text: strings.Repeat("x", 97) + "👍🏽👍🏽",
			want: []string{strings.Repeat("x", 97) + "👍🏽", "👍🏽"}},
		{name: "a flag is not halved", limit: 100, unit: Runes,
			text: strings.Repeat("x", 97) + "🇫🇷🇫🇷",
			want: []string{strings.Repeat("x", 97) + "🇫🇷", "🇫🇷"}},
		{name: "fence reopened with its language", limit: 200, unit: Runes, text: "```go\n" + long(300, "x := 1") + "\n```"},
		{name: "a block that fits in a message is not cut", limit: 120,
			text: strings.Repeat("p", 90) + "\n```go\n" + long(60, "x := 1") + "\n```",
			want: []string{strings.Repeat("p", 90) + "\n", "```go\n" + long(60, "x := 1") + "\n```"}},
		{name: "one huge line", limit: 200, text: strings.Repeat("word ", 200)},
		{name: "huge line in code", limit: 200, text: "```\n" + strings.Repeat("z", 700) + "\n```"},
		{name: "multibyte", limit: 200, unit: Runes, text: strings.Repeat("é😀 ", 300)},
		{name: "5000 with code", limit: 1900, unit: Runes, text: "intro\n\n```python\n" + long(3000, "print('hello world')") + "\n```\n\n" + long(2000, "Some prose here.")},
		{name: "an open block is closed", limit: 200, text: "```sh\necho hi", want: []string{"```sh\necho hi\n```"}},
		{name: "invalid UTF-8", limit: 100, text: strings.Repeat("\xff\xfe", 120)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Split(c.text, c.limit, c.unit)
			if c.want != nil || strings.TrimSpace(c.text) == "" {
				if diff := cmp.Diff(c.want, got); diff != "" {
					t.Fatalf("split (-want +got):\n%s", diff)
				}
			}
			checkSplit(t, c.text, c.limit, c.unit)
		})
	}
}

// Runs of the characters that start spans or fences, without what would
// end them: every cut still happens, within the limit.
func TestSplitPathological(t *testing.T) {
	for _, in := range []string{"<", "[", "[](", "&", "`", "``", "` ", "< ", "\n", "\n\n", "```\n", "```", " ", "é", "\u0301", "🇫"} {
		for _, limit := range []int{100, 2000} {
			for _, u := range units {
				t.Run(fmt.Sprintf("%q/%d/%s", in, limit, u.name), func(t *testing.T) {
					checkSplitClusters(t, strings.Repeat(in, 20000/len(in)), limit, u.u, in != "\u0301")
				})
			}
		}
	}
}

func TestSplitReopensLanguage(t *testing.T) {
	text := "```go\n" + strings.Repeat("fmt.Println(1)\n", 40) + "```"
	got := Split(text, 200, Runes)
	if len(got) < 3 {
		t.Fatalf("%d parts", len(got))
	}
	for i, p := range got[1:] {
		if !strings.HasPrefix(p, "```go\n") {
			t.Errorf("part %d does not reopen ```go: %.20q", i+1, p)
		}
	}
	for i, p := range got[:len(got)-1] {
		if !strings.HasSuffix(p, "\n```") {
			t.Errorf("part %d does not close the block: %.20q", i, p[max(0, len(p)-20):])
		}
	}
	// A language too long to repeat is reopened bare.
	text = "```" + strings.Repeat("l", 60) + "\n" + strings.Repeat("fmt.Println(1)\n", 40) + "```"
	for i, p := range Split(text, 200, Runes)[1:] {
		if !strings.HasPrefix(p, "```\n") {
			t.Errorf("part %d starts %.20q, want a bare ```", i+1, p)
		}
	}
}

// A run of blank space longer than a message is left out rather than
// posted as a blank message, which Discord refuses.
func TestSplitLeavesOutBlankParts(t *testing.T) {
	text := "start\n" + strings.Repeat(" ", 500) + "\nend"
	got := Split(text, 100, Bytes)
	for i, p := range got {
		if strings.TrimSpace(p) == "" {
			t.Errorf("part %d is blank", i)
		}
	}
	if joined := strings.Join(got, ""); !strings.HasPrefix(joined, "start") || !strings.HasSuffix(joined, "end") {
		t.Errorf("content lost: %q", joined)
	}
}

func FuzzSplit(f *testing.F) {
	f.Add("```go\nx := 1\n```\n\nhello <https://x.y|z> &amp; `code`", 100, true)
	f.Add(strings.Repeat("👩‍👩‍👧‍👦🇫🇷e\u0301 ", 100), 120, false)
	f.Add(strings.Repeat("a\n\n```\n", 60), 100, true)
	f.Fuzz(func(t *testing.T, text string, limit int, runes bool) {
		if limit < 0 || limit > 5000 || len(text) > 20000 {
			return
		}
		u := Bytes
		if runes {
			u = Runes
		}
		pieces := split(text, limit, u)
		var b strings.Builder
		for i, p := range pieces {
			if n := u.size(p.open + p.body + p.close); n > max(limit, MinLimit) {
				t.Fatalf("part %d: %d units, limit %d", i, n, max(limit, MinLimit))
			}
			b.WriteString(p.body)
		}
		if b.String() != text {
			t.Fatal("the parts do not join to the text")
		}
	})
}
