package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/console"
)

// benchConsolePages are what an operator's open console loads: each of
// them once per poll.
var benchConsolePages = []string{"/console/", "/console/usage?days=30", "/console/conversations", "/console/users"}

// consolePoller serves the console over the bench's database on loopback
// and loads its pages every interval, as a browser tab left open would,
// so that the bench measures the turns' overhead with it.
type consolePoller struct {
	polls, errors atomic.Int64
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	srv           *http.Server
}

func startConsolePoller(ctx context.Context, db console.Store, every time.Duration) (*consolePoller, error) {
	token := randomHex(16)
	cs := &console.Server{Store: db, Token: token, Log: zerolog.Nop()}
	h, err := cs.Handler()
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &consolePoller{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	p.wg.Go(func() { _ = p.srv.Serve(ln) })
	base := "http://" + ln.Addr().String()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	if err := benchSignIn(c, base, token); err != nil {
		p.srv.Close()
		p.wg.Wait()
		return nil, err
	}
	ctx, p.cancel = context.WithCancel(ctx)
	p.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, path := range benchConsolePages {
				if err := benchGet(ctx, c, base+path); err != nil {
					if ctx.Err() != nil {
						return
					}
					p.errors.Add(1)
				}
			}
			p.polls.Add(1)
		}
	})
	return p, nil
}

// stop ends the polling and the server.
func (p *consolePoller) stop() {
	p.cancel()
	p.srv.Close()
	p.wg.Wait()
}

var benchCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func benchSignIn(c *http.Client, base, token string) error {
	resp, err := c.Get(base + "/console/signin")
	if err != nil {
		return fmt.Errorf("bench: console sign-in page: %w", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := benchCSRF.FindSubmatch(page)
	if m == nil {
		return errors.New("bench: the console's sign-in page has no CSRF field")
	}
	resp, err = c.PostForm(base+"/console/signin", url.Values{"csrf": {html.UnescapeString(string(m[1]))}, "token": {token}})
	if err != nil {
		return fmt.Errorf("bench: console sign-in: %w", err)
	}
	resp.Body.Close()
	if resp.Request.URL.Path != "/console/" {
		return fmt.Errorf("bench: console sign-in ended at %s", resp.Request.URL.Path)
	}
	return nil
}

func benchGet(ctx context.Context, c *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path == "/console/signin" {
		return fmt.Errorf("bench: console %s: %d at %s", u, resp.StatusCode, resp.Request.URL.Path)
	}
	return nil
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
