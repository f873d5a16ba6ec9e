package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
)

// Identities of the fake workspace.
const (
	team    = "T1"
	botUser = "UBOT"
	botID   = "BBOT"
)

// posted is a message the fake Slack received.
type posted struct {
	Method  string // chat.postMessage, chat.update, chat.postEphemeral
	Channel string
	Thread  string
	TS      string
	Text    string
	Blocks  string
	// Metadata is the message metadata posted with it (JSON), "" if none.
	Metadata string
	User     string    // ephemeral recipient
	At       time.Time // fakeSlack.clock when received (zero without a clock)
	// ResponseType is the response_type of a post to a response_url
	// (Method "response_url").
	ResponseType string
	// Unfurl is the post's unfurl_links and unfurl_media, "links/media"
	// ("/" when neither is set: Slack's defaults, which unfurl).
	Unfurl string
}

// slackUser is a user the fake's users.info knows.
type slackUser struct {
	name, team, enterprise string
	tz                     string // the profile's time zone
	deleted                bool   // deactivated
}

// fakeSlack speaks Slack's Web API and Socket Mode WebSocket protocol on
// 127.0.0.1, for the real slack-go client.
type fakeSlack struct {
	t    testing.TB
	srv  *httptest.Server
	out  chan []byte   // envelopes to send over the socket
	done chan struct{} // closed at cleanup: ends socket handlers

	mu         sync.Mutex
	msgs       []posted                   // guarded by mu
	views      []string                   // views.open bodies; guarded by mu
	bodies     [][]byte                   // every Web API request body; guarded by mu
	methods    []string                   // every Web API method called; guarded by mu
	acks       map[string]json.RawMessage // envelope id → ack payload; guarded by mu
	conns      int                        // socket connections; guarded by mu
	sentOn     map[int]int                // envelopes written on each connection (1, 2, …); guarded by mu
	ts         int                        // last ts issued; guarded by mu
	rateLimits int                        // 429s still to answer chat.postMessage with; guarded by mu
	scopes     string                     // x-oauth-scopes of auth.test; guarded by mu
	clock      *fakeClock                 // stamps posted.At when set; guarded by mu

	users       map[string]slackUser // users.info answers; guarded by mu
	channels    map[string]string    // conversations.info: id → name; guarded by mu
	lookups     []string             // users.info and conversations.info ids asked; guarded by mu
	lookupHang  bool                 // users.info and conversations.info never answer; guarded by mu
	lookup429   bool                 // users.info and conversations.info answer 429; guarded by mu
	notMember   map[string]bool      // channels where chat.postEphemeral fails (the bot is not in them); guarded by mu
	respondFail bool                 // response_url answers 500; guarded by mu
	respondHang bool                 // response_url never answers; guarded by mu
	respondHung int                  // posts to a response_url left hanging; guarded by mu
	updateFail  map[string]string    // ts → the error chat.update answers for it; guarded by mu
	// postHang: the next chat.postMessage or chat.update whose text
	// contains it is left unanswered, and not carried out (the request is
	// lost on its way); postLost: the next one is carried out, but its
	// answer never comes (the process dies before it hears back). Each
	// applies once; hung gets the text.
	postHang, postLost string // guarded by mu
	hung               chan string
	// seeded are messages people wrote, served by conversations.replies
	// and conversations.history with the bot's; historyCalls the forms of
	// those calls; historyDenied makes them answer missing_scope. Guarded
	// by mu.
	seeded        []map[string]any
	historyCalls  []url.Values
	historyDenied bool
	// files serves the files of message events (files_test.go).
	files fakeFiles
	// uploads are the files uploaded with files.getUploadURLExternal, by
	// id; uploadFail makes the next files.completeUploadExternal fail with
	// that error; completeLost carries out the next one but never answers
	// (the process dies before it hears back). Guarded by mu.
	uploads      map[string]*fakeUpload
	uploadOrder  []string
	uploadFail   string
	completeLost bool
}

