package htmltext

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Page is the readable content of an HTML document.
type Page struct {
	Title string
	Text  string
}

// skipped elements contribute no text, nor does anything inside them.
var skipped = map[string]bool{
	"script": true, "style": true, "head": true, "nav": true, "noscript": true,
	"template": true, "svg": true, "iframe": true, "object": true, "canvas": true,
	"select": true, "button": true, "math": true,
}

// rawText elements hold text that is not parsed for tags, up to their end tag.
var rawText = map[string]bool{
	"script": true, "style": true, "title": true, "textarea": true, "xmp": true,
	"noscript": true, "iframe": true, "noembed": true, "noframes": true,
}

// void elements never have content or an end tag.
var void = map[string]bool{
	"area": true, "base": true, "br": true, "col": true, "embed": true, "hr": true,
	"img": true, "input": true, "link": true, "meta": true, "source": true,
	"track": true, "wbr": true,
}

// paragraph elements are separated by a blank line; line elements by a
// newline; cell elements by a space.
var (
	paragraph = map[string]bool{
		"p": true, "div": true, "h1": true, "h2": true, "h3": true, "h4": true,
		"h5": true, "h6": true, "section": true, "article": true, "blockquote": true,
		"pre": true, "table": true, "ul": true, "ol": true, "header": true,
		"footer": true, "main": true, "aside": true, "figure": true, "dl": true,
		"hr": true, "form": true, "address": true, "fieldset": true, "details": true,
		"summary": true, "body": true, "html": true,
	}
	line = map[string]bool{
		"br": true, "li": true, "tr": true, "dt": true, "dd": true, "option": true,
		"figcaption": true, "caption": true, "label": true,
	}
	cell = map[string]bool{"td": true, "th": true}
)

// Extract returns the title and readable text of an HTML document: text of
// skipped elements (scripts, styles, head, navigation...) is dropped,
// entities are decoded, runs of whitespace collapse to one space, block
// elements become line or paragraph breaks, and <pre> keeps its layout. It
// is a forgiving tokenizer, not a full HTML5 parser, and never fails.
func Extract(doc string) Page {
	var (
		w      textWriter
		title  string
		gotTtl bool
		skip   []string // open skipped elements, innermost last
		pre    int      // depth of open <pre> elements
	)
	i := 0
	for i < len(doc) {
		lt := strings.IndexByte(doc[i:], '<')
		if lt < 0 {
			if len(skip) == 0 {
				w.text(decodeEntities(doc[i:]), pre > 0)
			}
			break
		}
		if lt > 0 && len(skip) == 0 {
			w.text(decodeEntities(doc[i:i+lt]), pre > 0)
		}
		i += lt
		t, next := readTag(doc, i)
		if t.kind == tagNone {
			// A '<' that starts no tag is text.
			if len(skip) == 0 {
				w.text("<", pre > 0)
			}
			i++
			continue
		}
		i = next
		if t.kind == tagComment {
			continue
		}
		name := t.name
		if t.kind == tagStart {
			if rawText[name] && !t.selfClosing {
				content, after := readRawText(doc, i, name)
				i = after
				switch {
				case name == "title":
					if !gotTtl && !contains(skip, "svg") && !contains(skip, "math") {
						title = collapse(decodeEntities(content))
						gotTtl = true
					}
				case name == "textarea" && len(skip) == 0:
					w.text(decodeEntities(content), false)
				}
				continue
			}
			if name == "body" {
				skip = remove(skip, "head")
			}
			if skipped[name] {
				if !t.selfClosing && !void[name] {
					skip = append(skip, name)
				}
				continue
			}
			if len(skip) > 0 {
				continue
			}
			if name == "pre" {
				pre++
			}
			w.brk(breakFor(name))
			continue
		}
		// End tag.
		if n := lastIndex(skip, name); n >= 0 {
			skip = skip[:n]
			continue
		}
		if len(skip) > 0 {
			continue
		}
		if name == "pre" && pre > 0 {
			pre--
		}
		w.brk(breakFor(name))
	}
	return Page{Title: title, Text: w.String()}
}

// breakFor is the break an element's start or end tag causes.
func breakFor(name string) int {
	switch {
	case paragraph[name]:
		return breakParagraph
	case line[name]:
		return breakLine
	case cell[name]:
		return breakSpace
	}
	return breakNone
}

func contains(s []string, v string) bool { return lastIndex(s, v) >= 0 }

func lastIndex(s []string, v string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == v {
			return i
		}
	}
	return -1
}

func remove(s []string, v string) []string {
	out := s[:0]
	for _, e := range s {
		if e != v {
			out = append(out, e)
		}
	}
	return out
}

type tagKind int

const (
	tagNone tagKind = iota
	tagStart
	tagEnd
	tagComment // comments, doctypes, CDATA, processing instructions
)

type tag struct {
	kind        tagKind
	name        string // lower case
	selfClosing bool
}

