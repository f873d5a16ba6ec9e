package htmltext

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestExtract(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want Page
	}{
		{
			name: "title and paragraphs",
			doc: `<!DOCTYPE html><html><head><title> My  &amp; Page </title>
<meta charset="utf-8"><link rel=stylesheet href=x.css></head>
<body><h1>Hello</h1><p>First   para
graph.</p><p>Second</p></body></html>`,
			want: Page{Title: "My & Page", Text: "Hello\n\nFirst para graph.\n\nSecond"},
		},
		{
			name: "scripts styles nav dropped",
			doc: `<body><nav><a href="/">Home</a><ul><li>Menu</li></ul></nav>
<script>var s = "<p>not text</p>"; if (a < b) {}</script>
<style>p { color: red }</style><noscript>enable js</noscript>
<p>Kept</p><SCRIPT type="text/javascript">alert(1)</SCRIPT ><p>Also kept</p></body>`,
			want: Page{Text: "Kept\n\nAlso kept"},
		},
		{
			name: "entities",
			doc:  `<p>&lt;tag&gt; &quot;q&quot; &#39;s&#39; &#x263A; caf&eacute; 5&nbsp;km &copy 2024 &unknown; AT&T &#0; &#xD800; &#1114112;</p>`,
			want: Page{Text: "<tag> \"q\" 's' ☺ café 5 km © 2024 &unknown; AT&T \uFFFD \uFFFD \uFFFD"},
		},
		{
			name: "lines lists and tables",
			doc:  `<ul><li>one</li><li>two</li></ul>a<br>b<br/>c<table><tr><td>x</td><td>y</td></tr><tr><td>z</td></tr></table>`,
			want: Page{Text: "one\ntwo\n\na\nb\nc\n\nx y\nz"},
		},
		{
			name: "inline elements do not break words",
			doc:  `<p>un<b>bold</b>ed <a href="x">link</a>, <em>em</em>.</p>`,
			want: Page{Text: "unbolded link, em."},
		},
		{
			name: "pre keeps layout",
			doc:  "<p>before</p><pre>  line 1\n    line 2</pre><p>after</p>",
			want: Page{Text: "before\n\n  line 1\n    line 2\n\nafter"},
		},
		{
			name: "comments and quoted attributes",
			doc:  `<!-- <p>hidden</p> --><p title="a > b" data-x='<p>'>visible</p><?xml x?><![CDATA[x]]>`,
			want: Page{Text: "visible"},
		},
		{
			name: "head without end tag",
			doc:  `<html><head><title>T</title><style>x{}</style><body><p>Body text</p>`,
			want: Page{Title: "T", Text: "Body text"},
		},
		{
			name: "svg title ignored",
			doc:  `<body><svg><title>icon</title><path d="M0"/></svg><p>x</p></body><title>Late</title>`,
			want: Page{Title: "Late", Text: "x"},
		},
		{
			name: "stray less-than and unterminated markup",
			doc:  `<p>1 < 2 and 3 <= 4</p><p>end <b`,
			want: Page{Text: "1 < 2 and 3 <= 4\n\nend"},
		},
		{
			name: "unterminated script drops the rest",
			doc:  `<p>a</p><script>var x = 1;`,
			want: Page{Text: "a"},
		},
		{
			name: "textarea content is text",
			doc:  `<p>x</p><textarea><b>raw</b></textarea>`,
			want: Page{Text: "x\n\n<b>raw</b>"},
		},
		{name: "empty", doc: "", want: Page{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Extract(tt.doc)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(Page{})); diff != "" {
				t.Errorf("Extract mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzExtract(f *testing.F) {
	f.Add(`<html><head><title>x</title></head><body><p>a &amp; b</p><script>x</script></body>`)
	f.Add("<pre>\n x</pre>&#x1F600;<!-- c")
	f.Fuzz(func(t *testing.T, doc string) {
		p := Extract(doc)
		if strings.HasPrefix(p.Text, " ") || strings.HasPrefix(p.Text, "\n") {
			t.Fatalf("Extract(%q).Text = %q starts with whitespace", doc, p.Text)
		}
	})
}
