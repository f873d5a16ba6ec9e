package slack

import (
	"regexp"
	"strings"
	"sync"
)

// escape makes text literal in Slack: & < > become entities, so model output
// cannot produce <!here>, <!channel>, <!everyone>, <@U…>, <#C…>,
// <!subteam^…> or links.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// lazyRegexp compiles expr on first use, so that a process that never
// serves Slack (talon chat, talon version) does not pay for the patterns at
// start-up.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

var (
	reHeading = lazyRegexp(`^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
	reBullet  = lazyRegexp(`^(\s*)[-*+]\s+`)
	reBold    = lazyRegexp(`\*\*(\S(?:.*?\S)?)\*\*|__(\S(?:.*?\S)?)__`)
	reItalic  = lazyRegexp(`(^|[^\w*])\*(\S(?:[^*]*?\S)?)\*([^\w*]|$)`)
	reStrike  = lazyRegexp(`~~(\S(?:.*?\S)?)~~`)
	reLink    = lazyRegexp(`\[([^\]\n]+)\]\((https?://[^)\s]+)\)`)
)

// toMrkdwn renders the model's Markdown as Slack mrkdwn: **bold** → *bold*,
// *it* → _it_, ~~s~~ → ~s~, headings → bold lines, bullets → •,
// [label](https://…) → <https://…|label>. Everything is escaped first, so
// the only markup in the result is what this function writes. Code fences
// and inline code are escaped but otherwise left alone.
func toMrkdwn(md string) string {
	lines := strings.SplitAfter(md, "\n")
	var b strings.Builder
	b.Grow(len(md) + len(md)/8)
	inFence := false
	for _, line := range lines {
		body, nl := strings.CutSuffix(line, "\n")
		if isFenceLine(body) {
			inFence = !inFence
			b.WriteString(escape(body))
		} else if inFence {
			b.WriteString(escape(body))
		} else {
			b.WriteString(inlineMrkdwn(body))
		}
		if nl {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func isFenceLine(line string) bool {
	return strings.HasPrefix(strings.TrimLeft(line, " \t"), "```")
}

// inlineMrkdwn converts one line outside code fences, leaving `code` spans
// alone.
func inlineMrkdwn(line string) string {
	if m := reHeading().FindStringSubmatch(line); m != nil && m[1] != "" {
		return "*" + inlineMrkdwn(m[1]) + "*"
	}
	prefix := ""
	if m := reBullet().FindStringSubmatch(line); m != nil && !strings.HasPrefix(strings.TrimLeft(line, " "), "**") {
		prefix = m[1] + "• "
		line = line[len(m[0]):]
	}
	segs := strings.Split(line, "`")
	if len(segs)%2 == 0 {
		// An unpaired backtick: treat the tail as text.
		segs[len(segs)-2] += "`" + segs[len(segs)-1]
		segs = segs[:len(segs)-1]
	}
	for i, s := range segs {
		if i%2 == 1 {
			segs[i] = escape(s)
			continue
		}
		segs[i] = spanMrkdwn(s)
	}
	return prefix + strings.Join(segs, "`")
}

// spanMrkdwn converts emphasis and links in text that holds no code.
func spanMrkdwn(s string) string {
	// Links first, on the raw text, so their URLs are not mangled by the
	// emphasis rules; label and URL are escaped.
	var out strings.Builder
	last := 0
	for _, m := range reLink().FindAllStringSubmatchIndex(s, -1) {
		out.WriteString(emphasis(escape(s[last:m[0]])))
		label := strings.ReplaceAll(s[m[2]:m[3]], "|", "¦")
		out.WriteString("<" + escape(s[m[4]:m[5]]) + "|" + emphasis(escape(label)) + ">")
		last = m[1]
	}
	out.WriteString(emphasis(escape(s[last:])))
	return out.String()
}

const boldMark = "\x00"

func emphasis(s string) string {
	s = reBold().ReplaceAllStringFunc(s, func(m string) string {
		return boldMark + m[2:len(m)-2] + boldMark
	})
	s = reItalic().ReplaceAllString(s, "${1}_${2}_${3}")
	s = reStrike().ReplaceAllString(s, "~${1}~")
	return strings.ReplaceAll(s, boldMark, "*")
}
