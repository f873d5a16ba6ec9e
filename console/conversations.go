package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm"
	"github.com/talonhq/talon/store"
)

// transcriptMessages is how many of a session's latest messages a
// transcript shows.
const transcriptMessages = 500

func when(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// searchIndexer is a Store that builds its search index in the
// background (SQLite, after migration 0025) and can say whether it is done.
type searchIndexer interface {
	SearchIndexing(ctx context.Context) (bool, error)
}

func (s *Server) conversations(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	f := store.ConversationFilter{Principal: q.Get("user"), Channel: q.Get("channel"), Search: q.Get("q"), Limit: 50}
	if len(f.Search) > 200 {
		f.Search = f.Search[:200]
	}
	if n, err := strconv.ParseInt(q.Get("before"), 10, 64); err == nil && n > 0 {
		f.Before = agent.SessionID(n)
	}
	// Messages are stored as JSON: the text is looked for as it is
	// written there (<, & and quotes escaped), which is what the
	// transcript shows.
	stored := f
	stored.Search = store.StoredText(f.Search)
	list, err := s.Store.Conversations(r.Context(), stored)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	indexing := false
	if ix, ok := s.Store.(searchIndexer); ok && stored.Search != "" && !store.ShortSearch(stored.Search) {
		if indexing, err = ix.SearchIndexing(r.Context()); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	s.render(w, http.StatusOK, page{Title: "Conversations", Nav: "conversations", CSRF: sess.csrf}, func(d *doc) {
		d.raw(`<form method="get" action="/console/conversations" class="filters">
<span class="field"><label for="user">User</label><input id="user" name="user" placeholder="slack:T1:U1"`)
		d.attr("value", f.Principal)
		d.raw(`></span>
<span class="field"><label for="channel">Channel</label><input id="channel" name="channel"`)
		d.attr("value", f.Channel)
		d.raw(`></span>
<span class="field"><label for="q">Text</label><input id="q" name="q" type="search"`)
		d.attr("value", f.Search)
		d.raw(`></span>
<button type="submit">Search</button>
</form>
`)
		switch {
		case stored.Search != "" && store.ShortSearch(stored.Search):
			d.raw(`<p class="notice" role="status">Text with fewer than 3 characters in a row (other than % and _) is looked for in the newest `)
			d.text(formatInt(store.ShortSearchMessages))
			d.raw(` messages only. Search for 3 characters or more to look through every conversation.</p>`)
		case indexing:
			d.raw(`<p class="notice" role="status">The search index of older messages is still being built, so this search reads every message and may be slow. It is fast once the index is done.</p>`)
		}
		if len(list) == 0 {
			d.raw(`<p>No conversations match.</p>`)
			return
		}
		d.raw(`<div class="scroll"><table><thead><tr><th scope="col">Last activity (UTC)</th><th scope="col">User</th><th scope="col">Channel</th><th scope="col" class="num">Messages</th><th scope="col">Transcript</th></tr></thead><tbody>`)
		for _, c := range list {
			d.raw(`<tr><td>`)
			d.text(when(c.LastAt))
			d.raw(`</td><td>`)
			d.text(c.Platform + ":" + c.Workspace + ":" + c.User)
			d.raw(`</td><td>`)
			d.text(c.Channel)
			if c.Thread != "" {
				d.text(" (thread " + c.Thread + ")")
			}
			d.raw(`</td><td class="num">`)
			d.text(formatInt(c.Messages))
			d.raw(`</td><td><a`)
			d.attr("href", "/console/conversations/"+strconv.FormatInt(int64(c.Session), 10))
			d.raw(`>Read<span class="sr"> conversation `)
			d.text(strconv.FormatInt(int64(c.Session), 10))
			d.raw(`</span></a></td></tr>`)
		}
		d.raw(`</tbody></table></div>`)
		if len(list) == f.Limit {
			v := url.Values{"user": {f.Principal}, "channel": {f.Channel}, "q": {f.Search}, "before": {strconv.FormatInt(int64(list[len(list)-1].Session), 10)}}
			d.raw(`<p><a`)
			d.attr("href", "/console/conversations?"+v.Encode())
			d.raw(`>Older conversations</a></p>`)
		}
	})
}

func (s *Server) transcript(w http.ResponseWriter, r *http.Request, sess *session) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		http.Error(w, "no such conversation", http.StatusNotFound)
		return
	}
	c, msgs, aps, err := s.Store.Transcript(r.Context(), agent.SessionID(id), transcriptMessages)
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, "no such conversation", http.StatusNotFound)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	byCall := map[string][]store.Approval{}
	for _, a := range aps {
		k := strconv.FormatInt(int64(a.Turn), 10) + "/" + a.CallID
		byCall[k] = append(byCall[k], a)
	}
	title := "Conversation " + strconv.FormatInt(id, 10)
	s.render(w, http.StatusOK, page{Title: title, Nav: "conversations", CSRF: sess.csrf}, func(d *doc) {
		d.raw(`<p>`)
		d.text(c.Platform + ":" + c.Workspace + ":" + c.User)
		d.raw(` in `)
		d.text(c.Channel)
		if c.Thread != "" {
			d.text(", thread " + c.Thread)
		}
		d.text(", started " + when(c.CreatedAt) + " UTC, " + formatInt(c.Messages) + " messages")
		if !c.Active {
			d.text(" (ended by /new)")
		}
		d.raw(`. As stored: secrets redacted as the model saw them.</p>
`)
		if c.Messages > int64(len(msgs)) {
			d.raw(`<p>Only the latest `)
			d.text(strconv.Itoa(len(msgs)))
			d.raw(` messages are shown.</p>`)
		}
		d.raw(`<ol class="transcript">`)
		for _, m := range msgs {
			writeMessage(d, m, byCall)
		}
		d.raw(`</ol>`)
	})
}