// fakeUpload is a file uploaded to the fake Slack.
type fakeUpload struct {
	ID, Name, Title string
	Length          int    // the length announced to files.getUploadURLExternal
	Content         []byte // the bytes posted to the upload URL
	Auth            string // the Authorization header of that post
	Channel, Thread string // where files.completeUploadExternal shared it
	Shared          bool
	SharedTS        string // the ts of the message that shares it
	Completions     int
	SnippetType     string
}

// sharedFiles returns the files shared so far, in upload order.
func (f *fakeSlack) sharedFiles() []fakeUpload {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeUpload
	for _, id := range f.uploadOrder {
		if u := f.uploads[id]; u.Shared {
			out = append(out, *u)
		}
	}
	return out
}

// serveUpload takes the bytes of an external upload (a multipart form with
// the file in "file", as slack-go posts them).
func (f *fakeSlack) serveUpload(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, "/upload/")
	file, _, err := r.FormFile("file")
	if err != nil {
		http.Error(w, "no file", http.StatusBadRequest)
		return
	}
	data, _ := io.ReadAll(file)
	f.mu.Lock()
	defer f.mu.Unlock()
	u := f.uploads[id]
	if u == nil || len(data) != u.Length {
		http.Error(w, "bad upload", http.StatusBadRequest)
		return
	}
	u.Content, u.Auth = data, r.Header.Get("Authorization")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("OK - " + strconv.Itoa(len(data))))
}

// serveUploadAPI answers files.getUploadURLExternal and
// files.completeUploadExternal; a completed upload becomes a message of
// the bot sharing the file in its channel (and thread).
func (f *fakeSlack) serveUploadAPI(w http.ResponseWriter, r *http.Request, method string, form url.Values) {
	f.mu.Lock()
	if f.uploads == nil {
		f.uploads = map[string]*fakeUpload{}
	}
	if method == "files.getUploadURLExternal" {
		if !strings.Contains(f.scopes, "files:write") {
			f.mu.Unlock()
			f.writeJSON(w, map[string]any{"ok": false, "error": "missing_scope", "needed": "files:write"})
			return
		}
		n, err := strconv.Atoi(form.Get("length"))
		if err != nil || n <= 0 || form.Get("filename") == "" {
			f.mu.Unlock()
			f.writeJSON(w, map[string]any{"ok": false, "error": "invalid_arguments"})
			return
		}
		id := fmt.Sprintf("F%03d", len(f.uploadOrder)+1)
		f.uploads[id] = &fakeUpload{ID: id, Name: form.Get("filename"), Length: n, SnippetType: form.Get("snippet_type")}
		f.uploadOrder = append(f.uploadOrder, id)
		f.mu.Unlock()
		f.writeJSON(w, map[string]any{"ok": true, "upload_url": f.srv.URL + "/upload/" + id, "file_id": id})
		return
	}
	if e := f.uploadFail; e != "" {
		f.uploadFail = ""
		f.mu.Unlock()
		f.writeJSON(w, map[string]any{"ok": false, "error": e})
		return
	}
	var files []struct{ ID, Title string }
	_ = json.Unmarshal([]byte(form.Get("files")), &files)
	var out []map[string]any
	for _, fl := range files {
		u := f.uploads[fl.ID]
		if u == nil || u.Content == nil {
			f.mu.Unlock()
			f.writeJSON(w, map[string]any{"ok": false, "error": "file_not_found"})
			return
		}
		u.Completions++
		u.Title, u.Channel, u.Thread, u.Shared = fl.Title, form.Get("channel_id"), form.Get("thread_ts"), true
		f.ts++
		u.SharedTS = fmt.Sprintf("%d.%06d", time.Now().Unix(), f.ts)
		f.msgs = append(f.msgs, posted{Method: method, Channel: u.Channel, Thread: u.Thread, TS: u.SharedTS, Text: u.Name})
		out = append(out, map[string]any{"id": u.ID, "title": u.Title})
	}
	lost := f.completeLost
	f.completeLost = false
	f.mu.Unlock()
	if lost {
		f.hang(r, "files.completeUploadExternal")
		return
	}
	f.writeJSON(w, map[string]any{"ok": true, "files": out})
}

