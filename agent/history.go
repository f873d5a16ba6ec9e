package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/talonhq/talon/agent/llm"
)

// interruptedResult is what the model reads for a tool call whose result
// was lost because the process stopped during it. The call is never run
// again: it may have had side effects.
const interruptedResult = "interrupted: the gateway restarted during this call; it was not retried and may or may not have taken effect"

const summaryPrompt = `You maintain the memory of a chat assistant. Summarise the conversation below so the
assistant can continue it: facts the user stated, decisions, open questions, results of tool calls that
still matter. Write plain sentences, at most 250 words. Do not include credentials or tokens.`

const turnSummaryPrompt = `You maintain the working memory of a chat assistant in the middle of answering one request.
Summarise the steps below (tool calls and their results) so the assistant can finish the request: what was
tried, what each tool returned that still matters, what is left to do. Write plain sentences, at most 250
words. Do not include credentials or tokens.`

// turnSummary is what a turn folded of its own earlier steps when they no
// longer fitted the window. It lives as long as the turn; a turn resumed
// after a restart makes it again from the history.
type turnSummary struct {
	text string
	upTo int64 // the last history id it covers
	// unseen names the images the turn's model calls described rather
	// than showed (no vision), for the note to the user.
	unseen []string
}

// buildContext makes the system prompt and messages of one model call: it
// loads everything the session's summary does not cover, lets buildWindow
// decide what is sent, and folds what is not sent into the session's
// summary (older turns) or ts (this turn's earlier steps). A summary that
// fails leaves the window as decided, which is valid on its own; what it
// should have covered stays in the history and is summarised by a later
// call.
func (r *Runtime) buildContext(ctx context.Context, call ModelCall, q QueuedInbound, sess *Session, ts *turnSummary) (string, []llm.Message, error) {
	stored, err := r.Store.Recent(ctx, sess.ID, 0)
	if err != nil {
		return "", nil, fmt.Errorf("load history: %w", err)
	}
	w := buildWindow(stored, ts.upTo, llm.Message{Role: llm.RoleUser, Content: q.Text},
		windowLimits{Messages: r.limits.HistoryMessages, Tokens: r.limits.HistoryTokenBudget})
	if len(w.Compact) > 0 {
		summary, err := r.summarise(ctx, call, summaryPrompt, sess.Summary, w.Compact)
		if err == nil {
			err = r.Store.SetSummary(ctx, sess.ID, summary, w.CompactUpTo())
		}
		if err != nil {
			r.Log.Warn().Err(err).Int64("session", int64(sess.ID)).Int("messages", len(w.Compact)).
				Msg("history compaction failed; the older messages stay unsummarised until a later turn")
		} else {
			sess.Summary, sess.SummaryUpTo = summary, w.CompactUpTo()
		}
	}
	if len(w.Fold) > 0 {
		text, err := r.summarise(ctx, call, turnSummaryPrompt, ts.text, w.Fold)
		if err != nil {
			r.Log.Warn().Err(err).Int64("session", int64(sess.ID)).Int("messages", len(w.Fold)).
				Msg("summary of the turn's earlier steps failed; they are left out of this call")
		} else {
			ts.text, ts.upTo = text, w.FoldUpTo()
		}
	}
	system := r.SystemPrompt
	if sess.Summary != "" {
		system += "\n\nSummary of the earlier conversation:\n" + sess.Summary
	}
	if ts.text != "" {
		system += "\n\nSummary of the earlier steps of the current request:\n" + ts.text
	}
	msgs := make([]llm.Message, len(w.Messages))
	for i, m := range w.Messages {
		msgs[i] = m.Msg
	}
	msgs, unseen := r.withImages(ctx, msgs)
	for _, n := range unseen {
		if !slices.Contains(ts.unseen, n) {
			ts.unseen = append(ts.unseen, n)
		}
	}
	return system, msgs, nil
}

// errEmptySummary is a summary request answered with no text.
var errEmptySummary = errors.New("agent: the model returned an empty summary")

// summarise folds msgs into prev with the model, through the model path,
// and returns the new summary, redacted. A transcript longer than the
// history token budget is summarised in chunks, each folded into the
// summary of the ones before it, so that no request grows with the backlog.
func (r *Runtime) summarise(ctx context.Context, call ModelCall, prompt, prev string, msgs []windowMsg) (string, error) {
	call.Purpose = PurposeSummary
	chunk := max(r.limits.HistoryTokenBudget, 1000)
	for len(msgs) > 0 {
		var b strings.Builder
		n := 0
		for n < len(msgs) {
			line := transcriptLine(msgs[n].Msg)
			if n > 0 && llm.EstimateTokens(b.String())+llm.EstimateTokens(line) > chunk {
				break
			}
			b.WriteString(line)
			n++
		}
		msgs = msgs[n:]
		text := b.String()
		if prev != "" {
			text = "Earlier summary:\n" + prev + "\n\nConversation since:\n" + text
		}
		resp, err := r.complete(ctx, call, llm.Request{
			System:    prompt,
			Messages:  []llm.Message{{Role: llm.RoleUser, Content: text}},
			MaxTokens: 1024,
		})
		if err != nil {
			return "", err
		}
		summary := strings.TrimSpace(r.redact(ctx, call.Principal, resp.Message.Content, "summary"))
		if summary == "" {
			return "", errEmptySummary
		}
		prev = summary
	}
	return prev, nil
}

// transcriptLine is one message as a summary request shows it; a long
// content is cut (on a character boundary) to keep the request bounded.
func transcriptLine(m llm.Message) string {
	const maxLen = 2000
	text := m.Content
	for _, p := range m.Parts {
		switch p.Kind {
		case llm.PartImage:
			text += "\n[image " + p.Name + "]"
		default:
			text += "\n" + p.Text
		}
	}
	if len(text) > maxLen {
		cut := maxLen
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + " …"
	}
	text = strings.ReplaceAll(text, "\n", "\n  ")
	switch m.Role {
	case llm.RoleTool:
		return fmt.Sprintf("tool %s result: %s\n", m.ToolName, text)
	case llm.RoleAssistant:
		var calls []string
		for _, c := range m.ToolCalls {
			calls = append(calls, c.Name)
		}
		if len(calls) > 0 {
			return fmt.Sprintf("assistant (called %s): %s\n", strings.Join(calls, ", "), text)
		}
	}
	return fmt.Sprintf("%s: %s\n", m.Role, text)
}

func messageTokens(m llm.Message) int {
	n := llm.EstimateTokens(m.Content) + 4
	for _, p := range m.Parts {
		if p.Kind == llm.PartImage {
			n += llm.ImageTokens
		} else {
			n += llm.EstimateTokens(p.Text)
		}
	}
	for _, c := range m.ToolCalls {
		n += llm.EstimateTokens(c.Name) + llm.EstimateTokens(c.Arguments)
	}
	return n
}
