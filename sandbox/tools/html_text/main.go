package main

import (
	"errors"

	"github.com/talonhq/talon/sandbox/guest"
	"github.com/talonhq/talon/sandbox/tools/internal/htmltext"
)

// Bounds of max_chars.
const (
	defaultMaxChars = 20000
	maxMaxChars     = 100000
)

type args struct {
	HTML     string `json:"html"`
	MaxChars int    `json:"max_chars"`
}

type result struct {
	Title     string `json:"title,omitempty"`
	Text      string `json:"text"`
	Truncated bool   `json:"truncated"`
}

func init() { guest.Run(toText) }

func main() { guest.Main() }

// toText extracts a.HTML's title and readable text.
func toText(a args) (result, error) {
	if a.HTML == "" {
		return result{}, errors.New("html is required")
	}
	maxChars := a.MaxChars
	switch {
	case maxChars <= 0:
		maxChars = defaultMaxChars
	case maxChars > maxMaxChars:
		maxChars = maxMaxChars
	}
	p := htmltext.Extract(a.HTML)
	r := result{Title: p.Title}
	r.Text, r.Truncated = guest.Truncate(p.Text, maxChars)
	return r, nil
}
