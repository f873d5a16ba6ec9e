package slack

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// names of the fake workspace, for decodeText.
func testNames(r ref) string {
	return map[ref]string{{'U', "U2"}: "Ada Lovelace", {'C', "C9"}: "general"}[r]
}

func TestDecodeText(t *testing.T) {
	cases := []struct{ name, wire, want string }{
		{"entities", "a &lt; b &amp;&amp; c &gt; d", "a < b && c > d"},
		{"typed entity stays literal", "write &amp;lt; for <", "write &lt; for <"},
		{"other entities are text", "&quot;x&quot; &#60;", "&quot;x&quot; &#60;"},
		{"pasted URL", "<https://x.y/?a=1&amp;b=2>", "https://x.y/?a=1&b=2"},
		{"URL whose label is itself", "<https://x.y/a|https://x.y/a>", "https://x.y/a"},
		{"autolinked host keeps what was typed", "see <http://example.com/x?a=1&amp;b=2|example.com/x?a=1&amp;b=2>", "see example.com/x?a=1&b=2"},
		{"labelled link gives both", "<https://x.y/doc|the docs> now", "the docs (https://x.y/doc) now"},
		{"label with entities", "<https://x.y|a &amp; b>", "a & b (https://x.y)"},
		{"mailto as typed", "mail <mailto:a@b.co|a@b.co>", "mail a@b.co"},
		{"mailto labelled", "<mailto:a@b.co|Ada>", "Ada (mailto:a@b.co)"},
		{"user named by lookup", "ask <@U2> please", "ask @Ada Lovelace please"},
		{"user with a label", "<@U3|bob>", "@bob"},
		{"unknown user by id", "<@U404>", "@U404"},
		{"bot mention removed", "<@UBOT> what is up?", "what is up?"},
		{"bot mention with label removed", "<@UBOT|talon> hi", "hi"},
		{"channel with a name", "in <#C1|random>", "in #random"},
		{"channel with an empty name", "in <#C9|>", "in #general"},
		{"channel by lookup", "in <#C9>", "in #general"},
		{"unknown channel by id", "in <#C404>", "in #C404"},
		{"here channel everyone", "<!here> <!channel> <!everyone|@everyone>", "@here @channel @everyone"},
		{"user group", "<!subteam^S123|@ops> and <!subteam^S9>", "@ops and @S9"},
		{"date fallback", "due <!date^1392734382^{date_num}|Feb 18, 2014 &amp; later>", "due Feb 18, 2014 & later"},
		{"unclosed bracket is text", "a <b", "a <b"},
		{"empty", "   ", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := decodeText(c.wire, botUser, testNames); got != c.want {
				t.Errorf("decodeText(%q) = %q, want %q", c.wire, got, c.want)
			}
		})
	}
}

func TestUnnamedRefs(t *testing.T) {
	got := unnamedRefs("<@U2> <@U2> <@U3|bob> <@UBOT> <#C9> <#C1|x> <#C8|> <!here> <https://x.y>", botUser)
	want := []ref{{'U', "U2"}, {'C', "C9"}, {'C', "C8"}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(ref{})); diff != "" {
		t.Errorf("refs (-want +got):\n%s", diff)
	}
}

// slackWire is what Slack sends for text a user typed: & < > escaped, and
// what Slack turns into links and mentions (a URL with a scheme, a bare
// host, @here, a user picked from the list) as tokens. It knows only the
// forms typed tests produce.
func slackWire(typed string, users map[string]string) string {
	var out []string
	for _, w := range strings.Split(typed, " ") {
		switch {
		case strings.HasPrefix(w, "https://"):
			out = append(out, "<"+escape(w)+">")
		case strings.HasPrefix(w, "www."):
			out = append(out, "<http://"+escape(w)+"|"+escape(w)+">")
		case w == "@here" || w == "@channel" || w == "@everyone":
			out = append(out, "<!"+w[1:]+">")
		case strings.HasPrefix(w, "@") && users[w[1:]] != "":
			out = append(out, "<@"+users[w[1:]]+">")
		default:
			out = append(out, escape(w))
		}
	}
	return strings.Join(out, " ")
}

// TestDecodeRoundTrip: text a user typed → Slack's wire encoding → decode
// gives back what they typed, for random text full of & < > ; | and
// entities, links, mentions and multibyte runes.
func TestDecodeRoundTrip(t *testing.T) {
	words := []string{"a", "<", ">", "&", "&amp;", "&lt;b&gt;", "<@U1>", "<!here>", "x|y", "é", "日本", "🙂", ";", "&&", "a<b>c",
		"https://x.y/?a=1&b=2", "https://h.io/p?q=<1>&r=é", "www.example.com/a&b", "@here", "@Ada", "@channel", "#general", "\t", "\\"}
	users := map[string]string{"Ada": "U2"}
	name := func(r ref) string {
		if r == (ref{'U', "U2"}) {
			return "Ada"
		}
		return ""
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		n := 1 + rng.IntN(12)
		ws := make([]string, n)
		for j := range ws {
			ws[j] = words[rng.IntN(len(words))]
		}
		typed := strings.TrimSpace(strings.Join(ws, " "))
		wire := slackWire(typed, users)
		if got := decodeText(wire, botUser, name); got != typed {
			t.Fatalf("typed %q, wire %q, decoded %q", typed, wire, got)
		}
	}
}

// FuzzDecodeText: decoding never panics, keeps valid UTF-8 valid, and
// gives back any text from its escaped form (what Slack sends for text
// without links or mentions).
func FuzzDecodeText(f *testing.F) {
	for _, s := range []string{"a < b && c", "<https://x.y/?a=1&amp;b=2>", "<@U1|x> <#C1> <!here>", "&amp;lt;", "<", ">", "<|>", "<!date^1|>", "<@>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := decodeText(s, botUser, testNames)
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("decodeText(%q) = %q: not UTF-8", s, got)
		}
		if want := strings.TrimSpace(s); decodeText(escape(s), botUser, testNames) != want {
			t.Fatalf("decodeText(escape(%q)) = %q, want %q", s, decodeText(escape(s), botUser, testNames), want)
		}
		unnamedRefs(s, botUser)
	})
}
