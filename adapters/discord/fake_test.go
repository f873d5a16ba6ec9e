package discord

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakeDiscord speaks enough of Discord's REST API and gateway protocol to
// the real discordgo client: it answers GET /gateway with its own socket,
// says HELLO, reads IDENTIFY or RESUME, sends READY or RESUMED (replaying
// queued events), dispatches events with increasing sequence numbers,
// acknowledges heartbeats, and records every REST write.
type fakeDiscord struct {
	t   *testing.T
	srv *httptest.Server

	botID, appID string

	mu        sync.Mutex
	conn      *websocket.Conn // the current gateway socket; guarded by mu
	wmu       *sync.Mutex     // serialises writes to conn; guarded by mu
	conns     []*websocket.Conn
	seq       int64                    // last sequence number sent; guarded by mu
	sessions  int                      // sessions identified; guarded by mu
	frames    []frame                  // IDENTIFY, RESUME and other client ops (not heartbeats); guarded by mu
	invalid   bool                     // when set, IDENTIFY is answered with op 9 (invalid session); guarded by mu
	heartbeat int                      // the HELLO's heartbeat interval in ms (default 45000); guarded by mu
	beats     []time.Time              // heartbeats received; guarded by mu
	noAcks    bool                     // when set, heartbeats are not acknowledged; guarded by mu
	closes    []int                    // close codes the client sent; guarded by mu
	stall     map[string]chan struct{} // "METHOD first-segment" or "METHOD first/third" ("POST channels/messages") → requests wait until it is closed; guarded by mu
	stalled   map[string]int           // requests that waited on stall, by key; guarded by mu
	limited   map[string]string        // channel → Retry-After seconds: its message POSTs get 429; guarded by mu
	limitHits map[string]int           // 429s answered, by channel; guarded by mu
	global    bool                     // when set, the 429s of limited are global (X-RateLimit-Global); guarded by mu
	sent      map[string]time.Time     // interaction id → when it was dispatched; guarded by mu
	connected int                      // READY/RESUMED sent; guarded by mu
	replay    []event                  // sent after the next RESUMED; guarded by mu
	nextID    int64                    // snowflakes handed out; guarded by mu
	posts     []post                   // created messages; guarded by mu
	attempts  int                      // POSTs to /messages, 429s included; guarded by mu
	fail429   int                      // next message POSTs answered 429; guarded by mu
	edits     []post                   // PATCHed messages; guarded by mu
	writes    []string                 // "POST <channel> <content>" and "PATCH <channel> <content>" of messages, in order; guarded by mu
	threads   []post                   // threads started on messages (id: the message); guarded by mu
	threadErr int                      // when set, starting a thread is answered with this status (403: missing permission); guarded by mu
	typing    int                      // typing calls; guarded by mu
	callbacks []callback               // interaction responses; guarded by mu
	hooks     []post                   // webhook edits and follow-ups (interaction answers); guarded by mu
	commands  json.RawMessage          // registered commands; guarded by mu
	puts      int                      // command overwrites; guarded by mu
	lists     int                      // command listings; guarded by mu
	history   map[string][]msg         // channel → messages for GET …/messages; guarded by mu
	// historyReads are the history reads asked, "channel?query" or
	// "channel/message"; historyDenied the channels answered 403. Guarded
	// by mu.
	historyReads  []string
	historyDenied map[string]bool
	channels      map[string]string   // channel id → JSON for GET /channels/{id}; guarded by mu
	members       map[string][]string // user id → roles, for GET /guilds/{guild}/members/{user}; guarded by mu
	memberGets    int                 // GET /guilds/{guild}/members/{user} answered; guarded by mu
	appFlags      int                 // guarded by mu
	bodies        []string            // every REST request body; guarded by mu
	closeCode     int                 // when set, IDENTIFY is answered by closing with it; guarded by mu
	// nonceFrom is the first post whose nonce still counts: forgetNonces
	// moves it past the others, as Discord's nonce window (a few minutes)
	// passing does. Guarded by mu.
	nonceFrom int
	// postHang: the next message POST or PATCH whose content contains it
	// is left unanswered, and not carried out (the request is lost on its
	// way); postLost: the next one is carried out, but its answer never
	// comes (the process dies before it hears back). Each applies once;
	// hung gets the content. Guarded by mu.
	postHang, postLost string
	hung               chan string
	// editFail: message id → the status its PATCH is answered with (404:
	// Unknown Message, deleted). Guarded by mu.
	editFail map[string]int
	// cdn serves attachments as Discord's CDN (files_test.go).
	cdn fakeCDN
	// Shards (shards_test.go). recShards and maxConcurrency are what GET
	// /gateway/bot answers (0: 1). A connection belongs to a shard from its
	// IDENTIFY (the shard field; none: shard 0) or RESUME until the fake
	// reads its end: shardLive counts them now, shardMost the most at
	// once, overlaps describes every time a second one began, and
	// shardConns is each shard's newest, for dispatchTo. identifies
	// records each IDENTIFY's shard and time. Guarded by mu.
	recShards, maxConcurrency int
	shardLive, shardMost      map[int]int
	shardHow                  map[int]map[*websocket.Conn]string // each live connection: how and when it took the shard
	overlaps                  []string
	shardEvents               []string // a timeline of connections taking and leaving shards, for a failure's report
	// closeDelay is how long the fake takes to end a session on a close
	// frame before it answers it. Guarded by mu.
	closeDelay   time.Duration
	shardConns   map[int]fakeConn
	sessionShard map[string]int
	identifies   []identified
}

