package agent

import (
	"context"
	"time"

	"github.com/talonhq/talon/agent/llm"
)

// Purpose says why the runtime calls the model.
type Purpose string

// The purposes of model calls.
const (
	// PurposeTurn is a step of a turn: the call that answers the user or
	// asks for tools.
	PurposeTurn Purpose = "turn"
	// PurposeSummary folds older messages, or a long turn's earlier steps,
	// into a summary.
	PurposeSummary Purpose = "summary"
)

// ModelCall says for whom and why the model is called. Every request to the
// model carries one through the model path (Runtime.complete), which scrubs
// the request and meters the call.
type ModelCall struct {
	Principal Principal
	Session   SessionID
	// Turn is 0 for a call outside a turn.
	Turn    TurnID
	Purpose Purpose
}

// ModelUse is one finished model call as the model path meters it.
type ModelUse struct {
	ModelCall
	// Usage is what the provider reported; when it reported nothing for a
	// call that succeeded, it is estimated from the request and the answer
	// (about four bytes a token), and Estimated is set.
	Usage     llm.Usage
	Estimated bool
	// Duration is how long the call took, retries included.
	Duration time.Duration
	// Error is the kind of failure (llm.ErrorKind's String), "" when the
	// call succeeded.
	Error string
}

// UsageLog records model calls made outside a turn's steps.
type UsageLog interface {
	// RecordModelUse adds one call of model, for session s, with the
	// tokens its provider reported, to the usage sums.
	RecordModelUse(ctx context.Context, s SessionID, model string, u llm.Usage) error
}

// complete is the model path: every request to the model, whatever asks
// for it (a turn's step, a summary, anything added later), is scrubbed of
// secrets here as the last line of defence, sent, and metered here, once.
// Nothing else in the runtime calls r.LLM.Complete (a test keeps it so).
func (r *Runtime) complete(ctx context.Context, call ModelCall, req llm.Request) (*llm.Response, error) {
	req = r.scrubRequest(ctx, call.Principal, req)
	start := r.Now()
	resp, err := r.LLM.Complete(ctx, req)
	use := ModelUse{ModelCall: call, Duration: r.Now().Sub(start)}
	if err != nil {
		use.Error = llm.KindOf(err).String()
	} else {
		use.Usage = resp.Usage
		if use.Usage == (llm.Usage{}) {
			use.Usage, use.Estimated = estimateUsage(req, resp), true
		}
	}
	r.Metrics.ModelUsed(use)
	if err == nil && call.Purpose != PurposeTurn && r.UsageLog != nil && call.Session != 0 {
		// What the provider reported, as a step records it. A failure
		// costs the count, not the call.
		if err := r.UsageLog.RecordModelUse(context.WithoutCancel(ctx), call.Session, r.LLM.Model(), resp.Usage); err != nil {
			r.Log.Warn().Err(err).Str("purpose", string(call.Purpose)).Msg("usage of a model call not counted")
		}
	}
	return resp, err
}

// estimateUsage guesses the tokens of a call whose provider did not count
// them.
func estimateUsage(req llm.Request, resp *llm.Response) llm.Usage {
	in := llm.EstimateTokens(req.System)
	for _, m := range req.Messages {
		in += messageTokens(m)
	}
	for _, t := range req.Tools {
		in += llm.EstimateTokens(t.Name) + llm.EstimateTokens(t.Description) + llm.EstimateTokens(string(t.Parameters))
	}
	return llm.Usage{InputTokens: in, OutputTokens: messageTokens(resp.Message)}
}

// scrubRequest is the last line of defence: every text in a request to the
// model is checked for secrets once more. A hit here means an earlier check
// missed it, or the secret was stored after the text was written, so it is
// counted separately.
func (r *Runtime) scrubRequest(ctx context.Context, p Principal, req llm.Request) llm.Request {
	if r.Redactor == nil {
		return req
	}
	req.System = r.redact(ctx, p, req.System, "llm_request")
	msgs := make([]llm.Message, len(req.Messages))
	for i, m := range req.Messages {
		m.Content = r.redact(ctx, p, m.Content, "llm_request")
		if len(m.Parts) > 0 {
			parts := make([]llm.Part, len(m.Parts))
			for j, pt := range m.Parts {
				pt.Text = r.redact(ctx, p, pt.Text, "llm_request")
				parts[j] = pt
			}
			m.Parts = parts
		}
		if len(m.ToolCalls) > 0 {
			calls := make([]llm.ToolCall, len(m.ToolCalls))
			for j, c := range m.ToolCalls {
				c.Arguments = r.redact(ctx, p, c.Arguments, "llm_request")
				calls[j] = c
			}
			m.ToolCalls = calls
		}
		msgs[i] = m
	}
	req.Messages = msgs
	return req
}
