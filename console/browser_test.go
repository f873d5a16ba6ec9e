package console

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// chromium finds a Chromium to drive. Without one the browser test skips,
// unless TALON_BROWSER_TEST=1 (set by .ci/run) makes that a failure.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("TALON_BROWSER_TEST") == "1" {
		t.Fatal("TALON_BROWSER_TEST=1 but no chromium on PATH (apt-get install -y chromium)")
	}
	t.Skip("no chromium on PATH: apt-get install -y chromium, then go test ./console -run Browser (TALON_BROWSER_TEST=1 makes a missing chromium fail)")
	return ""
}

// TestBrowser drives the console in headless Chromium: sign in, read a
// transcript with a tool call and an approval, see the usage chart,
// download the CSV, delete a credential, fail a POST without the CSRF
// token, and check that stored XSS does not run; on every page, that each
// control has a name and is in the keyboard's reach, and on the Usage page
// that Tab reaches its controls. TALON_SCREENSHOTS=DIR
// saves each page at desktop and phone widths.
func TestBrowser(t *testing.T) {
	path := chromium(t)
	f := newFixture(t)
	ctx := context.Background()
	const payload = `<img src=x onerror="document.title='pwned'"><script>document.title='pwned'</script>`
	sess := f.toolTurn(t, xss, payload+" please post", "slack:T1:UALICE")
	f.turn(t, alice, "C1", "gpt-big", false, time.Second, [2]int{120_000, 30_000})
	if err := f.vault.Set(ctx, vault.Entry{User: "slack:T1:UALICE", Name: "github", Value: vault.NewSecret([]byte("ghp_supersecretvalue123")),
		Hosts: []string{"api.github.com"}, Injection: vault.Injection{Kind: vault.InjectBearer}}); err != nil {
		t.Fatal(err)
	}

	downloads := t.TempDir()
	actx, cancelA := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	if err := chromedp.Do(bctx); err != nil { // starts the browser, without a deadline
		t.Fatalf("start chromium: %v", err)
	}
	bctx, cancelT := context.WithTimeout(bctx, 90*time.Second)
	defer cancelT()

	base := f.srv.URL
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	eval := func(js string) int {
		t.Helper()
		n, err := chromedp.Run(bctx, chromedp.Evaluate[int](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return n
	}

	// Every control of a page has a name a screen reader says (its
	// label, aria-label or text) and is reached by the keyboard.
	unnamed := func(page string) {
		t.Helper()
		got, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea')]
			.filter(e => {
				const label = [...(e.labels || [])].map(l => l.textContent).join(' ') || e.getAttribute('aria-label') ||
					(e.tagName === 'A' || e.tagName === 'BUTTON' ? e.textContent : '');
				return !label.trim() || e.tabIndex < 0;
			}).map(e => e.outerHTML.slice(0, 120))`))
		if err != nil {
			t.Fatalf("%s: controls: %v", page, err)
		}
		if len(got) > 0 {
			t.Errorf("%s: controls without a name or out of the keyboard's reach: %q", page, got)
		}
	}
	// tabTo presses Tab until the focused element matches sel, at most
	// 40 times; it reports how many presses it took (-1: never).
	tabTo := func(sel string) int {
		t.Helper()
		eval(`document.activeElement && document.activeElement.blur(), 0`)
		for n := 1; n <= 40; n++ {
			do("tab", chromedp.KeyEvent("\t"))
			if eval(`document.activeElement && document.activeElement.matches(`+strconv.Quote(sel)+`) ? 1 : 0`) == 1 {
				return n
			}
		}
		return -1
	}

	// Sign in through the form.
	do("sign in",
		chromedp.Navigate(base+"/console/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), testToken),
		chromedp.Submit(chromedp.CSS("#token")),
		chromedp.WaitVisible(chromedp.CSS(`section[aria-labelledby="now"]`)))
	if got := text("h1"); got != "Overview" {
		t.Fatalf("after sign-in the page is %q", got)
	}
	shots(t, bctx, "overview")
	unnamed("overview")

	// The transcript: the tool call, its approval and who decided, and the
	// stored XSS shown as text without running.
	do("transcript",
		chromedp.Navigate(fmt.Sprintf("%s/console/conversations/%d", base, sess)),
		chromedp.WaitVisible(chromedp.CSS(".transcript")))
	tr := text(".transcript")
	for _, want := range []string{payload, "Tool call http_request", "approved by slack:T1:UALICE", "Done: created."} {
		if !strings.Contains(tr, want) {
			t.Errorf("transcript text lacks %q:\n%s", want, tr)
		}
	}
	title, err := chromedp.Run(bctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	if n := eval(`document.querySelectorAll('main img, main script').length`); title == "pwned" || n != 0 {
		t.Errorf("stored XSS ran or became markup: title %q, %d img/script elements", title, n)
	}
	shots(t, bctx, "transcript")
	unnamed("transcript")

	// The usage chart, and the CSV download.
	do("usage",
		chromedp.Navigate(base+"/console/usage"),
		chromedp.WaitVisible(chromedp.CSS("svg.chart")))
	if n := eval(`[...document.querySelectorAll('svg.chart rect.bar')].filter(r => r.getBBox().height > 0).length`); n != 1 {
		t.Errorf("usage chart shows %d non-empty bars, want 1 (today)", n)
	}
	shots(t, bctx, "usage")
	unnamed("usage")
	// By keyboard alone: the period, then the download.
	if n, m := tabTo("#days"), tabTo(`a[href^="/console/usage.csv"]`); n < 0 || m < 0 {
		t.Errorf("Tab does not reach the period (%d presses) or the CSV download (%d)", n, m)
	}
	do("download CSV",
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads})
			return err
		}),
		chromedp.Click(chromedp.CSS(`a[href^="/console/usage.csv"]`)))
	csvPath := waitFile(t, downloads)
	b, err := os.ReadFile(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "day,platform,") || !strings.Contains(string(b), ",UALICE,C1,gpt-big,1,120000,30000,") {
		t.Errorf("downloaded CSV %s:\n%s", filepath.Base(csvPath), b)
	}

	// A POST without the CSRF token fails: remove the field, then submit.
	do("delete without CSRF",
		chromedp.Navigate(base+"/console/credentials"),
		chromedp.WaitVisible(chromedp.CSS("button.danger")))
	eval(`document.querySelector('td form input[name=csrf]').remove(), 0`)
	do("submit without CSRF",
		chromedp.Click(chromedp.CSS("button.danger")),
		chromedp.WaitNotPresent(chromedp.CSS("button.danger")))
	if got := text("body"); !strings.Contains(got, "missing or wrong CSRF token") || !f.vault.Has(ctx, "slack:T1:UALICE", "github") {
		t.Fatalf("a POST without the CSRF token was not refused: %q", got)
	}

	// Delete the credential with the form as served.
	del := chromedp.CSS(`button[aria-label="Delete github of slack:T1:UALICE"]`)
	do("delete",
		chromedp.Navigate(base+"/console/credentials"),
		chromedp.WaitVisible(del),
		chromedp.Click(del),
		chromedp.WaitVisible(chromedp.CSS(".notice")))
	if got := text(".notice"); got != "Deleted github of slack:T1:UALICE." || f.vault.Has(ctx, "slack:T1:UALICE", "github") {
		t.Errorf("delete: notice %q, entry still there: %v", got, f.vault.Has(ctx, "slack:T1:UALICE", "github"))
	}
	shots(t, bctx, "credentials")
	unnamed("credentials")
	do("users",
		chromedp.Navigate(base+"/console/users"),
		chromedp.WaitVisible(chromedp.CSS("table")))
	if got := text("tbody"); !strings.Contains(got, "slack:T1:UALICE") {
		t.Errorf("Users page lacks alice: %q", got)
	}
	// Deny alice with the form as served: the runtime's list has her.
	deny := chromedp.CSS(`button[aria-label="Deny slack:T1:UALICE"]`)
	do("deny",
		chromedp.Click(deny),
		chromedp.WaitVisible(chromedp.CSS(".notice")))
	if got := text(".notice"); !strings.Contains(got, "Denied slack:T1:UALICE") {
		t.Errorf("deny: notice %q", got)
	}
	if d, err := f.db.Denied(ctx, alice); err != nil || !d {
		t.Errorf("after Deny, alice denied = %v, %v", d, err)
	}
	shots(t, bctx, "users")
	unnamed("users")
	// The list of conversations, searched by keyboard: Tab reaches the
	// search field, typed text and Enter submit it.
	do("conversations",
		chromedp.Navigate(base+"/console/conversations"),
		chromedp.WaitVisible(chromedp.CSS("table")))
	shots(t, bctx, "conversations")
	unnamed("conversations")
	if n := tabTo("#q"); n < 0 {
		t.Error("Tab does not reach the conversations' search field")
	}
	// The page before the search is marked, so that the wait is for the
	// results' table, not the table of the page still shown while the
	// browser loads the next one.
	eval(`(document.body.dataset.before = "1", 1)`)
	do("search by keyboard",
		chromedp.KeyEvent("please"), chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(chromedp.CSS("body:not([data-before]) table")))
	if got := text("tbody"); !strings.Contains(got, "<script>alert(1)</script>") || strings.Contains(got, "UALICE") {
		t.Errorf("search for %q by keyboard: %q, want the conversation of the XSS user only", "please", got)
	}
	// Tools and MCP servers, with the approval of a server's changed
	// tools in the keyboard's reach.
	f.cs.Tools = func() []Tool {
		return []Tool{{Name: "http_request", Enabled: true, Hosts: []string{"api.example.com"}, Credentials: []string{"github"}, Approval: "always"}}
	}
	f.cs.MCP = func(context.Context) ([]MCPServer, error) {
		return []MCPServer{{Name: "docs", URL: "https://mcp.example.com", Approval: "writes", Tools: []store.MCPTool{
			{Server: "docs", Tool: "search", Hash: "aaaaaaaaaaaaaaaa", Approved: "aaaaaaaaaaaaaaaa"},
			{Server: "docs", Tool: "write", Hash: "bbbbbbbbbbbbbbbb", Approved: "cccccccccccccccc"},
		}}}, nil
	}
	f.cs.ApproveMCP = func(context.Context, string) (int, error) { return 1, nil }
	do("tools",
		chromedp.Navigate(base+"/console/tools"),
		chromedp.WaitVisible(chromedp.CSS("table")))
	shots(t, bctx, "tools")
	unnamed("tools")
	if n := tabTo("form button"); n < 0 {
		t.Error("Tab does not reach the approval of the MCP server's changed tools")
	}
	do("credentials filtered",
		chromedp.Navigate(base+"/console/credentials?result=refused&from=2026-03-01&to=2026-03-10"),
		chromedp.WaitVisible(chromedp.CSS("#result")))
	shots(t, bctx, "credentials-filtered")
	unnamed("credentials filtered")

	// Sign out: the console asks for the token again.
	do("sign out",
		chromedp.Click(chromedp.CSS(".signout button")),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.Navigate(base+"/console/usage"),
		chromedp.WaitVisible(chromedp.CSS("#token")))
	shots(t, bctx, "signin")
	unnamed("sign-in")
}

// shots saves the current page at desktop and phone widths when
// TALON_SCREENSHOTS names a directory.
func shots(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("TALON_SCREENSHOTS")
	if dir == "" {
		return
	}
	for _, size := range []struct {
		name          string
		width, height int64
		mobile        bool
	}{{"desktop", 1280, 900, false}, {"phone", 390, 844, true}} {
		opts := []chromedp.EmulateViewportOption{}
		if size.mobile {
			opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
		}
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(size.width, size.height, opts...)); err != nil {
			t.Fatalf("viewport %s: %v", size.name, err)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err == nil {
			err = chromedp.Do(ctx, chromedp.ResetViewport())
		}
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+"-"+size.name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// waitFile waits for a finished download in dir.
func waitFile(t *testing.T, dir string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".crdownload") {
				return filepath.Join(dir, e.Name())
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the CSV download did not finish in 30s")
	return ""
}