type fakeConn struct {
	c   *websocket.Conn
	wmu *sync.Mutex
}

type identified struct {
	shard, count int
	at           time.Time
}

type frame struct {
	Op   int             `json:"op"`
	D    json.RawMessage `json:"d"`
	at   time.Time       // when the fake read it
	path string          // the socket's URL path (/ws, or /ws-resume for resume_gateway_url)
}

type event struct {
	typ  string
	data any
}

type post struct {
	channel string
	path    string
	body    map[string]any
	id      string
	// files are the attachments of a multipart create-message request.
	files []upload
}

// upload is a file attached to a created message.
type upload struct {
	name, contentType string
	data              []byte
}

// multipartBody reads a multipart create-message request as Discord does:
// the JSON body from payload_json, the files from files[n] parts.
func multipartBody(r *http.Request, raw []byte) (body map[string]any, files []upload, err error) {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return nil, nil, err
	}
	mr := multipart.NewReader(bytes.NewReader(raw), params["boundary"])
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return body, files, nil
		}
		if err != nil {
			return nil, nil, err
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return nil, nil, err
		}
		switch name := p.FormName(); {
		case name == "payload_json":
			if err := json.Unmarshal(data, &body); err != nil {
				return nil, nil, err
			}
		case strings.HasPrefix(name, "files["):
			files = append(files, upload{name: p.FileName(), contentType: p.Header.Get("Content-Type"), data: data})
		}
	}
}

type callback struct {
	interaction string
	at          time.Time      // when the fake received it
	Type        int            `json:"type"`
	Data        map[string]any `json:"data"`
}

// msg is a message as the fake sends it.
type msg struct {
	ID        string `json:"id"`
	ChannelID string `json:"channel_id"`
	GuildID   string `json:"guild_id,omitempty"`
	Content   string `json:"content"`
	Timestamp string `json:"timestamp,omitempty"` // RFC 3339; GET …/messages fills in the fake's now
	Type      int    `json:"type"`
	Author    user   `json:"author"`
	Mentions  []user `json:"mentions"`
	WebhookID string `json:"webhook_id,omitempty"`
	Member    *struct {
		Roles []string `json:"roles"`
	} `json:"member,omitempty"`
	Attachments       []attachment `json:"attachments,omitempty"`
	MessageReference  *fakeRef     `json:"message_reference,omitempty"`
	ReferencedMessage *msg         `json:"referenced_message,omitempty"`
	// EditedTimestamp is set on an edit (MESSAGE_UPDATE), RFC 3339.
	EditedTimestamp string `json:"edited_timestamp,omitempty"`
}

type attachment struct {
	ID          string `json:"id"`
	Filename    string `json:"filename"`
	ContentType string `json:"content_type,omitempty"`
	Size        int    `json:"size"`
	URL         string `json:"url,omitempty"`
}

type fakeRef struct {
	MessageID string `json:"message_id"`
	ChannelID string `json:"channel_id,omitempty"`
}

type user struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Bot      bool   `json:"bot,omitempty"`
}