// readTag reads the markup starting at doc[i] == '<' and returns it and the
// index just after it. A '<' that does not start markup yields tagNone.
func readTag(doc string, i int) (tag, int) {
	rest := doc[i+1:]
	switch {
	case strings.HasPrefix(rest, "!--"):
		end := strings.Index(rest[3:], "-->")
		if end < 0 {
			return tag{kind: tagComment}, len(doc)
		}
		return tag{kind: tagComment}, i + 1 + 3 + end + 3
	case strings.HasPrefix(rest, "!") || strings.HasPrefix(rest, "?"):
		end := strings.IndexByte(rest, '>')
		if end < 0 {
			return tag{kind: tagComment}, len(doc)
		}
		return tag{kind: tagComment}, i + 1 + end + 1
	}
	kind := tagStart
	j := i + 1
	if j < len(doc) && doc[j] == '/' {
		kind = tagEnd
		j++
	}
	if j >= len(doc) || !isASCIILetter(doc[j]) {
		if kind == tagEnd && j < len(doc) && doc[j] == '>' {
			return tag{kind: tagComment}, j + 1 // "</>" is ignored
		}
		return tag{}, i
	}
	start := j
	for j < len(doc) && !isSpace(doc[j]) && doc[j] != '/' && doc[j] != '>' {
		j++
	}
	t := tag{kind: kind, name: strings.ToLower(doc[start:j])}
	// Attributes: skip to the closing '>', honouring quoted values.
	var quote byte
	prev := byte(0)
	for ; j < len(doc); j++ {
		c := doc[j]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			if prev == '=' {
				quote = c
			}
		case c == '>':
			t.selfClosing = prev == '/'
			return t, j + 1
		}
		if !isSpace(c) {
			prev = c
		}
	}
	return t, len(doc)
}

// readRawText returns the text from doc[i] up to the end tag </name (case
// insensitive) and the index after that end tag.
func readRawText(doc string, i int, name string) (string, int) {
	closer := "</" + name
	for j := i; j < len(doc); {
		k := strings.Index(doc[j:], "</")
		if k < 0 {
			break
		}
		k += j
		end := k + len(closer)
		if end <= len(doc) && strings.EqualFold(doc[k:end], closer) &&
			(end == len(doc) || isSpace(doc[end]) || doc[end] == '>' || doc[end] == '/') {
			gt := strings.IndexByte(doc[end:], '>')
			if gt < 0 {
				return doc[i:k], len(doc)
			}
			return doc[i:k], end + gt + 1
		}
		j = k + 2
	}
	return doc[i:], len(doc)
}

func isASCIILetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
}

// collapse trims s and replaces each run of whitespace with one space.
func collapse(s string) string { return strings.Join(strings.Fields(s), " ") }

// Break strengths, ordered.
const (
	breakNone = iota
	breakSpace
	breakLine
	breakParagraph
)

// textWriter accumulates readable text, collapsing whitespace and merging
// consecutive breaks into the strongest one.
type textWriter struct {
	b       strings.Builder
	pending int // strongest break requested since the last text
}

// brk requests a break before the next text.
func (w *textWriter) brk(k int) { w.pending = max(w.pending, k) }

// text appends s; unless verbatim, whitespace runs become one space.
func (w *textWriter) text(s string, verbatim bool) {
	if verbatim {
		if w.b.Len() == 0 {
			// Nothing precedes: leading whitespace is not content.
			s = strings.TrimLeft(s, " \t\r\n\f")
			if s == "" {
				return
			}
		}
		w.flush()
		w.b.WriteString(strings.ReplaceAll(s, "\r\n", "\n"))
		return
	}
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		if r < utf8.RuneSelf && isSpace(byte(r)) || r == '\u00a0' {
			w.brk(breakSpace)
			continue
		}
		w.flush()
		w.b.WriteRune(r)
	}
}

// flush writes the pending break, if any and if text came before it.
func (w *textWriter) flush() {
	if w.b.Len() > 0 {
		switch w.pending {
		case breakSpace:
			w.b.WriteByte(' ')
		case breakLine:
			w.b.WriteByte('\n')
		case breakParagraph:
			w.b.WriteString("\n\n")
		}
	}
	w.pending = breakNone
}

func (w *textWriter) String() string { return w.b.String() }

