package discord

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/talonhq/talon/agent/attach/attachtest"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// fakeCDN serves attachments at /attachments/… as cdn.discordapp.com does
// (the adapter's transport sends the CDN's requests to the fake).
type fakeCDN struct {
	mu   sync.Mutex
	data map[string][]byte // path → bytes; guarded by mu
	gets map[string]int    // path → downloads; guarded by mu
}

func (c *fakeCDN) serve(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	b, ok := c.data[r.URL.Path]
	if ok {
		if c.gets == nil {
			c.gets = map[string]int{}
		}
		c.gets[r.URL.Path]++
	}
	c.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(b)
}

func (c *fakeCDN) downloads(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets[path]
}

// attach serves b as an attachment and returns it as a message carries it,
// with size as Discord states it.
func (f *fakeDiscord) attach(id, name, contentType string, b []byte, size int) attachment {
	path := "/attachments/" + dmChannel + "/" + id + "/" + name
	f.cdn.mu.Lock()
	if f.cdn.data == nil {
		f.cdn.data = map[string][]byte{}
	}
	f.cdn.data[path] = b
	f.cdn.mu.Unlock()
	return attachment{ID: id, Filename: name, ContentType: contentType, Size: size, URL: "https://cdn.discordapp.com" + path + "?ex=1&is=2&hm=3"}
}

// TestAttachmentsIn: a message with only attachments is a message: the
// model gets the CSV's and the PDF's text and the PNG as an image part; a
// 50,000×50,000 PNG header is refused without decoding; an attachment Discord says is 200 MB is
// refused before any download, and one whose URL is not Discord's CDN is
// never fetched; both are named to the user.
func TestAttachmentsIn(t *testing.T) {
	e := start(t, options{handler: llmtest.Text("read it")})
	csv := []byte("host,errors\napi-1,3\napi-2,41\n")
	pdf := attachtest.PDF("Latency doubled after the deploy")
	img := attachtest.PNG(30, 20)
	bomb := attachtest.BombHeader(50000, 50000)
	m := dmFrom("61", "7", "")
	m.Attachments = []attachment{
		e.f.attach("900", "errors.csv", "text/csv", csv, len(csv)),
		e.f.attach("903", "postmortem.pdf", "application/pdf", pdf, len(pdf)),
		e.f.attach("904", "graph.png", "image/png", img, len(img)),
		e.f.attach("905", "huge.png", "image/png", bomb, len(bomb)),
		e.f.attach("901", "core.dump", "application/octet-stream", []byte("tiny"), 200<<20),
		{ID: "902", Filename: "notes.txt", Size: 10, URL: "https://evil.example/notes.txt"},
	}
	e.f.dispatch("MESSAGE_CREATE", m)
	got := e.replies(1)
	if len(got) != 1 {
		t.Fatalf("replies = %q", got)
	}
	for _, want := range []string{"read it", "I did not read huge.png: the image is 50000×50000 pixels", "I did not read core.dump: it is 200.0 MB, and a file may be at most 20.0 MB", "I did not read notes.txt: it could not be downloaded"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("reply lacks %q:\n%s", want, got[0])
		}
	}
	if n := e.f.cdn.downloads("/attachments/" + dmChannel + "/901/core.dump"); n != 0 {
		t.Errorf("the 200 MB attachment was downloaded %d times", n)
	}
	reqs := e.llm.Requests()
	if len(reqs) != 1 {
		t.Fatalf("model requests = %d, want 1", len(reqs))
	}
	user := reqs[0].Messages[len(reqs[0].Messages)-1]
	for _, want := range []string{"api-2,41", `name="errors.csv"`, "Latency doubled after the deploy"} {
		if !strings.Contains(user.Content, want) {
			t.Errorf("the model's message lacks %q:\n%s", want, user.Content)
		}
	}
	if len(user.Parts) != 1 || !bytes.Equal(user.Parts[0].Data, img) {
		t.Errorf("the model did not get graph.png as an image part (%d parts)", len(user.Parts))
	}
}
