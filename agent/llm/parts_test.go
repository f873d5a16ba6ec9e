package llm_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// A user message's parts reach the model in each provider's own format:
// file text as text, images as OpenAI image_url content parts (data: URLs)
// and Anthropic base64 image blocks, after the message's own text.
func TestPartsInBothFormats(t *testing.T) {
	png := []byte("\x89PNG\r\n\x1a\nnot-really-a-png")
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			srv := llmtest.NewServer(t, llmtest.Text("ok"))
			p, _ := newProvider(t, kind, srv, llm.Config{})
			_, err := p.Complete(context.Background(), llm.Request{Messages: []llm.Message{{
				Role: llm.RoleUser, Content: "what is in these?",
				Parts: []llm.Part{
					{Kind: llm.PartText, Text: "<file name=\"a.csv\">x,y</file>"},
					{Kind: llm.PartImage, MediaType: "image/png", Data: png, Ref: "sha256-abc"},
				},
			}}})
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			reqs := srv.Requests()
			if len(reqs) != 1 {
				t.Fatalf("requests = %d, want 1", len(reqs))
			}
			m := reqs[0].Messages[0]
			if want := "what is in these?<file name=\"a.csv\">x,y</file>"; m.Content != want {
				t.Errorf("text = %q, want %q", m.Content, want)
			}
			if len(m.Parts) != 1 || m.Parts[0].MediaType != "image/png" || !bytes.Equal(m.Parts[0].Data, png) {
				t.Fatalf("image parts = %+v, want the PNG's bytes", m.Parts)
			}
			raw := string(reqs[0].Raw)
			b64 := base64.StdEncoding.EncodeToString(png)
			var want string
			if kind == llmtest.OpenAI {
				want = `{"type":"image_url","image_url":{"url":"data:image/png;base64,` + b64 + `"}}`
			} else {
				want = `"source":{"data":"` + b64 + `","media_type":"image/png","type":"base64"}`
			}
			if !strings.Contains(raw, want) {
				t.Errorf("request body lacks %s:\n%s", want, raw)
			}
			if strings.Contains(raw, "sha256-abc") {
				t.Error("the stored reference was sent to the model")
			}
		})
	}
}

// An image without its bytes is refused before anything is sent.
func TestImageWithoutDataRefused(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			srv := llmtest.NewServer(t, llmtest.Text("ok"))
			p, _ := newProvider(t, kind, srv, llm.Config{})
			_, err := p.Complete(context.Background(), llm.Request{Messages: []llm.Message{{
				Role: llm.RoleUser, Content: "hi", Parts: []llm.Part{{Kind: llm.PartImage, MediaType: "image/png", Ref: "x"}},
			}}})
			if llm.KindOf(err) != llm.ErrBadRequest {
				t.Fatalf("err = %v, want a bad request", err)
			}
			if n := len(srv.Requests()); n != 0 {
				t.Errorf("requests = %d, want 0", n)
			}
		})
	}
}
