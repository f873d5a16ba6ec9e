package slack

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/talonhq/talon/agent/attach/attachtest"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// fakeFiles serves files at /files/<id>/<name> as Slack serves
// url_private: to the bot token only; any other request gets Slack's
// sign-in page, with status 200, as the real one does.
type fakeFiles struct {
	mu   sync.Mutex
	data map[string][]byte // path → bytes; guarded by mu
	gets map[string]int    // path → downloads with the token; guarded by mu
}

func (ff *fakeFiles) serve(w http.ResponseWriter, r *http.Request) {
	ff.mu.Lock()
	b, ok := ff.data[r.URL.Path]
	authorized := r.Header.Get("Authorization") == "Bearer xoxb-test-bot-token"
	if ok && authorized {
		if ff.gets == nil {
			ff.gets = map[string]int{}
		}
		ff.gets[r.URL.Path]++
	}
	ff.mu.Unlock()
	switch {
	case !authorized:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<html><body>Sign in to Slack</body></html>")
	case !ok:
		http.NotFound(w, r)
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(b)
	}
}

func (ff *fakeFiles) downloads(path string) int {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	return ff.gets[path]
}

// file serves b as a file of a message event and returns its object as the
// event carries it, with size as Slack states it.
func (f *fakeSlack) file(id, name, mimetype string, b []byte, size int64) map[string]any {
	path := "/files/" + id + "/" + name
	f.files.mu.Lock()
	if f.files.data == nil {
		f.files.data = map[string][]byte{}
	}
	f.files.data[path] = b
	f.files.mu.Unlock()
	return map[string]any{"id": id, "name": name, "title": name, "mimetype": mimetype, "size": size, "mode": "hosted",
		"url_private": f.srv.URL + path, "url_private_download": f.srv.URL + path + "?download=1"}
}

func withFiles(ev map[string]any, files ...map[string]any) map[string]any {
	ev["files"] = files
	if ev["type"] == "message" {
		ev["subtype"] = "file_share"
	}
	return ev
}

// replyTexts is every text the bot posted or edited.
func (f *fakeSlack) replyTexts() string {
	var b strings.Builder
	for _, m := range f.messages("") {
		b.WriteString(m.Text)
		b.WriteString("\n")
	}
	return b.String()
}

// TestSlackFilesIn: a DM with only files (no text) is a message; the files
// are downloaded from url_private with the bot token, and the model gets
// the CSV's and the PDF's text and the PNG as an image part.
func TestSlackFilesIn(t *testing.T) {
	h := newHarnessLLM(t, ModeSocket, llmtest.Text("got them"), nil)
	img := attachtest.PNG(40, 30)
	csv := []byte("name,score\nada,10\ngrace,12\n")
	pdf := attachtest.PDF("Revenue grew 7 percent")
	ev := withFiles(dm("U1", "60.000100", ""),
		h.fs.file("F1", "scores.csv", "text/csv", csv, int64(len(csv))),
		h.fs.file("F2", "chart.png", "image/png", img, int64(len(img))),
		h.fs.file("F5", "q3.pdf", "application/pdf", pdf, int64(len(pdf))))
	h.fs.send(eventsEnvelope("e1", "Ev1", ev))
	h.fs.waitAcks(t, "e1")
	eventually(t, "a model request", func() bool { return len(h.llm.Requests()) == 1 })
	h.idle(t)
	req := h.llm.Requests()[0]
	user := req.Messages[len(req.Messages)-1]
	if !strings.Contains(user.Content, "grace,12") || !strings.Contains(user.Content, `name="scores.csv"`) {
		t.Errorf("the model did not get the CSV's text: %q", user.Content)
	}
	if !strings.Contains(user.Content, "Revenue grew 7 percent") {
		t.Errorf("the model did not get the PDF's text: %q", user.Content)
	}
	if len(user.Parts) != 1 || !bytes.Equal(user.Parts[0].Data, img) || user.Parts[0].MediaType != "image/png" {
		t.Errorf("the model did not get the PNG as an image part (%d parts)", len(user.Parts))
	}
	if n := h.fs.files.downloads("/files/F1/scores.csv"); n != 1 {
		t.Errorf("the CSV was downloaded %d times with the bot token, want 1", n)
	}
	if !strings.Contains(h.fs.replyTexts(), "got them") {
		t.Errorf("no answer posted: %q", h.fs.replyTexts())
	}
}

// TestSlackFilesRefused: a file Slack says is 200 MB is refused before any
// download, a 50,000×50,000 PNG header without decoding it, and a file
// whose URL is not Slack's never gets the token; each is named to the
// user with the reason, and the message's text is still answered.
func TestSlackFilesRefused(t *testing.T) {
	h := newHarnessLLM(t, ModeSocket, llmtest.Text("answered"), nil)
	bomb := attachtest.BombHeader(50000, 50000)
	offsite := map[string]any{"id": "F9", "name": "x.txt", "size": 10, "mode": "hosted", "url_private": "https://evil.example/x.txt"}
	ev := withFiles(channelMsg("app_mention", "U2", "61.000100", "", "<@UBOT> what are these?"),
		h.fs.file("F3", "backup.zip", "application/zip", []byte("small really"), 200<<20),
		h.fs.file("F4", "huge.png", "image/png", bomb, int64(len(bomb))),
		offsite)
	h.fs.send(eventsEnvelope("e1", "Ev1", ev))
	h.fs.waitAcks(t, "e1")
	eventually(t, "an answer", func() bool { return strings.Contains(h.fs.replyTexts(), "answered") })
	h.idle(t)
	if n := h.fs.files.downloads("/files/F3/backup.zip"); n != 0 {
		t.Errorf("the 200 MB file was downloaded %d times", n)
	}
	got := h.fs.replyTexts()
	for _, want := range []string{
		"I did not read backup.zip: it is 200.0 MB, and a file may be at most 20.0 MB",
		"I did not read huge.png: the image is 50000×50000 pixels",
		"I did not read x.txt: it could not be downloaded",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the reply lacks %q:\n%s", want, got)
		}
	}
	if m := modelTexts(h.llm); len(m) != 1 || !strings.Contains(m[0], "what are these?") {
		t.Errorf("model got %q", m)
	}
	if strings.Contains(h.logs.String(), "evil.example") {
		t.Error("the file's URL was logged")
	}
}
