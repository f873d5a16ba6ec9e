package discord

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm/llmtest"
)

// threadID is a thread (a forum post works the same) under channelID.
const threadID = "700"

// guildWithThread tells the adapter (GUILD_CREATE) that threadID is a
// thread of the text channel channelID.
func (e *env) guildWithThread() {
	e.f.dispatch("GUILD_CREATE", map[string]any{
		"id": guildID, "name": "g",
		"channels": []any{map[string]any{"id": channelID, "type": 0, "guild_id": guildID}},
		"threads":  []any{map[string]any{"id": threadID, "type": 11, "guild_id": guildID, "parent_id": channelID}},
	})
	waitFor(e.t, "the thread in the gateway state", func() bool {
		ch, err := e.a.sess.State.Channel(threadID)
		return err == nil && ch != nil && ch.IsThread()
	})
}

var threadPeople = []user{{ID: "7", Username: "alice"}, {ID: "8", Username: "bob"}, {ID: "9", Username: "carol"}}

// threadMsgs are n messages of threadID by three people in turn (alice,
// "7", is the one who mentions the bot), ids 1000+first on; carol's carry
// a file.
func threadMsgs(first, n int) []msg {
	var out []msg
	for i := first; i < first+n; i++ {
		m := msg{ID: fmt.Sprint(1000 + i), ChannelID: threadID, GuildID: guildID, Author: threadPeople[i%3],
			Content: fmt.Sprintf("line %d", i), Timestamp: time.Date(2026, 12, 2, 9, i, 0, 0, time.UTC).Format(time.RFC3339)}
		if i%3 == 2 {
			m.Attachments = []attachment{{ID: "1", Filename: "trace.log", ContentType: "text/plain", Size: 2048}}
		}
		out = append(out, m)
	}
	return out
}

func (f *fakeDiscord) addHistory(channel string, ms ...msg) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.history[channel] = append(f.history[channel], ms...)
}

func (f *fakeDiscord) reads() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.historyReads...)
}

// A mention in a thread of 60 messages by three people: the model request
// holds all 60, each once, with author, time and files, the mentioner's
// marked as theirs. A follow-up reads only the messages after the mention.
func TestThreadHistoryRead(t *testing.T) {
	e := start(t, options{handler: llmtest.Text("ok")})
	e.guildWithThread()
	e.f.addHistory(threadID, threadMsgs(0, 60)...)
	mention := inGuild("1060", threadID, "7", "<@100> summarise this thread", true)
	mention.Author = threadPeople[0]
	e.f.addHistory(threadID, mention)
	e.f.dispatch("MESSAGE_CREATE", mention)
	e.replies(1)
	reqs := e.llm.Requests()
	if len(reqs) != 1 {
		t.Fatalf("model requests = %d, want 1", len(reqs))
	}
	q := reqs[0].LastUserText()
	for i, m := range threadMsgs(0, 60) {
		header := fmt.Sprintf("[2026-12-02 09:%02d UTC %s", i, m.Author.Username)
		switch i % 3 {
		case 0:
			header += " (the user you are answering)]"
		case 2:
			header += "] attached: trace.log (text/plain, 2.0 KB)"
		default:
			header += "]"
		}
		if n := strings.Count(q, "> "+m.Content+"\n"); n != 1 {
			t.Errorf("%q appears %d times, want once", m.Content, n)
		} else if !strings.Contains(q, header+"\n> "+m.Content+"\n") {
			t.Errorf("%q is not under %q", m.Content, header)
		}
	}
	if !strings.HasSuffix(q, "The user's message:\nsummarise this thread") || strings.Contains(q, "> summarise") {
		t.Errorf("the question is not the quoted thread, then the user's message:\n%s", q)
	}

	// Five more messages, then a follow-up mention.
	e.f.addHistory(threadID, threadMsgs(61, 5)...)
	follow := inGuild("1066", threadID, "7", "<@100> and now?", true)
	follow.Author = threadPeople[0]
	e.f.addHistory(threadID, follow)
	e.f.dispatch("MESSAGE_CREATE", follow)
	e.replies(2)
	reqs = e.llm.Requests()
	q = reqs[len(reqs)-1].LastUserText()
	if strings.Contains(q, "> line 59\n") || !strings.Contains(q, "> line 61\n") || !strings.Contains(q, "> line 65\n") {
		t.Errorf("the follow-up's question holds other than the 5 new messages:\n%s", q)
	}
	var all strings.Builder
	for _, m := range reqs[len(reqs)-1].Messages {
		all.WriteString(m.Content + "\n")
	}
	for i := 0; i < 66; i++ {
		if i == 60 {
			continue
		}
		if n := strings.Count(all.String(), fmt.Sprintf("> line %d\n", i)); n != 1 {
			t.Errorf("after the follow-up, line %d appears %d times in the request, want once", i, n)
		}
	}
	for _, r := range e.f.reads() {
		if !strings.HasPrefix(r, threadID) {
			t.Errorf("read %s: another channel than the thread", r)
		}
	}
}