const disconnectMsg = `{"type":"disconnect","reason":"refresh_requested","debug_info":{"host":"fake"}}`

func newFakeSlack(t testing.TB) *fakeSlack {
	f := &fakeSlack{t: t, out: make(chan []byte, 100), done: make(chan struct{}), acks: map[string]json.RawMessage{}, hung: make(chan string, 4),
		scopes: "app_mentions:read,assistant:write,channels:history,channels:read,chat:write,commands,files:read,files:write,groups:history,im:history,im:write,mpim:history,users:read"}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/", f.serveAPI)
	mux.HandleFunc("/ws", f.serveWS)
	mux.HandleFunc("/respond/", f.serveRespond)
	mux.HandleFunc("/files/", f.files.serve)
	mux.HandleFunc("/upload/", f.serveUpload)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(f.done)
		f.srv.Close()
	})
	return f
}

func (f *fakeSlack) apiURL() string { return f.srv.URL + "/api/" }

// responseURL is a slash command's response_url on the fake.
func (f *fakeSlack) responseURL(id string) string { return f.srv.URL + "/respond/" + id }

// serveRespond records a post to a response_url.
func (f *fakeSlack) serveRespond(w http.ResponseWriter, r *http.Request) {
	var msg struct {
		Text         string `json:"text"`
		ResponseType string `json:"response_type"`
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	fail, hang := f.respondFail, f.respondHang
	f.mu.Unlock()
	if hang {
		f.mu.Lock()
		f.respondHung++
		f.mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-f.done:
		}
		return
	}
	if fail || json.Unmarshal(body, &msg) != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	f.mu.Lock()
	f.msgs = append(f.msgs, posted{Method: "response_url", Channel: strings.TrimPrefix(r.URL.Path, "/respond/"), Text: msg.Text, ResponseType: msg.ResponseType})
	f.mu.Unlock()
	_, _ = w.Write([]byte("ok"))
}

// lookup answers users.info and conversations.info.
func (f *fakeSlack) lookup(w http.ResponseWriter, r *http.Request, method string, form url.Values) {
	id := form.Get("user")
	if method == "conversations.info" {
		id = form.Get("channel")
	}
	f.mu.Lock()
	f.lookups = append(f.lookups, id)
	hang, limited := f.lookupHang, f.lookup429
	u, uok := f.users[id]
	c, cok := f.channels[id]
	f.mu.Unlock()
	switch {
	case hang:
		select {
		case <-r.Context().Done():
		case <-f.done:
		}
	case limited:
		w.Header().Set("Retry-After", "60")
		w.WriteHeader(http.StatusTooManyRequests)
	case method == "users.info" && uok:
		f.writeJSON(w, map[string]any{"ok": true, "user": map[string]any{"id": id, "team_id": u.team, "name": "handle", "tz": u.tz, "deleted": u.deleted,
			"profile": map[string]any{"display_name": u.name, "real_name": "Real " + u.name}, "enterprise_user": map[string]any{"enterprise_id": u.enterprise}}})
	case method == "conversations.info" && cok:
		f.writeJSON(w, map[string]any{"ok": true, "channel": map[string]any{"id": id, "name": c}})
	case method == "users.info":
		f.writeJSON(w, map[string]any{"ok": false, "error": "user_not_found"})
	default:
		f.writeJSON(w, map[string]any{"ok": false, "error": "channel_not_found"})
	}
}