func newFake(t *testing.T) *fakeDiscord {
	f := &fakeDiscord{t: t, botID: "100", appID: "200", nextID: 5000,
		history: map[string][]msg{}, channels: map[string]string{}, members: map[string][]string{}, commands: json.RawMessage("[]"),
		limited: map[string]string{}, limitHits: map[string]int{}, sent: map[string]time.Time{},
		stall: map[string]chan struct{}{}, stalled: map[string]int{}, hung: make(chan string, 4),
		shardLive: map[int]int{}, shardMost: map[int]int{}, shardHow: map[int]map[*websocket.Conn]string{}, shardConns: map[int]fakeConn{}, sessionShard: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws/", f.gateway)
	mux.HandleFunc("/ws", f.gateway)
	mux.HandleFunc("/ws-resume/", f.gateway)
	mux.HandleFunc("/ws-resume", f.gateway)
	mux.HandleFunc("/api/v9/", f.rest)
	mux.HandleFunc("/attachments/", f.cdn.serve)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.srv.Close()
	})
	return f
}

func (f *fakeDiscord) snowflake() string {
	f.nextID++
	return strconv.FormatInt(f.nextID, 10)
}

func (f *fakeDiscord) gateway(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	wmu := &sync.Mutex{}
	write := func(v any) error {
		wmu.Lock()
		defer wmu.Unlock()
		return c.WriteJSON(v)
	}
	f.mu.Lock()
	f.conns = append(f.conns, c)
	interval := f.heartbeat
	f.mu.Unlock()
	if interval == 0 {
		interval = 45000
	}
	defer c.Close()
	shard := -1 // this connection's, once it identified or resumed
	// own counts this connection as one of shard s's, under f.mu.
	own := func(s int, how string) {
		shard = s
		f.shardLive[s]++
		if f.shardHow[s] == nil {
			f.shardHow[s] = map[*websocket.Conn]string{}
		}
		f.shardHow[s][c] = fmt.Sprintf("%s from %s at %s", how, c.RemoteAddr(), time.Now().Format("15:04:05.000"))
		f.shardEvents = append(f.shardEvents, fmt.Sprintf("shard %d: %s", s, f.shardHow[s][c]))
		if n := f.shardLive[s]; n > 1 {
			var hows []string
			for _, h := range f.shardHow[s] {
				hows = append(hows, h)
			}
			slices.Sort(hows)
			f.overlaps = append(f.overlaps, fmt.Sprintf("shard %d: %d connections at once: %s", s, n, strings.Join(hows, "; ")))
		}
		f.shardMost[s] = max(f.shardMost[s], f.shardLive[s])
		f.shardConns[s] = fakeConn{c, wmu}
	}
	// leave ends this connection's hold of its shard, under f.mu: when
	// the fake reads a close frame, before it echoes it (as Discord ends
	// the session before it answers), or when the socket ends without one.
	left := false
	leave := func(why any) {
		if shard < 0 || left {
			return
		}
		left = true
		f.shardLive[shard]--
		delete(f.shardHow[shard], c)
		f.shardEvents = append(f.shardEvents, fmt.Sprintf("shard %d: %s ended at %s (%v)", shard, c.RemoteAddr(), time.Now().Format("15:04:05.000"), why))
		if f.shardConns[shard].c == c {
			delete(f.shardConns, shard)
		}
	}
	c.SetCloseHandler(func(code int, text string) error {
		f.mu.Lock()
		delay := f.closeDelay
		f.mu.Unlock()
		time.Sleep(delay)
		f.mu.Lock()
		leave(fmt.Sprintf("close frame %d", code))
		f.mu.Unlock()
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		return nil
	})
	if write(map[string]any{"op": 10, "d": map[string]any{"heartbeat_interval": interval}}) != nil {
		return
	}
	for {
		var fr frame
		err := c.ReadJSON(&fr)
		fr.at, fr.path = time.Now(), strings.TrimSuffix(r.URL.Path, "/")
		if err != nil {
			f.mu.Lock()
			if f.conn == c {
				f.conn = nil
			}
			leave(err)
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				f.closes = append(f.closes, ce.Code)
			}
			f.mu.Unlock()
			return
		}
		switch fr.Op {
		case 1:
			f.mu.Lock()
			noAcks := f.noAcks
			f.beats = append(f.beats, fr.at)
			f.mu.Unlock()
			if !noAcks {
				_ = write(map[string]any{"op": 11})
			}
			continue
		case 2:
			f.mu.Lock()
			f.frames = append(f.frames, fr)
			if code := f.closeCode; code != 0 {
				f.mu.Unlock()
				wmu.Lock()
				_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(code, "Disallowed intent(s)."))
				wmu.Unlock()
				return
			}
			if f.invalid {
				f.mu.Unlock()
				_ = write(map[string]any{"op": 9, "d": false})
				continue
			}
			f.sessions++
			f.seq++
			var id struct {
				Shard *[2]int `json:"shard"`
			}
			_ = json.Unmarshal(fr.D, &id)
			sh := [2]int{0, 1}
			if id.Shard != nil {
				sh = *id.Shard
			}
			f.identifies = append(f.identifies, identified{shard: sh[0], count: sh[1], at: fr.at})
			f.sessionShard["sess-"+strconv.Itoa(f.sessions)] = sh[0]
			if shard < 0 {
				own(sh[0], "IDENTIFY")
			}
			ready := map[string]any{"op": 0, "t": "READY", "s": f.seq, "d": map[string]any{
				"v": 9, "session_id": "sess-" + strconv.Itoa(f.sessions),
				"user":        user{ID: f.botID, Username: "talon", Bot: true},
				"application": map[string]any{"id": f.appID},
				"guilds":      []any{},
				// Resumes go elsewhere, as on Discord.
				"resume_gateway_url": "ws://" + r.Host + "/ws-resume",
			}}
			f.conn, f.wmu = c, wmu
			f.mu.Unlock()
			_ = write(ready)
			f.mu.Lock()
			f.connected++
			f.mu.Unlock()
		case 6:
			f.mu.Lock()
			f.frames = append(f.frames, fr)
			var res struct {
				SessionID string `json:"session_id"`
			}
			_ = json.Unmarshal(fr.D, &res)
			if s, ok := f.sessionShard[res.SessionID]; ok && shard < 0 {
				own(s, "RESUME of "+res.SessionID)
			}
			f.seq++
			resumed := map[string]any{"op": 0, "t": "RESUMED", "s": f.seq, "d": map[string]any{}}
			replay := f.replay
			f.replay = nil
			f.conn, f.wmu = c, wmu
			f.mu.Unlock()
			_ = write(resumed)
			for _, e := range replay {
				f.dispatch(e.typ, e.data)
			}
			f.mu.Lock()
			f.connected++
			f.mu.Unlock()
		default:
			f.mu.Lock()
			f.frames = append(f.frames, fr)
			f.mu.Unlock()
		}
	}
}

