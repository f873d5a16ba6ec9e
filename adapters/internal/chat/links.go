package chat

import (
	"regexp"
	"strings"

	"github.com/talonhq/talon/agent"
)

// What a platform may turn into a link: a URL with a scheme (bare, in
// <url>, <url|label> or [label](url)), or a bare name with dots that Slack
// links by itself ("evil.example/x").
var (
	schemeLink = regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://[^\s<>|()\[\]"'` + "`" + `]+`)
	bareName   = regexp.MustCompile(`(?i)(?:^|[^a-z0-9@./:-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62})\b`)
)

// Unfurl reports whether a message with text may be unfurled (Slack) or
// given embeds (Discord): only when it has at least one link and every
// link, and every bare name a platform could turn into one, is to a host
// trusted trusts. A preview fetched by the platform's servers would
// otherwise carry whatever the link's URL holds (the conversation, put
// there by a prompt injection) to its host, with no one clicking.
func Unfurl(text string, trusted agent.TrustedHosts) bool {
	if trusted.Empty() {
		return false
	}
	links := schemeLink.FindAllString(text, -1)
	if len(links) == 0 {
		return false
	}
	for _, l := range links {
		l = strings.TrimRight(strings.ReplaceAll(l, "&amp;", "&"), ".,;:!?*_~")
		if !trusted.TrustsURL(l) {
			return false
		}
	}
	rest := schemeLink.ReplaceAllString(text, " ")
	for _, m := range bareName.FindAllStringSubmatch(rest, -1) {
		if !trusted.Trusts(m[1]) {
			return false
		}
	}
	return true
}