func (f *fakeSlack) writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeSlack) serveAPI(w http.ResponseWriter, r *http.Request) {
	method := strings.TrimPrefix(r.URL.Path, "/api/")
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.methods = append(f.methods, method)
	f.mu.Unlock()
	form, _ := url.ParseQuery(string(body))
	switch method {
	case "auth.test":
		f.mu.Lock()
		w.Header().Set("X-OAuth-Scopes", f.scopes)
		f.mu.Unlock()
		f.writeJSON(w, map[string]any{"ok": true, "team": "Acme", "team_id": team, "user_id": botUser, "bot_id": botID, "user": "talon"})
	case "apps.connections.open":
		f.writeJSON(w, map[string]any{"ok": true, "url": "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/ws"})
	case "users.info", "conversations.info":
		f.lookup(w, r, method, form)
	case "conversations.open":
		f.writeJSON(w, map[string]any{"ok": true, "channel": map[string]any{"id": "D" + form.Get("users")}})
	case "chat.postMessage", "chat.update", "chat.postEphemeral":
		f.mu.Lock()
		if method == "chat.postEphemeral" && f.notMember[form.Get("channel")] {
			f.mu.Unlock()
			f.writeJSON(w, map[string]any{"ok": false, "error": "channel_not_found"})
			return
		}
		var at time.Time
		if f.clock != nil {
			at = f.clock.peek()
		}
		if e := f.updateFail[form.Get("ts")]; method == "chat.update" && e != "" {
			f.mu.Unlock()
			f.writeJSON(w, map[string]any{"ok": false, "error": e})
			return
		}
		if method == "chat.postMessage" && f.rateLimits > 0 {
			f.rateLimits--
			f.mu.Unlock()
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		hang, lost := false, false
		if text := form.Get("text"); method == "chat.postMessage" || method == "chat.update" {
			if f.postHang != "" && strings.Contains(text, f.postHang) {
				hang, f.postHang = true, ""
			} else if f.postLost != "" && strings.Contains(text, f.postLost) {
				lost, f.postLost = true, ""
			}
		}
		if hang {
			f.mu.Unlock()
			f.hang(r, form.Get("text"))
			return
		}
		f.ts++
		// Real seconds, as Slack's: a ts tells when a message was posted.
		ts := fmt.Sprintf("%d.%06d", time.Now().Unix(), f.ts)
		if method == "chat.update" {
			ts = form.Get("ts")
		}
		f.msgs = append(f.msgs, posted{Method: method, Channel: form.Get("channel"), Thread: form.Get("thread_ts"), TS: ts,
			Text: form.Get("text"), Blocks: form.Get("blocks"), User: form.Get("user"), At: at, Metadata: form.Get("metadata"),
			Unfurl: form.Get("unfurl_links") + "/" + form.Get("unfurl_media")})
		f.mu.Unlock()
		if lost {
			f.hang(r, form.Get("text"))
			return
		}
		if method == "chat.postEphemeral" {
			f.writeJSON(w, map[string]any{"ok": true, "message_ts": ts})
			return
		}
		f.writeJSON(w, map[string]any{"ok": true, "channel": form.Get("channel"), "ts": ts})
	case "conversations.replies", "conversations.history":
		f.mu.Lock()
		f.historyCalls = append(f.historyCalls, form)
		denied := f.historyDenied
		f.mu.Unlock()
		if denied {
			f.writeJSON(w, map[string]any{"ok": false, "error": "missing_scope", "needed": "channels:history"})
			return
		}
		msgs := f.history(form, method == "conversations.replies")
		// Pages of limit messages; the cursor is the offset of the next.
		off, _ := strconv.Atoi(form.Get("cursor"))
		off = min(max(off, 0), len(msgs))
		msgs = msgs[off:]
		res := map[string]any{"ok": true, "has_more": false}
		if n, _ := strconv.Atoi(form.Get("limit")); n > 0 && len(msgs) > n {
			msgs = msgs[:n]
			res["has_more"] = true
			res["response_metadata"] = map[string]any{"next_cursor": strconv.Itoa(off + n)}
		}
		res["messages"] = msgs
		f.writeJSON(w, res)
	case "files.getUploadURLExternal", "files.completeUploadExternal":
		f.serveUploadAPI(w, r, method, form)
	case "views.open":
		f.mu.Lock()
		f.views = append(f.views, string(body))
		f.mu.Unlock()
		f.writeJSON(w, map[string]any{"ok": true, "view": map[string]any{"id": "V1"}})
	case "assistant.threads.setStatus":
		f.mu.Lock()
		f.msgs = append(f.msgs, posted{Method: method, Channel: form.Get("channel_id"), Thread: form.Get("thread_ts"), Text: form.Get("status")})
		f.mu.Unlock()
		f.writeJSON(w, map[string]any{"ok": true})
	default:
		f.writeJSON(w, map[string]any{"ok": false, "error": "unknown_method"})
	}
}

// hang leaves the request r unanswered until it is cancelled or the fake
// stops, after telling hung.
func (f *fakeSlack) hang(r *http.Request, text string) {
	f.hung <- text
	select {
	case <-r.Context().Done():
	case <-f.done:
	}
}

// history answers conversations.history (the channel's top-level
// messages) and conversations.replies (a thread: its parent and replies)
// with the bot's messages as they are now (posted, then edited), oldest
// first, those at or after oldest; with their metadata only when
// include_all_metadata is set, as Slack does.
func (f *fakeSlack) history(form url.Values, replies bool) []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	type message struct {
		posted
		index int
	}
	byTS := map[string]*message{}
	var order []string
	for i, m := range f.msgs {
		switch m.Method {
		case "chat.postMessage", "files.completeUploadExternal":
			byTS[m.TS] = &message{posted: m, index: i}
			order = append(order, m.TS)
		case "chat.update":
			if old := byTS[m.TS]; old != nil {
				old.Text = m.Text
				if m.Metadata != "" {
					old.Metadata = m.Metadata
				}
			}
		}
	}
	var out []map[string]any
	latest := form.Get("latest")
	inclusive := form.Get("inclusive") == "1" || form.Get("inclusive") == "true"
	for _, ts := range order {
		m := byTS[ts]
		if m.Channel != form.Get("channel") || ts < form.Get("oldest") || latest != "" && (ts > latest || ts == latest && !inclusive) {
			continue
		}
		if replies && m.Thread != form.Get("ts") && ts != form.Get("ts") || !replies && m.Thread != "" {
			continue
		}
		msg := map[string]any{"type": "message", "user": botUser, "bot_id": botID, "text": m.Text, "ts": ts}
		if m.Method == "files.completeUploadExternal" {
			// A file share: its text is empty, the file named in files.
			msg["text"], msg["files"] = "", []map[string]any{{"id": "", "name": m.Text}}
			for _, u := range f.uploads {
				if u.SharedTS == ts {
					msg["files"] = []map[string]any{{"id": u.ID, "name": u.Name, "title": u.Title}}
				}
			}
		}
		if m.Thread != "" {
			msg["thread_ts"] = m.Thread
		}
		if m.Metadata != "" && form.Get("include_all_metadata") == "1" {
			msg["metadata"] = json.RawMessage(m.Metadata)
		}
		out = append(out, msg)
	}
	// Messages people wrote (seed), merged in ts order; the parent of a
	// thread comes first, as Slack sends it.
	for _, m := range f.seeded {
		ts, _ := m["ts"].(string)
		thread, _ := m["thread_ts"].(string)
		if m["channel"] != form.Get("channel") || ts < form.Get("oldest") && !(replies && ts == form.Get("ts")) ||
			latest != "" && (ts > latest || ts == latest && !inclusive) {
			continue
		}
		if replies && thread != form.Get("ts") && ts != form.Get("ts") || !replies && thread != "" && thread != ts {
			continue
		}
		msg := map[string]any{}
		for k, v := range m {
			if k != "channel" {
				msg[k] = v
			}
		}
		out = append(out, msg)
	}
	sort.SliceStable(out, func(i, j int) bool {
		ti, tj := out[i]["ts"].(string), out[j]["ts"].(string)
		if replies && (ti == form.Get("ts")) != (tj == form.Get("ts")) {
			return ti == form.Get("ts")
		}
		return ti < tj
	})
	return out
}

