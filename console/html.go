package console

import (
	"bytes"
	"strings"
)

// markup is HTML the console wrote itself. Only constants convert to it
// implicitly; a value read from the database or a request must go through
// doc.text or doc.attr, which escape it. (Why not html/template: RATIONALE.md.)
type markup string

// doc builds an HTML page. Every dynamic value is escaped on the way in.
type doc struct{ b bytes.Buffer }

// raw appends markup the console wrote.
func (d *doc) raw(m markup) { d.b.WriteString(string(m)) }

// text appends s as text: escaped, invalid UTF-8 replaced. Safe in an
// element's content and inside a double-quoted attribute value.
func (d *doc) text(s string) { d.b.WriteString(escape(s)) }

// attr appends ` name="value"`, value escaped.
func (d *doc) attr(name markup, value string) {
	d.b.WriteString(" " + string(name) + `="` + escape(value) + `"`)
}

// escape is the one escaping function: & < > " ' become entities.
func escape(s string) string { return escaper.Replace(strings.ToValidUTF8(s, "\uFFFD")) }

var escaper = strings.NewReplacer(`&`, "&amp;", `'`, "&#39;", `<`, "&lt;", `>`, "&gt;", `"`, "&#34;")

// hiddenCSRF appends the form field every POST carries.
func (d *doc) hiddenCSRF(token string) {
	d.raw(`<input type="hidden" name="csrf"`)
	d.attr("value", token)
	d.raw(`>`)
}

// table appends a table with a header row and rows of cells; cells of the
// columns in num are right-aligned numbers. Every cell is escaped.
func (d *doc) table(head []string, num map[int]bool, rows [][]string) {
	d.raw(`<div class="scroll"><table><thead><tr>`)
	for i, h := range head {
		d.raw(`<th scope="col"`)
		if num[i] {
			d.raw(` class="num"`)
		}
		d.raw(`>`)
		d.text(h)
		d.raw(`</th>`)
	}
	d.raw(`</tr></thead><tbody>`)
	for _, r := range rows {
		d.raw(`<tr>`)
		for i, c := range r {
			if num[i] {
				d.raw(`<td class="num">`)
			} else {
				d.raw(`<td>`)
			}
			d.text(c)
			d.raw(`</td>`)
		}
		d.raw(`</tr>`)
	}
	d.raw(`</tbody></table></div>`)
}

// navItems are the console's pages in the navigation.
var navItems = []struct {
	nav   string
	href  markup
	label markup
}{
	{"overview", "/console/", "Overview"},
	{"usage", "/console/usage", "Usage"},
	{"conversations", "/console/conversations", "Conversations"},
	{"credentials", "/console/credentials", "Credentials"},
	{"users", "/console/users", "Users"},
	{"tools", "/console/tools", "Tools"},
}

// layout wraps content in the page: head, navigation (when signed in),
// sign-out form and the title.
func (d *doc) layout(p page, content func(d *doc)) {
	d.raw(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>`)
	d.text(p.Title)
	d.raw(` · Talon console</title>
<link rel="stylesheet" href="/console/style.css">
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
`)
	if p.Nav != "" {
		d.raw(`<header><nav aria-label="Console pages"><span class="brand">Talon</span>`)
		for _, n := range navItems {
			d.raw(`<a href="` + n.href + `"`)
			if n.nav == p.Nav {
				d.raw(` aria-current="page"`)
			}
			d.raw(`>` + n.label + `</a>`)
		}
		d.raw(`</nav><form method="post" action="/console/signout" class="signout">`)
		d.hiddenCSRF(p.CSRF)
		d.raw(`<button type="submit">Sign out</button></form></header>
`)
	}
	d.raw(`<main id="main"><h1>`)
	d.text(p.Title)
	d.raw(`</h1>
`)
	content(d)
	d.raw(`</main>
</body>
</html>
`)
}
