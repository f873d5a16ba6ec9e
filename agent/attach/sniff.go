package attach

import (
	"bytes"
	"net/http"
	"path"
	"strings"
	"unicode/utf8"
)

// Kind is what a file is read as.
type Kind int

// The kinds of file.
const (
	// Other is a file Talon cannot read: it is named with its type and
	// size, and the model is told it cannot read it.
	Other Kind = iota
	// Text is read as text.
	Text
	// PDF has its text extracted.
	PDF
	// Image is shown to the model (PNG, JPEG, GIF, WebP).
	Image
)

func (k Kind) String() string {
	switch k {
	case Text:
		return "text"
	case PDF:
		return "pdf"
	case Image:
		return "image"
	}
	return "other"
}

// SniffLen is how many leading bytes Sniff needs to decide.
const SniffLen = 4096

// textExts are extensions of text-like files (source code, data, logs,
// configuration), read as text when their content does not say otherwise.
var textExts = func() map[string]bool {
	m := map[string]bool{}
	for _, e := range strings.Fields(`txt text md markdown rst adoc org csv tsv json jsonl ndjson yaml yml toml ini cfg conf
		env properties xml html htm css scss less svg log out err diff patch sql graphql proto
		go mod sum c h cc cpp cxx hpp hh cs java kt kts scala groovy gradle rs py pyi rb php pl pm lua r jl swift m mm
		js mjs cjs ts tsx jsx vue svelte dart ex exs erl hrl hs ml mli fs fsx clj cljs el lisp scm nim zig v sol
		sh bash zsh fish ps1 bat cmd makefile mk cmake dockerfile tf tfvars hcl nix bzl bazel lock tex bib csv srt vtt`) {
		m["."+e] = true
	}
	return m
}()

// imageTypes are the image formats both providers take.
var imageTypes = map[string]bool{"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true}

// Sniff decides how to read a file named name from its first bytes (at
// least SniffLen of them, or all of a shorter file). The content decides
// over the name: a PNG called notes.txt is an image, and a binary called
// main.go is Other. mediaType is the detected type, for notes.
func Sniff(name string, head []byte) (k Kind, mediaType string) {
	detected := http.DetectContentType(head)
	mt, _, _ := strings.Cut(detected, ";")
	switch {
	case imageTypes[mt]:
		return Image, mt
	case mt == "application/pdf":
		return PDF, mt
	}
	if looksText(head) {
		ext := strings.ToLower(path.Ext(name))
		base := strings.ToLower(path.Base(name))
		if strings.HasPrefix(mt, "text/") || textExts[ext] || base == "makefile" || base == "dockerfile" || ext == "" {
			if mt == "application/octet-stream" || mt == "" {
				mt = "text/plain"
			}
			return Text, mt
		}
		// Text with an extension we do not know (e.g. .dat): still text.
		return Text, "text/plain"
	}
	return Other, mt
}

// looksText reports whether b reads as text: valid UTF-8 (a rune cut at
// the end excepted), no NUL, and few control characters.
func looksText(b []byte) bool {
	if bytes.IndexByte(b, 0) >= 0 {
		return false
	}
	// Allow a rune cut by the end of the sample.
	for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.Valid(b); i++ {
		b = b[:len(b)-1]
	}
	if !utf8.Valid(b) {
		return false
	}
	ctl := 0
	for _, c := range b {
		if c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f' && c != 0x1b {
			ctl++
		}
	}
	return ctl*100 <= len(b)
}