// seed adds messages people wrote to the fake's history, each a message
// object as Slack sends it plus "channel".
func (f *fakeSlack) seed(msgs ...map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seeded = append(f.seeded, msgs...)
}

// serveWS is one Socket Mode connection: hello, a ping, then the queued
// envelopes; acks are recorded. A queued disconnect ends the connection.
func (f *fakeSlack) serveWS(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	f.mu.Lock()
	f.conns++
	n := f.conns
	f.mu.Unlock()
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return conn.WriteMessage(websocket.TextMessage, b)
	}
	if write([]byte(`{"type":"hello","num_connections":1,"debug_info":{"host":"fake"},"connection_info":{"app_id":"A1"}}`)) != nil {
		return
	}
	wmu.Lock()
	_ = conn.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second))
	wmu.Unlock()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		for {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var ack struct {
				EnvelopeID string          `json:"envelope_id"`
				Payload    json.RawMessage `json:"payload"`
			}
			if json.Unmarshal(msg, &ack) == nil && ack.EnvelopeID != "" {
				f.mu.Lock()
				f.acks[ack.EnvelopeID] = ack.Payload
				f.mu.Unlock()
			}
		}
	}()
	for {
		select {
		case <-f.done:
			return
		case <-closed:
			return
		case msg := <-f.out:
			if err := write(msg); err != nil {
				return
			}
			f.mu.Lock()
			if f.sentOn == nil {
				f.sentOn = map[int]int{}
			}
			f.sentOn[n]++
			f.mu.Unlock()
			if string(msg) == disconnectMsg {
				select {
				case <-closed:
				case <-f.done:
				case <-time.After(5 * time.Second):
				}
				return
			}
		}
	}
}