// A reply to a message in a text channel includes that message; a reply
// to a message of another channel (a forward) is not followed; a thread
// Discord refuses to show leaves the message answered without it.
func TestThreadHistoryReplyAndRefusal(t *testing.T) {
	e := start(t, options{handler: llmtest.Text("ok"), config: func(c *Config) { c.Threads = false }})
	e.guildWithThread()
	e.f.addHistory(channelID, msg{ID: "900", ChannelID: channelID, GuildID: guildID, Author: threadPeople[1], Content: "the build is red since 9:00", Type: 0})
	e.f.addHistory("555", msg{ID: "901", ChannelID: "555", GuildID: guildID, Author: threadPeople[1], Content: "secret roadmap"})
	reply := inGuild("950", channelID, "7", "<@100> why?", true)
	reply.Type, reply.MessageReference = 19, &fakeRef{MessageID: "900", ChannelID: channelID}
	forward := inGuild("951", channelID, "7", "<@100> and this?", true)
	forward.MessageReference = &fakeRef{MessageID: "901", ChannelID: "555"}
	e.f.addHistory(channelID, reply, forward)
	e.f.dispatch("MESSAGE_CREATE", reply)
	e.replies(1)
	e.f.dispatch("MESSAGE_CREATE", forward)
	e.replies(2)
	reqs := e.llm.Requests()
	if len(reqs) != 2 {
		t.Fatalf("model requests = %d, want 2", len(reqs))
	}
	if q := reqs[0].LastUserText(); !strings.Contains(q, "The message the user refers to") || !strings.Contains(q, "bob]\n> the build is red since 9:00\n") {
		t.Errorf("the replied-to message is not in the question:\n%s", q)
	}
	if q := reqs[1].LastUserText(); strings.Contains(q, "roadmap") || !strings.Contains(q, "another conversation; it was not read") {
		t.Errorf("a message of another channel was read, or the model not told:\n%s", q)
	}
	for _, r := range e.f.reads() {
		if strings.HasPrefix(r, "555") {
			t.Errorf("another channel was read: %s", r)
		}
	}

	// A mention that replies to nothing costs no read: the adapter saw
	// it arrive.
	e.f.dispatch("MESSAGE_CREATE", inGuild("952", channelID, "7", "<@100> plain", true))
	e.replies(3)
	for _, r := range e.f.reads() {
		if strings.Contains(r, "952") {
			t.Errorf("a message that replies to nothing was read back: %s", r)
		}
	}

	e.f.mu.Lock()
	e.f.historyDenied = map[string]bool{threadID: true}
	e.f.mu.Unlock()
	in := inGuild("960", threadID, "7", "<@100> hello", true)
	e.f.dispatch("MESSAGE_CREATE", in)
	e.replies(4)
	reqs = e.llm.Requests()
	if q := reqs[len(reqs)-1].LastUserText(); !strings.HasSuffix(q, "hello") || !strings.Contains(q, "could not be read") {
		t.Errorf("a refused read: question %q, want the message with a note", q)
	}
	// The error the runtime logs names the permission.
	_, err := e.a.ReadThread(context.Background(), agent.ThreadRequest{Key: agent.SessionKey{Principal: principal("7")},
		DedupeKey: "discord:961", ReplyTo: replyTo{channel: threadID, message: "961"}.String(), Limit: 100})
	if err == nil || !strings.Contains(err.Error(), "Read Message History") {
		t.Errorf("ReadThread of a refused thread: %v; want an error naming Read Message History", err)
	}
}

// A thread longer than the limit is read in pages of 100, newest first,
// until the limit: the newest are kept and the model is told that older
// ones are not shown.
func TestThreadHistoryPages(t *testing.T) {
	e := start(t, options{})
	e.guildWithThread()
	e.f.addHistory(threadID, threadMsgs(0, 251)...) // the last is the message answered
	read, err := e.a.ReadThread(context.Background(), agent.ThreadRequest{Key: agent.SessionKey{Principal: principal("7")},
		DedupeKey: "discord:1250", ReplyTo: replyTo{channel: threadID, message: "1250"}.String(), Limit: 120})
	if err != nil {
		t.Fatal(err)
	}
	if len(read.Messages) != 120 || read.Messages[0].Text != "line 130" || read.Messages[119].Text != "line 249" {
		t.Fatalf("read %d messages from %q, want the newest 120 (line 130 to line 249)", len(read.Messages), read.Messages[0].Text)
	}
	if len(read.Notes) != 1 || !strings.Contains(read.Notes[0], "Older messages") || read.Cursor != "1250" {
		t.Errorf("notes %q, cursor %q; want a note of the older messages, cursor 1250", read.Notes, read.Cursor)
	}
	if got := e.f.reads(); len(got) != 2 || !strings.Contains(got[0], "before=1251") || !strings.Contains(got[1], "before=1151") {
		t.Errorf("reads = %q, want two pages from before the message", got)
	}
}