// dispatch sends an event on the current socket with the next sequence
// number.
func (f *fakeDiscord) dispatch(typ string, data any) {
	if err := f.send(typ, data); err != nil {
		f.t.Errorf("dispatch %s: %v", typ, err)
	}
}

// send is dispatch that returns the write's error (the client may close
// the socket while the frame is written).
func (f *fakeDiscord) send(typ string, data any) error {
	f.mu.Lock()
	c, wmu := f.conn, f.wmu
	f.seq++
	s := f.seq
	f.mu.Unlock()
	if c == nil {
		return errors.New("no gateway connection")
	}
	wmu.Lock()
	defer wmu.Unlock()
	if err := c.WriteJSON(map[string]any{"op": 0, "t": typ, "s": s, "d": data}); err != nil {
		return err
	}
	if i, ok := data.(map[string]any); ok && typ == "INTERACTION_CREATE" {
		id, _ := i["id"].(string)
		f.mu.Lock()
		f.sent[id] = time.Now()
		f.mu.Unlock()
	}
	return nil
}

// dispatchTo sends an event on shard's newest connection.
func (f *fakeDiscord) dispatchTo(shard int, typ string, data any) error {
	f.mu.Lock()
	fc, ok := f.shardConns[shard]
	f.seq++
	s := f.seq
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("shard %d: no gateway connection", shard)
	}
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	return fc.c.WriteJSON(map[string]any{"op": 0, "t": typ, "s": s, "d": data})
}