// entities are the named character references decoded; others are kept as
// written. The full HTML table has over 2000 entries; these cover what
// readable text uses.
var entities = map[string]string{
	"amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'", "nbsp": "\u00a0",
	"copy": "©", "reg": "®", "trade": "™", "hellip": "…", "mdash": "—", "ndash": "–",
	"lsquo": "‘", "rsquo": "’", "sbquo": "‚", "ldquo": "“", "rdquo": "”", "bdquo": "„",
	"laquo": "«", "raquo": "»", "lsaquo": "‹", "rsaquo": "›", "bull": "•",
	"middot": "·", "euro": "€", "pound": "£", "yen": "¥", "cent": "¢", "deg": "°",
	"plusmn": "±", "times": "×", "divide": "÷", "para": "¶", "sect": "§",
	"frac12": "½", "frac14": "¼", "frac34": "¾", "sup2": "²", "sup3": "³",
	"micro": "µ", "shy": "", "zwj": "\u200d", "zwnj": "\u200c", "ensp": " ",
	"emsp": " ", "thinsp": " ", "larr": "←", "rarr": "→", "uarr": "↑", "darr": "↓",
	"harr": "↔", "rArr": "⇒", "lArr": "⇐", "le": "≤", "ge": "≥", "ne": "≠",
	"asymp": "≈", "infin": "∞", "minus": "−", "prime": "′", "Prime": "″",
	"dagger": "†", "Dagger": "‡", "permil": "‰", "iexcl": "¡", "iquest": "¿",
	"ordf": "ª", "ordm": "º", "not": "¬", "macr": "¯", "acute": "´", "cedil": "¸",
	"uml": "¨", "brvbar": "¦", "curren": "¤", "check": "✓", "hearts": "♥",
	"agrave": "à", "aacute": "á", "acirc": "â", "atilde": "ã", "auml": "ä", "aring": "å",
	"aelig": "æ", "ccedil": "ç", "egrave": "è", "eacute": "é", "ecirc": "ê", "euml": "ë",
	"igrave": "ì", "iacute": "í", "icirc": "î", "iuml": "ï", "ntilde": "ñ", "ograve": "ò",
	"oacute": "ó", "ocirc": "ô", "otilde": "õ", "ouml": "ö", "oslash": "ø", "ugrave": "ù",
	"uacute": "ú", "ucirc": "û", "uuml": "ü", "yacute": "ý", "yuml": "ÿ", "szlig": "ß",
	"Agrave": "À", "Aacute": "Á", "Acirc": "Â", "Atilde": "Ã", "Auml": "Ä", "Aring": "Å",
	"AElig": "Æ", "Ccedil": "Ç", "Egrave": "È", "Eacute": "É", "Ecirc": "Ê", "Euml": "Ë",
	"Igrave": "Ì", "Iacute": "Í", "Icirc": "Î", "Iuml": "Ï", "Ntilde": "Ñ", "Ograve": "Ò",
	"Oacute": "Ó", "Ocirc": "Ô", "Otilde": "Õ", "Ouml": "Ö", "Oslash": "Ø", "Ugrave": "Ù",
	"Uacute": "Ú", "Ucirc": "Û", "Uuml": "Ü", "Yacute": "Ý", "eth": "ð", "thorn": "þ",
	"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "lambda": "λ",
	"mu": "μ", "pi": "π", "sigma": "σ", "omega": "ω", "Omega": "Ω", "Delta": "Δ",
}

// legacy names are recognised without a trailing semicolon, as browsers do.
var legacy = []string{"amp", "lt", "gt", "quot", "nbsp", "copy", "reg"}

// decodeEntities replaces character references in s.
func decodeEntities(s string) string {
	amp := strings.IndexByte(s, '&')
	if amp < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for amp >= 0 {
		b.WriteString(s[:amp])
		s = s[amp:]
		repl, n := entityAt(s)
		if n == 0 {
			b.WriteByte('&')
			s = s[1:]
		} else {
			b.WriteString(repl)
			s = s[n:]
		}
		amp = strings.IndexByte(s, '&')
	}
	b.WriteString(s)
	return b.String()
}

// entityAt decodes the character reference at the start of s (s[0] == '&')
// and returns its replacement and length, or a length of 0 if there is none.
func entityAt(s string) (string, int) {
	if len(s) > 2 && s[1] == '#' {
		j, base := 2, 10
		if s[j]|0x20 == 'x' {
			j, base = 3, 16
		}
		k := j
		for k < len(s) && k-j < 8 && isDigit(s[k], base) {
			k++
		}
		if k == j {
			return "", 0
		}
		n, err := strconv.ParseUint(s[j:k], base, 32)
		if k < len(s) && s[k] == ';' {
			k++
		}
		r := rune(n)
		if err != nil || r == 0 || r > utf8.MaxRune || (r >= 0xD800 && r <= 0xDFFF) {
			r = utf8.RuneError
		}
		return string(r), k
	}
	k := 1
	for k < len(s) && k < 34 && (isASCIILetter(s[k]) || s[k] >= '0' && s[k] <= '9') {
		k++
	}
	name := s[1:k]
	if k < len(s) && s[k] == ';' {
		if v, ok := entities[name]; ok {
			return v, k + 1
		}
		return "", 0
	}
	for _, l := range legacy {
		if strings.HasPrefix(name, l) {
			return entities[l], 1 + len(l)
		}
	}
	return "", 0
}

func isDigit(c byte, base int) bool {
	if c >= '0' && c <= '9' {
		return true
	}
	return base == 16 && c|0x20 >= 'a' && c|0x20 <= 'f'
}
