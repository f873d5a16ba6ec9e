package discord

import (
	"context"
	"go/parser"
	"go/token"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestSplitMessage(t *testing.T) {
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
		want  []string // nil: only check the invariants
	}{
		{name: "short", text: "hello", limit: 200, want: []string{"hello"}},
		{name: "empty", text: " \n ", limit: 200, want: nil},
		{name: "paragraphs", limit: 200,
			text: strings.Repeat("a", 120) + "\n\n" + strings.Repeat("b", 120),
			want: []string{strings.Repeat("a", 120) + "\n\n", strings.Repeat("b", 120)}},
		{name: "fence reopened", limit: 200, text: "```go\n" + long(300, "x := 1") + "\n```"},
		{name: "table", limit: 2000, text: "| a | b |\n|---|---|\n| 1 | 2 |\ntext",
			want: []string{"```\n| a | b |\n|---|---|\n| 1 | 2 |\n```\ntext"}},
		{name: "one huge line", limit: 200, text: strings.Repeat("word ", 200)},
		{name: "huge line in code", limit: 200, text: "```\n" + strings.Repeat("z", 700) + "\n```"},
		{name: "multibyte", limit: 200, text: strings.Repeat("é😀 ", 300)},
		{name: "5000 with code", limit: 1900, text: "intro\n\n```python\n" + long(3000, "print('hello world')") + "\n```\n\n" + long(2000, "Some prose here.")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := splitMessage(c.text, c.limit)
			if c.want != nil || c.text == " \n " {
				if diff := cmp.Diff(c.want, got); diff != "" {
					t.Fatalf("split (-want +got):\n%s", diff)
				}
			}
			var total int
			for i, p := range got {
				if n := utf8.RuneCountInString(p); n > c.limit || n == 0 {
					t.Errorf("part %d: %d runes, limit %d", i, n, c.limit)
				}
				if !utf8.ValidString(p) {
					t.Errorf("part %d is not valid UTF-8", i)
				}
				if strings.Count(p, "```")%2 != 0 {
					t.Errorf("part %d has unbalanced fences:\n%s", i, p)
				}
				total += len(strings.ReplaceAll(strings.ReplaceAll(p, "```python", ""), "```", ""))
			}
			// Nothing is lost (whitespace at cuts aside).
			stripped := func(s string) string {
				s = strings.ReplaceAll(strings.ReplaceAll(s, "```python", ""), "```go", "")
				s = strings.ReplaceAll(s, "```", "")
				return strings.Join(strings.Fields(s), "")
			}
			if g, w := stripped(strings.Join(got, "")), stripped(tablesToCode(c.text)); g != w {
				t.Errorf("content changed: got %d chars, want %d", len(g), len(w))
			}
		})
	}
}

func TestSplitReopensLanguage(t *testing.T) {
	text := "```go\n" + strings.Repeat("fmt.Println(1)\n", 40) + "```"
	got := splitMessage(text, 200)
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
}

func TestRefusal(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AllowedGuilds = []string{"1"}
	cfg.AllowedChannels = []string{"10"}
	cfg.DeniedChannels = []string{"11"}
	cfg.AllowedRoles = []string{"50"}
	cfg.DeniedUsers = []string{"99"}
	cfg.Admins = []string{"42"}
	cases := []struct {
		name string
		p    place
		ok   bool
	}{
		{"dm", place{channel: "5", user: "7"}, true},
		{"dm denied user", place{channel: "5", user: "99"}, false},
		{"unknown guild", place{guild: "2", channel: "10", user: "7", roles: []string{"50"}}, false},
		{"admin in unknown guild", place{guild: "2", channel: "10", user: "42"}, false},
		{"allowed", place{guild: "1", channel: "10", user: "7", roles: []string{"50"}}, true},
		{"thread of allowed channel", place{guild: "1", channel: "600", parent: "10", user: "7", roles: []string{"50"}}, true},
		{"other channel", place{guild: "1", channel: "12", user: "7", roles: []string{"50"}}, false},
		{"denied channel", place{guild: "1", channel: "11", user: "7", roles: []string{"50"}}, false},
		{"no role", place{guild: "1", channel: "10", user: "7"}, false},
		{"admin without role", place{guild: "1", channel: "12", user: "42"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := cfg.refusal(c.p) == ""; got != c.ok {
				t.Errorf("allowed = %v, want %v (reason %q)", got, c.ok, cfg.refusal(c.p))
			}
		})
	}
	noDM := cfg
	noDM.AllowDMs = false
	if noDM.refusal(place{channel: "5", user: "42"}) == "" {
		t.Error("DMs allowed with AllowDMs false")
	}
}