// sendOp sends a gateway opcode (7 reconnect, 9 invalid session).
func (f *fakeDiscord) sendOp(op int, d any) {
	f.mu.Lock()
	c, wmu := f.conn, f.wmu
	f.mu.Unlock()
	if c == nil {
		f.t.Errorf("send op %d: no gateway connection", op)
		return
	}
	wmu.Lock()
	defer wmu.Unlock()
	if err := c.WriteJSON(map[string]any{"op": op, "d": d}); err != nil {
		f.t.Errorf("send op %d: %v", op, err)
	}
}

// closeWith closes the current gateway connection with a close frame
// carrying code, as Discord does when it ends a session.
func (f *fakeDiscord) closeWith(code int, reason string) {
	f.mu.Lock()
	c, wmu := f.conn, f.wmu
	f.conn = nil
	f.mu.Unlock()
	if c == nil {
		f.t.Errorf("close %d: no gateway connection", code)
		return
	}
	wmu.Lock()
	defer wmu.Unlock()
	_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason))
	c.Close()
}

// drop cuts the current gateway connection without a close frame, as a
// network failure does.
func (f *fakeDiscord) drop() {
	f.mu.Lock()
	c := f.conn
	f.conn = nil
	f.mu.Unlock()
	if c == nil {
		f.t.Error("drop: no gateway connection")
		return
	}
	c.NetConn().Close()
}

func (f *fakeDiscord) framesWith(op int) []frame {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []frame
	for _, fr := range f.frames {
		if fr.Op == op {
			out = append(out, fr)
		}
	}
	return out
}