func (f *fakeSlack) send(msg []byte) { f.out <- msg }

// methodsCalled returns the Web API methods called, in order.
func (f *fakeSlack) methodsCalled() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.methods...)
}

func (f *fakeSlack) messages(method string) []posted {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []posted
	for _, m := range f.msgs {
		if method == "" || m.Method == method {
			out = append(out, m)
		}
	}
	return out
}

func (f *fakeSlack) ack(id string) (json.RawMessage, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.acks[id]
	return p, ok
}

func (f *fakeSlack) waitAcks(t *testing.T, ids ...string) {
	t.Helper()
	eventually(t, "acks "+strings.Join(ids, ","), func() bool {
		for _, id := range ids {
			if _, ok := f.ack(id); !ok {
				return false
			}
		}
		return true
	})
}

// fakeClock is the adapter's Now and Sleep in tests of pacing: Now moves
// on by step at every call, Sleep moves it on by the duration at once (and
// records it), so nothing waits for real.
type fakeClock struct {
	step time.Duration

	mu     sync.Mutex
	t      time.Time       // guarded by mu
	sleeps []time.Duration // guarded by mu
}

func newFakeClock(step time.Duration) *fakeClock {
	return &fakeClock{step: step, t: time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

func (c *fakeClock) peek() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.sleeps = append(c.sleeps, d)
	return ctx.Err() == nil
}

func (c *fakeClock) slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// setClock makes the fake Slack stamp what it receives with c's time.
func (f *fakeSlack) setClock(c *fakeClock) {
	f.mu.Lock()
	f.clock = c
	f.mu.Unlock()
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// eventsEnvelope wraps an Events API event in a Socket Mode envelope.
func eventsEnvelope(envID, eventID string, event map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{
		"type": "events_api", "envelope_id": envID, "accepts_response_payload": false,
		"payload": callbackBody(eventID, event),
	})
	return b
}

func callbackBody(eventID string, event map[string]any) map[string]any {
	return map[string]any{"type": "event_callback", "team_id": team, "api_app_id": "A1", "event_id": eventID, "event_time": 1700000000, "event": event}
}

func interactiveEnvelope(envID string, payload map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"type": "interactive", "envelope_id": envID, "payload": payload, "accepts_response_payload": true})
	return b
}

