package slack

import (
	"strings"
)

// Slack sends a message's text in its wire form: "&", "<" and ">" the user
// typed arrive as &amp; &lt; &gt; (the only entities), and what Slack
// formats arrives between < and >: links <https://…> and <https://…|label>,
// <mailto:…|…>, user mentions <@U…> and <@U…|name>, channels <#C…> and
// <#C…|name>, and specials <!here>, <!channel>, <!everyone>,
// <!subteam^S…|@team> and <!date^…|fallback>. decodeText turns it back into
// what the user typed, so that the model reads "a < b && c" and a tool
// fetches the URL that was pasted.

// unescape decodes Slack's three entities in one pass.
var unescape = strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">").Replace

// A token is one <…> of Slack's wire text, split at its first "|".
type token struct {
	target, label string
	labelled      bool // a "|" was present (the label may be empty)
}

// ref names a user (kind 'U') or channel (kind 'C') that a message
// mentions without a label, to be named by a lookup.
type ref struct {
	kind byte
	id   string
}

// tokens calls fn for each <…> token of s, with the token's content; the
// text around tokens is not visited. A "<" without a closing ">" (Slack
// never sends one: a typed "<" is &lt;) is not a token.
func tokens(s string, fn func(content string)) {
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			return
		}
		j := strings.IndexByte(s[i+1:], '>')
		if j < 0 {
			return
		}
		fn(s[i+1 : i+1+j])
		s = s[i+1+j+1:]
	}
}

func splitToken(content string) token {
	target, label, ok := strings.Cut(content, "|")
	return token{target: target, label: label, labelled: ok}
}

// unnamedRefs returns the users and channels that s mentions without a
// label, each once, in order: the names decodeText would have to look up.
// bot is the bot's own user id, whose mention is removed, not named.
func unnamedRefs(s, bot string) []ref {
	var out []ref
	seen := map[ref]bool{}
	tokens(s, func(content string) {
		t := splitToken(content)
		if t.target == "" || t.label != "" {
			return
		}
		var r ref
		switch t.target[0] {
		case '@':
			r = ref{'U', t.target[1:]}
			if r.id == bot {
				return
			}
		case '#':
			r = ref{'C', t.target[1:]}
		default:
			return
		}
		if r.id != "" && !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	})
	return out
}

// decodeText turns Slack's wire text into what the user typed:
//
//   - &amp; &lt; &gt; become & < >;
//   - a link becomes its URL, exactly as typed (&amp; inside it decoded),
//     when its label is empty, equals the URL, or is the URL without the
//     scheme Slack added to what the user typed (example.com/x →
//     <http://example.com/x|example.com/x> gives back example.com/x);
//     a link whose label says something else becomes "label (URL)", so the
//     model reads both what the user saw and where it points;
//   - <@U…> becomes "@Display Name" (name(ref{'U', id}), else the label
//     Slack sent, else "@U…"); the bot's own mention is removed;
//   - <#C…|name> becomes "#name" (without a label: name(ref{'C', id}), else
//     "#C…");
//   - <!here>, <!channel>, <!everyone> become @here, @channel, @everyone;
//     <!subteam^S…|@team> its label; <!date^…|fallback> its fallback.
//
// name may be nil. The result is trimmed of surrounding space.
func decodeText(s, bot string, name func(ref) string) string {
	var b strings.Builder
	b.Grow(len(s))
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i+1:], '>')
		if j < 0 {
			break
		}
		b.WriteString(unescape(s[:i]))
		b.WriteString(decodeToken(splitToken(s[i+1:i+1+j]), bot, name))
		s = s[i+1+j+1:]
	}
	b.WriteString(unescape(s))
	return strings.TrimSpace(b.String())
}

func decodeToken(t token, bot string, name func(ref) string) string {
	label := unescape(t.label)
	lookup := func(r ref) string {
		if name == nil || r.id == "" {
			return ""
		}
		return name(r)
	}
	if t.target == "" {
		return label
	}
	switch t.target[0] {
	case '@':
		id := t.target[1:]
		if id == bot {
			return ""
		}
		if label != "" {
			return "@" + strings.TrimPrefix(label, "@")
		}
		if n := lookup(ref{'U', id}); n != "" {
			return "@" + n
		}
		return "@" + unescape(id)
	case '#':
		id := t.target[1:]
		if label != "" {
			return "#" + strings.TrimPrefix(label, "#")
		}
		if n := lookup(ref{'C', id}); n != "" {
			return "#" + n
		}
		return "#" + unescape(id)
	case '!':
		return special(unescape(t.target[1:]), label)
	}
	return link(unescape(t.target), label)
}

// special renders <!…>: @here, @channel, @everyone, a user group by its
// label, a date by its fallback text.
func special(target, label string) string {
	word, _, _ := strings.Cut(target, "^")
	switch word {
	case "here", "channel", "everyone":
		return "@" + word
	case "group":
		return "@channel" // the old name of @channel
	case "date":
		if label != "" {
			return label
		}
		// No fallback: the time itself, in seconds since 1970.
		_, rest, _ := strings.Cut(target, "^")
		ts, _, _ := strings.Cut(rest, "^")
		return ts
	case "subteam":
		if label != "" {
			return "@" + strings.TrimPrefix(label, "@")
		}
		_, id, _ := strings.Cut(target, "^")
		return "@" + id
	}
	if label != "" {
		return label
	}
	return "@" + target
}

// link renders a link: its URL when the label adds nothing, else
// "label (URL)".
func link(url, label string) string {
	if label == "" || label == url {
		return url
	}
	for _, scheme := range []string{"https://", "http://", "mailto:"} {
		if rest, ok := strings.CutPrefix(url, scheme); ok && rest == label {
			return label // what the user typed; Slack added the scheme
		}
	}
	return label + " (" + url + ")"
}