func writeMessage(d *doc, m agent.StoredMessage, byCall map[string][]store.Approval) {
	role := string(m.Message.Role)
	d.raw(`<li class="msg"`)
	d.attr("data-role", role)
	d.raw(`><div class="meta"><span class="role">`)
	switch m.Message.Role {
	case llm.RoleTool:
		d.text("tool result")
		if m.Message.ToolName != "" {
			d.text(": " + m.Message.ToolName)
		}
		if m.Message.IsError {
			d.raw(` <span class="bad">(error)</span>`)
		}
	default:
		d.text(role)
	}
	d.raw(`</span> <time>`)
	d.text(when(m.CreatedAt))
	d.raw(`</time></div>`)
	if m.Message.Content != "" {
		d.raw(`<pre>`)
		d.text(m.Message.Content)
		d.raw(`</pre>`)
	}
	for _, p := range m.Message.Parts {
		d.raw(`<p class="part">`)
		d.text("attached " + string(p.Kind) + ": " + p.Name)
		d.raw(`</p>`)
	}
	for _, tc := range m.Message.ToolCalls {
		d.raw(`<div class="call"><p>Tool call <strong>`)
		d.text(tc.Name)
		d.raw(`</strong> <code>`)
		d.text(tc.ID)
		d.raw(`</code></p><pre>`)
		d.text(prettyArgs(tc.Arguments))
		d.raw(`</pre>`)
		for _, a := range byCall[strconv.FormatInt(int64(m.Turn), 10)+"/"+tc.ID] {
			d.raw(`<p class="approval">Approval: `)
			d.text(a.Description)
			d.raw(` — <strong>`)
			d.text(a.State)
			d.raw(`</strong>`)
			if a.DecidedBy != "" {
				d.text(" by " + a.DecidedBy + " at " + when(a.DecidedAt) + " UTC")
			}
			d.raw(`</p>`)
		}
		d.raw(`</div>`)
	}
	d.raw(`</li>
`)
}

// prettyArgs shows a tool call's JSON arguments as they are, cut at 20,000
// bytes.
func prettyArgs(s string) string {
	const max = 20_000
	if len(s) > max {
		return strings.ToValidUTF8(s[:max], "") + " … (" + strconv.Itoa(len(s)) + " bytes)"
	}
	return s
}