func slashEnvelope(envID string, payload map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"type": "slash_commands", "envelope_id": envID, "payload": payload, "accepts_response_payload": true})
	return b
}

func dm(user, ts, text string) map[string]any {
	return map[string]any{"type": "message", "channel": "D1", "channel_type": "im", "user": user, "ts": ts, "text": text, "event_ts": ts}
}

func channelMsg(typ, user, ts, thread, text string) map[string]any {
	m := map[string]any{"type": typ, "channel": "C1", "user": user, "ts": ts, "text": text, "event_ts": ts}
	if typ == "message" {
		m["channel_type"] = "channel"
	}
	if thread != "" {
		m["thread_ts"] = thread
	}
	return m
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testRuntime is the real runtime with Decide replaceable (until the real
// one lands), Amend calls recorded and Accept made to fail on demand.
type testRuntime struct {
	*agent.Runtime
	decide func(ctx context.Context, id agent.ApprovalID, by agent.Principal, approve bool) (agent.ApprovalState, error)

	mu          sync.Mutex
	amended     []string           // "key|text|cancel|edited µs"; guarded by mu
	failAccepts int                // Accept calls still to fail, as a full disk would; guarded by mu
	accepts     int                // Accept calls; guarded by mu
	keys        []agent.SessionKey // the keys of the inbounds accepted; guarded by mu
}

// errDiskFull is what a failing Accept returns.
var errDiskFull = errors.New("store: disk full")

func (r *testRuntime) Accept(ctx context.Context, in agent.Inbound) (agent.QueuedInbound, error) {
	r.mu.Lock()
	r.accepts++
	fail := r.failAccepts > 0
	if fail {
		r.failAccepts--
	}
	r.mu.Unlock()
	if fail {
		return agent.QueuedInbound{}, fmt.Errorf("agent: accept: %w", errDiskFull)
	}
	r.mu.Lock()
	r.keys = append(r.keys, in.Key)
	r.mu.Unlock()
	return r.Runtime.Accept(ctx, in)
}

func (r *testRuntime) Decide(ctx context.Context, id agent.ApprovalID, by agent.Principal, approve bool) (agent.ApprovalState, error) {
	if r.decide != nil {
		return r.decide(ctx, id, by, approve)
	}
	return r.Runtime.Decide(ctx, id, by, approve)
}

func (r *testRuntime) Amend(ctx context.Context, key string, a agent.Amendment) (bool, error) {
	r.mu.Lock()
	r.amended = append(r.amended, fmt.Sprintf("%s|%s|%v|%d", key, a.Text, a.Cancel, a.EditedMicros()))
	r.mu.Unlock()
	return r.Runtime.Amend(ctx, key, a)
}

// recordingSecrets is a vault that remembers what was added.
type recordingSecrets struct {
	mu    sync.Mutex
	added []struct {
		P agent.Principal
		S agent.NewSecret
	} // guarded by mu
	removed []string // names removed; guarded by mu
}

func (s *recordingSecrets) ListSecrets(context.Context, agent.Principal) ([]agent.SecretInfo, error) {
	return nil, nil
}

func (s *recordingSecrets) AddSecret(_ context.Context, p agent.Principal, n agent.NewSecret) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n.Value = bytes.Clone(n.Value) // the adapter wipes its copy
	s.added = append(s.added, struct {
		P agent.Principal
		S agent.NewSecret
	}{p, n})
	return nil
}

func (s *recordingSecrets) RemoveSecret(_ context.Context, _ agent.Principal, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removed = append(s.removed, name)
	return nil
}

// harness is a real runtime (SQLite, fake LLM) wired to an adapter that
// talks to a fake Slack.
type harness struct {
	fs   *fakeSlack
	llm  *llmtest.Server
	rt   *testRuntime
	ad   *Adapter
	db   *store.DB
	logs *syncBuffer // the runtime's and the adapter's log
	// adLogs is the adapter's log alone.
	adLogs *syncBuffer
	ctx    context.Context
	// stop stops the adapter and the runtime and closes the database; the
	// test's cleanup calls it too.
	stop func()
}

func newHarness(t *testing.T, mode string, tweak func(*Adapter)) *harness {
	t.Helper()
	return newHarnessLLM(t, mode, llmtest.Echo(), tweak)
}

// newHarnessLLM is newHarness with the fake model answering with model.
func newHarnessLLM(t *testing.T, mode string, model llmtest.Handler, tweak func(*Adapter)) *harness {
	t.Helper()
	return startHarness(t, harnessOptions{mode: mode, model: model, tweak: tweak})
}

type harnessOptions struct {
	mode  string
	model llmtest.Handler // nil: echo
	tweak func(*Adapter)
	// fs is the fake Slack to talk to; nil: a new one.
	fs *fakeSlack
	// dbPath is the database of the runtime; "": a new one.
	dbPath string
	// follows gives the adapter the database as its Follows.
	follows bool
	// grace is the runtime's shutdown grace; 0: the default.
	grace time.Duration
	// threadMessages is the runtime's Limits.ThreadMessages (negative:
	// no thread is read); 0: the default.
	threadMessages int
	// redactor is the runtime's leak detector; nil: none.
	redactor agent.Redactor
	// tools runs the runtime's tools; nil: none.
	tools agent.ToolRunner
}

func startHarness(t testing.TB, o harnessOptions) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fs := o.fs
	if fs == nil {
		fs = newFakeSlack(t)
	}
	if o.dbPath == "" {
		o.dbPath = filepath.Join(t.TempDir(), "t.db")
	}
	if o.model == nil {
		o.model = llmtest.Echo()
	}
	db, err := store.Open(ctx, o.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	srv := llmtest.NewServer(t, o.model)
	logs := &syncBuffer{}
	log := zerolog.New(logs).Level(zerolog.DebugLevel)
	provider, err := llm.NewOpenAI(llm.Config{BaseURL: srv.URL, Model: "m", MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	rt := &testRuntime{Runtime: &agent.Runtime{Store: db, LLM: provider, Log: log, Limits: agent.Limits{ShutdownGrace: o.grace, ThreadMessages: o.threadMessages},
		Files: &store.FileDir{Dir: filepath.Join(t.TempDir(), "files")}, Redactor: o.redactor, Tools: o.tools}}
	cfg := DefaultConfig()
	cfg.Mode = o.mode
	cfg.BotToken = "xoxb-test-bot-token"
	cfg.AppToken = "xapp-test-app-token"
	cfg.SigningSecret = "signing-secret"
	cfg.APIURL = fs.apiURL()
	cfg.AllowedTeams = []string{team}
	adLogs := &syncBuffer{}
	ad := &Adapter{Config: cfg, Runtime: rt, Log: zerolog.New(io.MultiWriter(logs, adLogs)).Level(zerolog.DebugLevel)}
	if o.follows {
		ad.Follows = db
	}
	if o.tweak != nil {
		o.tweak(ad)
	}
	rt.Register(ad)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := rt.Run(ctx); err != nil {
			t.Errorf("runtime: %v", err)
		}
	})
	<-rt.Ready()
	wg.Go(func() {
		if err := ad.Run(ctx); err != nil {
			t.Errorf("adapter: %v", err)
		}
	})
	stop := sync.OnceFunc(func() {
		cancel()
		wg.Wait()
		_ = db.Close()
	})
	t.Cleanup(stop)
	return &harness{fs: fs, llm: srv, rt: rt, ad: ad, db: db, logs: logs, adLogs: adLogs, ctx: ctx, stop: stop}
}

// idle waits until every accepted message is answered and delivered.
func (h *harness) idle(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 20*time.Second)
	defer cancel()
	if err := h.rt.WaitIdle(ctx); err != nil {
		t.Fatalf("wait idle: %v", err)
	}
}