func (f *fakeDiscord) connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connected
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeDiscord) rest(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	if r.Header.Get("Authorization") != "Bot test-token" {
		writeJSON(w, 401, map[string]any{"message": "401: Unauthorized", "code": 0})
		return
	}
	var (
		body  map[string]any
		files []upload
	)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		var err error
		if body, files, err = multipartBody(r, raw); err != nil {
			writeJSON(w, 400, map[string]any{"message": "Invalid Form Body", "code": 50035})
			return
		}
	} else if len(raw) > 0 {
		_ = json.Unmarshal(raw, &body)
	}
	path := strings.TrimPrefix(r.URL.Path, "/api/v9/")
	parts := strings.Split(path, "/")
	if content, mode := f.hangFor(r.Method, parts, body); mode != "" {
		if mode == "lost" {
			r2 := r.Clone(r.Context())
			r2.Body = io.NopCloser(bytes.NewReader(raw))
			f.rest(httptest.NewRecorder(), r2) // carried out; its answer is lost
		}
		f.hung <- content
		<-r.Context().Done()
		return
	}
	f.mu.Lock()
	stallKey := r.Method + " " + parts[0]
	if len(parts) >= 3 && f.stall[stallKey+"/"+parts[2]] != nil {
		stallKey += "/" + parts[2] // e.g. "POST channels/messages", not typing
	}
	stall := f.stall[stallKey]
	if stall != nil {
		f.stalled[stallKey]++
	}
	f.mu.Unlock()
	if stall != nil {
		select {
		case <-stall:
		case <-r.Context().Done():
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bodies = append(f.bodies, string(raw))
	route := r.Method + " " + parts[0]
	switch {
	case path == "gateway":
		writeJSON(w, 200, map[string]any{"url": "ws://" + r.Host + "/ws"})
	case path == "gateway/bot":
		writeJSON(w, 200, map[string]any{"url": "ws://" + r.Host + "/ws", "shards": max(f.recShards, 1),
			"session_start_limit": map[string]any{"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": max(f.maxConcurrency, 1)}})
	case r.Method == "GET" && path == "users/@me":
		writeJSON(w, 200, user{ID: f.botID, Username: "talon", Bot: true})
	case r.Method == "GET" && path == "oauth2/applications/@me":
		writeJSON(w, 200, map[string]any{"id": f.appID, "name": "talon", "flags": f.appFlags})
	case route == "POST channels" && len(parts) == 3 && parts[2] == "messages" && f.limited[parts[1]] != "":
		// This channel's message route is rate limited until the test
		// lifts it: every POST gets a 429 with Retry-After.
		f.attempts++
		f.limitHits[parts[1]]++
		after := f.limited[parts[1]]
		w.Header().Set("Retry-After", after)
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset-After", after)
		if f.global {
			w.Header().Set("X-RateLimit-Global", "true")
			w.Header().Set("X-RateLimit-Scope", "global")
		}
		retry, _ := strconv.ParseFloat(after, 64)
		writeJSON(w, 429, map[string]any{"message": "You are being rate limited.", "retry_after": retry, "global": f.global})
	case route == "POST channels" && len(parts) == 3 && parts[2] == "messages":
		f.attempts++
		if f.fail429 > 0 {
			f.fail429--
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset-After", "0.02")
			writeJSON(w, 429, map[string]any{"message": "You are being rate limited.", "retry_after": 0.02, "global": false})
			return
		}
		ch := parts[1]
		if n, _ := body["nonce"].(string); n != "" && body["enforce_nonce"] == true {
			for _, p := range f.posts[f.nonceFrom:] {
				if p.channel == ch && p.body["nonce"] == n {
					writeJSON(w, 200, msg{ID: p.id, ChannelID: ch, Author: user{ID: f.botID, Bot: true}})
					return
				}
			}
		}
		id := f.snowflake()
		content, _ := body["content"].(string)
		if content == "" && len(files) == 0 {
			writeJSON(w, 400, map[string]any{"message": "Cannot send an empty message", "code": 50006})
			return
		}
		f.posts = append(f.posts, post{channel: ch, path: path, body: body, id: id, files: files})
		f.writes = append(f.writes, "POST "+ch+" "+content)
		m := msg{ID: id, ChannelID: ch, Content: content, Author: user{ID: f.botID, Bot: true}}
		for i, fl := range files {
			m.Attachments = append(m.Attachments, attachment{ID: id + strconv.Itoa(i), Filename: fl.name, ContentType: fl.contentType, Size: len(fl.data)})
		}
		writeJSON(w, 200, m)
	case route == "POST channels" && len(parts) == 5 && parts[2] == "messages" && parts[4] == "threads":
		// A thread started on a message gets the message's id.
		if f.threadErr != 0 {
			writeJSON(w, f.threadErr, map[string]any{"message": "Missing Permissions", "code": 50013})
			return
		}
		for _, th := range f.threads {
			if th.id == parts[3] {
				writeJSON(w, 400, map[string]any{"message": "A thread has already been created for this message", "code": 160004})
				return
			}
		}
		f.threads = append(f.threads, post{channel: parts[1], path: path, body: body, id: parts[3]})
		writeJSON(w, 201, map[string]any{"id": parts[3], "type": 11, "parent_id": parts[1], "name": body["name"]})
	case route == "GET channels" && len(parts) == 3 && parts[2] == "messages":
		q := r.URL.Query()
		after, before := q.Get("after"), q.Get("before")
		limit, _ := strconv.Atoi(q.Get("limit"))
		f.historyReads = append(f.historyReads, parts[1]+"?"+q.Encode())
		if f.historyDenied[parts[1]] {
			writeJSON(w, 403, map[string]any{"message": "Missing Access", "code": 50001})
			return
		}
		var out []msg
		hist := f.history[parts[1]]
		for i := len(hist) - 1; i >= 0; i-- { // newest first, as Discord does
			if snowflakeLess(after, hist[i].ID) && (before == "" || snowflakeLess(hist[i].ID, before)) {
				m := hist[i]
				if m.Timestamp == "" {
					m.Timestamp = time.Now().UTC().Format(time.RFC3339Nano)
				}
				out = append(out, m)
			}
		}
		if limit > 0 && len(out) > limit {
			out = out[:limit] // the newest before; Discord caps at 100
		}
		writeJSON(w, 200, out)
	case route == "GET channels" && len(parts) == 4 && parts[2] == "messages":
		f.historyReads = append(f.historyReads, parts[1]+"/"+parts[3])
		find := func(id string) *msg {
			for _, m := range f.history[parts[1]] {
				if m.ID == id {
					return &m
				}
			}
			return nil
		}
		m := find(parts[3])
		if m == nil {
			writeJSON(w, 404, map[string]any{"message": "Unknown Message", "code": 10008})
			return
		}
		if m.MessageReference != nil && m.MessageReference.ChannelID == parts[1] {
			m.ReferencedMessage = find(m.MessageReference.MessageID)
		}
		writeJSON(w, 200, m)
	case route == "PATCH channels" && len(parts) == 4 && f.editFail[parts[3]] != 0:
		code := 0
		if f.editFail[parts[3]] == 404 {
			code = 10008
		}
		writeJSON(w, f.editFail[parts[3]], map[string]any{"message": http.StatusText(f.editFail[parts[3]]), "code": code})
	case route == "PATCH channels" && len(parts) == 4:
		f.edits = append(f.edits, post{channel: parts[1], path: path, body: body, id: parts[3]})
		content, _ := body["content"].(string)
		f.writes = append(f.writes, "PATCH "+parts[1]+" "+content)
		writeJSON(w, 200, msg{ID: parts[3], ChannelID: parts[1]})
	case route == "POST channels" && len(parts) == 3 && parts[2] == "typing":
		f.typing++
		w.WriteHeader(204)
	case route == "GET channels" && len(parts) == 2:
		if c, ok := f.channels[parts[1]]; ok {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, c)
			return
		}
		writeJSON(w, 404, map[string]any{"message": "Unknown Channel", "code": 10003})
	case route == "POST interactions" && len(parts) == 4:
		var cb callback
		_ = json.Unmarshal(raw, &cb)
		cb.interaction, cb.at = parts[1], time.Now()
		f.callbacks = append(f.callbacks, cb)
		w.WriteHeader(204)
	case parts[0] == "webhooks":
		id := f.snowflake()
		f.hooks = append(f.hooks, post{path: r.Method + " " + path, body: body, id: id})
		writeJSON(w, 200, msg{ID: id})
	case r.Method == "POST" && path == "users/@me/channels":
		// A user's DM channel with the bot: "9" and their id.
		rcpt, _ := body["recipient_id"].(string)
		writeJSON(w, 200, map[string]any{"id": "9" + rcpt, "type": 1, "recipients": []user{{ID: rcpt}}})
	case route == "GET guilds" && len(parts) == 4 && parts[2] == "members":
		f.memberGets++
		roles, ok := f.members[parts[3]]
		if !ok {
			writeJSON(w, 404, map[string]any{"message": "Unknown Member", "code": 10007})
			return
		}
		writeJSON(w, 200, map[string]any{"user": user{ID: parts[3], Username: "u" + parts[3]}, "roles": roles})
	case r.Method == "GET" && parts[0] == "applications" && len(parts) == 3:
		f.lists++
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(f.commands)
	case r.Method == "PUT" && parts[0] == "applications" && len(parts) == 3:
		f.puts++
		f.commands = raw
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(raw)
	default:
		f.t.Errorf("fake discord: unexpected %s %s", r.Method, r.URL.Path)
		writeJSON(w, 404, map[string]any{"message": "404: Not Found", "code": 0})
	}
}