func TestConfigValidation(t *testing.T) {
	_, err := Config{MaxMessageChars: 5000, AllowedGuilds: []string{"abc"}, BackfillLimit: 500, StreamInterval: 100 * time.Millisecond}.withDefaults()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, key := range []string{"discord.token", "discord.max_message_chars", "discord.allowed_guilds", "discord.backfill_limit", "discord.stream_interval"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error %q does not name %s", err, key)
		}
	}
	cfg, err := Config{Token: "t"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxMessageChars != 1900 || cfg.botToken() != "Bot t" || cfg.StreamInterval != 1500*time.Millisecond {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestReplyToRoundTrip(t *testing.T) {
	for _, r := range []replyTo{{channel: "1", message: "2"}, {channel: "1", interaction: "3"}, {channel: "1"}, {channel: "1", message: "2", newThread: true}} {
		got, err := parseReplyTo(r.String())
		if err != nil || got != r {
			t.Errorf("parse(%q) = %+v, %v", r.String(), got, err)
		}
	}
	for _, bad := range []string{"", "x:1:2", "m:a:2", "m:1", "t:1:"} {
		if _, err := parseReplyTo(bad); err == nil {
			t.Errorf("parse(%q) succeeded", bad)
		}
	}
}

func TestStripMentions(t *testing.T) {
	got := stripMentions("<@100> hi <@!100> and <@200>", "100")
	if want := " hi  and <@200>"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestInviteURL(t *testing.T) {
	u, err := url.Parse(InviteURL("123"))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	want := map[string]string{"client_id": "123", "scope": "bot applications.commands",
		"permissions": strconv.FormatInt(1<<10|1<<11|1<<16|1<<35|1<<38, 10)}
	got := map[string]string{"client_id": q.Get("client_id"), "scope": q.Get("scope"), "permissions": q.Get("permissions")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("invite (-want +got):\n%s", diff)
	}
	if u.Host != "discord.com" || u.Path != "/oauth2/authorize" {
		t.Errorf("invite URL %s", u)
	}
}

func TestCheck(t *testing.T) {
	f := newFake(t)
	cases := []struct {
		name  string
		token string
		mc    bool
		flags int
		want  Report
	}{
		{"valid", "test-token", false, 0, Report{TokenValid: true, BotID: "100", BotName: "talon", ApplicationID: "200"}},
		{"intent enabled", "test-token", true, 1 << 18, Report{TokenValid: true, BotID: "100", BotName: "talon", ApplicationID: "200", MessageContentIntent: true}},
		{"intent missing", "test-token", true, 0, Report{TokenValid: true, BotID: "100", BotName: "talon", ApplicationID: "200",
			Problems: []string{"discord.message_content is true but the Message Content intent is not enabled in the Developer Portal (Bot → Privileged Gateway Intents); the gateway would close with 4014"}}},
		{"bad token", "wrong", false, 0, Report{Problems: []string{"discord.token: Discord rejected the token (401); copy it again from the Developer Portal (Bot → Reset Token)"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.mu.Lock()
			f.appFlags = c.flags
			f.mu.Unlock()
			a := &Adapter{Config: Config{Token: c.token, MessageContent: c.mc}, APIBase: f.srv.URL}
			got, err := a.Check(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
		})
	}
	a := &Adapter{Config: Config{Token: "test-token"}, APIBase: f.srv.URL}
	if id, err := a.ApplicationID(context.Background()); err != nil || id != "200" {
		t.Errorf("ApplicationID = %q, %v", id, err)
	}
}

// TestImports keeps the adapter's non-test files off every package of
// ours but agent and the adapters' shared internal packages.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/talonhq/talon") && path != "github.com/talonhq/talon/agent" &&
				!strings.HasPrefix(path, "github.com/talonhq/talon/adapters/internal/") {
				t.Errorf("%s imports %s; the adapter may import only agent and adapters/internal", name, path)
			}
		}
	}
}

func TestDisallowedIntentStopsRun(t *testing.T) {
	f := newFake(t)
	f.closeCode = 4014
	cfg := DefaultConfig()
	cfg.Token = "test-token"
	cfg.MessageContent = true
	a := &Adapter{Config: cfg, Runtime: &fakeRuntime{}, APIBase: f.srv.URL}
	err := a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "4014") {
		t.Fatalf("Run = %v, want the 4014 refusal", err)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	a := &Adapter{Config: Config{}, Runtime: &fakeRuntime{}}
	if err := a.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "discord.token") {
		t.Fatalf("Run = %v, want a config error naming discord.token", err)
	}
	// Deliver does not hang on an adapter that failed to start.
	if _, err := a.Deliver(context.Background(), agentReply()); err == nil {
		t.Error("Deliver succeeded on an adapter that never started")
	}
}
