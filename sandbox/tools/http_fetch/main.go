package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/talonhq/talon/sandbox/guest"
	"github.com/talonhq/talon/sandbox/tools/internal/htmltext"
)

// Bounds of max_chars.
const (
	defaultMaxChars = 20000
	maxMaxChars     = 100000
)

type args struct {
	URL      string `json:"url"`
	MaxChars int    `json:"max_chars"`
}

type result struct {
	Status    int    `json:"status"`
	URL       string `json:"url"`
	Title     string `json:"title,omitempty"`
	Text      string `json:"text"`
	Truncated bool   `json:"truncated"`
}

func init() { guest.Run(fetch) }

func main() {}

// fetch GETs a.URL through the host and returns its readable content.
func fetch(a args) (result, error) {
	if err := checkURL(a.URL); err != nil {
		return result{}, err
	}
	maxChars := a.MaxChars
	switch {
	case maxChars <= 0:
		maxChars = defaultMaxChars
	case maxChars > maxMaxChars:
		maxChars = maxMaxChars
	}
	resp, err := guest.HTTP(guest.Request{
		Method: "GET",
		URL:    a.URL,
		Headers: map[string]string{
			"Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.9,*/*;q=0.5",
		},
	})
	if err != nil {
		return result{}, fmt.Errorf("fetch %s: %w", a.URL, err)
	}
	return shape(resp, maxChars), nil
}

// checkURL refuses what can never be fetched, before asking the host.
func checkURL(raw string) error {
	if raw == "" {
		return errors.New("url is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("invalid url %q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("invalid url %q: no host", raw)
	}
	return nil
}

// shape turns an HTTP response into the tool's result: HTML becomes title
// and readable text; anything else is passed through as text.
func shape(resp guest.Response, maxChars int) result {
	r := result{Status: resp.Status, URL: resp.URL}
	text := resp.Body
	if isHTML(header(resp.Headers, "Content-Type"), resp.Body) {
		p := htmltext.Extract(resp.Body)
		r.Title, text = p.Title, p.Text
	}
	var cut bool
	r.Text, cut = guest.Truncate(text, maxChars)
	r.Truncated = cut || resp.Truncated
	return r
}

// header returns the value of the header named name, in any case.
func header(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// isHTML reports whether a body is HTML, by its content type or, when that
// is missing or generic, by sniffing its start.
func isHTML(contentType, body string) bool {
	ct := strings.ToLower(contentType)
	switch {
	case strings.Contains(ct, "html"):
		return true
	case ct != "" && !strings.HasPrefix(ct, "application/octet-stream"):
		return false
	}
	head := strings.ToLower(strings.TrimSpace(body[:min(len(body), 512)]))
	return strings.HasPrefix(head, "<!doctype html") || strings.HasPrefix(head, "<html") ||
		strings.Contains(head, "<head") || strings.Contains(head, "<body")
}