// hangFor says whether a message write (a POST to a channel's messages, a
// PATCH of a message) with body is to hang ("hang", "lost", see postHang
// and postLost), taking the mode, and returns its content.
func (f *fakeDiscord) hangFor(method string, parts []string, body map[string]any) (string, string) {
	if parts[0] != "channels" || len(parts) < 3 || parts[2] != "messages" || !(method == "POST" && len(parts) == 3 || method == "PATCH" && len(parts) == 4) {
		return "", ""
	}
	content, _ := body["content"].(string)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.postHang != "" && strings.Contains(content, f.postHang):
		f.postHang = ""
		return content, "hang"
	case f.postLost != "" && strings.Contains(content, f.postLost):
		f.postLost = ""
		return content, "lost"
	}
	return content, ""
}

// forgetNonces lets the nonces of the messages posted so far be used
// again, as Discord does after a few minutes.
func (f *fakeDiscord) forgetNonces() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nonceFrom = len(f.posts)
}

func (f *fakeDiscord) postsSnapshot() []post {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]post(nil), f.posts...)
}

func (f *fakeDiscord) writesSnapshot() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.writes...)
}

func (f *fakeDiscord) threadsSnapshot() []post {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]post(nil), f.threads...)
}

func (f *fakeDiscord) editsSnapshot() []post {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]post(nil), f.edits...)
}

func (f *fakeDiscord) callbacksSnapshot() []callback {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]callback(nil), f.callbacks...)
}

func (f *fakeDiscord) hooksSnapshot() []post {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]post(nil), f.hooks...)
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
