package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/talonhq/talon/agent/llm"
)

// interruptedResult is what the model reads for a tool call whose result
// was lost because the process stopped during it. The call is never run
// again: it may have had side effects.
const interruptedResult = "interrupted: the gateway restarted during this call; it was not retried and may or may not have taken effect"

const summaryPrompt = `You maintain the memory of a chat assistant. Summarise the conversation below so the
assistant can continue it: facts the user stated, decisions, open questions, results of tool calls that
still matter. Write plain sentences, at most 250 words. Do not include credentials or tokens.`

// history returns the system prompt and the messages to send for a step.
// On the first step of a turn it compacts the session when its window is
// over budget.
func (r *Runtime) history(ctx context.Context, sess *Session, compact bool) (string, []llm.Message, error) {
	window := r.limits.HistoryMessages
	stored, err := r.Store.Recent(ctx, sess.ID, window*4)
	if err != nil {
		return "", nil, fmt.Errorf("load history: %w", err)
	}
	if compact && (len(stored) > window || storedTokens(stored) > r.limits.HistoryTokenBudget) {
		if r.compact(ctx, sess, stored) {
			if stored, err = r.Store.Recent(ctx, sess.ID, window*4); err != nil {
				return "", nil, fmt.Errorf("load history: %w", err)
			}
		}
	}
	if len(stored) > window {
		stored = stored[len(stored)-window:]
	}
	msgs := make([]llm.Message, len(stored))
	for i, m := range stored {
		msgs[i] = m.Message
	}
	system := r.SystemPrompt
	if sess.Summary != "" {
		system += "\n\nSummary of the earlier conversation:\n" + sess.Summary
	}
	return system, repair(msgs), nil
}

// compact summarises the older part of stored into the session's summary.
// It reports whether it did; a failure leaves the history as it was.
func (r *Runtime) compact(ctx context.Context, sess *Session, stored []StoredMessage) bool {
	keepMax, budget := max(r.limits.HistoryMessages/2, 1), r.limits.HistoryTokenBudget/2
	split := len(stored)
	tokens := 0
	for split > 0 {
		t := messageTokens(stored[split-1].Message)
		if len(stored)-split >= keepMax || (tokens+t > budget && split < len(stored)) {
			break
		}
		tokens += t
		split--
	}
	// Never start the kept part in the middle of a tool exchange.
	for split > 0 && split < len(stored) && stored[split].Message.Role == llm.RoleTool {
		split--
	}
	if split == 0 {
		return false
	}
	head := stored[:split]
	var b strings.Builder
	if sess.Summary != "" {
		b.WriteString("Earlier summary:\n" + sess.Summary + "\n\nConversation since:\n")
	}
	for _, m := range head {
		b.WriteString(transcriptLine(m.Message))
	}
	resp, err := r.LLM.Complete(ctx, llm.Request{
		System:    summaryPrompt,
		Messages:  []llm.Message{{Role: llm.RoleUser, Content: b.String()}},
		MaxTokens: 1024,
	})
	if err != nil {
		r.Metrics.LLMError(llm.KindOf(err).String())
		r.Log.Warn().Err(err).Int64("session", int64(sess.ID)).Msg("history compaction failed; using the recent window only")
		return false
	}
	summary := strings.TrimSpace(resp.Message.Content)
	if summary == "" {
		return false
	}
	upTo := head[len(head)-1].ID
	if err := r.Store.SetSummary(ctx, sess.ID, summary, upTo); err != nil {
		r.Log.Warn().Err(err).Msg("store compaction summary")
		return false
	}
	sess.Summary, sess.SummaryUpTo = summary, upTo
	return true
}

func transcriptLine(m llm.Message) string {
	const maxLen = 2000
	text := m.Content
	if len(text) > maxLen {
		text = text[:maxLen] + " …"
	}
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
	for _, c := range m.ToolCalls {
		n += llm.EstimateTokens(c.Name) + llm.EstimateTokens(c.Arguments)
	}
	return n
}

func storedTokens(ms []StoredMessage) int {
	n := 0
	for _, m := range ms {
		n += messageTokens(m.Message)
	}
	return n
}

// repair makes a history window valid for every provider: it starts with a
// user message, every tool call has exactly one result right after its
// assistant message, and no result is orphaned.
func repair(in []llm.Message) []llm.Message {
	for len(in) > 0 && in[0].Role != llm.RoleUser {
		in = in[1:]
	}
	out := make([]llm.Message, 0, len(in))
	for i := 0; i < len(in); i++ {
		m := in[i]
		if m.Role == llm.RoleTool {
			continue // orphan: its assistant message was not right before it
		}
		out = append(out, m)
		if m.Role != llm.RoleAssistant || len(m.ToolCalls) == 0 {
			continue
		}
		results := map[string]llm.Message{}
		for i+1 < len(in) && in[i+1].Role == llm.RoleTool {
			i++
			results[in[i].ToolCallID] = in[i]
		}
		for _, c := range m.ToolCalls {
			res, ok := results[c.ID]
			if !ok {
				res = llm.Message{Role: llm.RoleTool, ToolCallID: c.ID, ToolName: c.Name, Content: interruptedResult, IsError: true}
			}
			out = append(out, res)
		}
	}
	return out
}
