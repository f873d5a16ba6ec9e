package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent/llm"
)

// errShutdown marks a turn cut short because the process is stopping.
var errShutdown = errors.New("agent: shutting down")

// outcomeFenced is the outcome of a turn that is not finished because
// another process has taken its session over (ErrFenced): that process
// runs it, and delivers its reply.
const outcomeFenced = "fenced"

// turn runs one accepted message and persists its reply. finished is false
// when the turn was interrupted by shutdown and must resume later, or was
// fenced (outcome outcomeFenced).
func (r *Runtime) turn(ctx context.Context, q QueuedInbound) (rep Reply, outcome string, finished bool) {
	log := r.Log.With().Int64("inbound", int64(q.ID)).Str("principal", q.Key.Principal.String()).Logger()
	finishStep := func(t TurnID, state TurnState, kind ReplyKind, text, outcome string, last *Step) (Reply, string, bool) {
		if state == TurnFailed && released(ctx) {
			// The failure is the interruption: the turn resumes where its
			// session is served now.
			return Reply{}, "", false
		}
		text = r.redact(ctx, q.Key.Principal, text, "reply")
		rep := Reply{Key: q.Key, ReplyTo: q.ReplyTo, Kind: kind, Text: text, Inbound: q.ID, Turn: t}
		// The reply goes where the inbound came from: a zero Key tells the
		// store so, sparing it the look-up of the principal.
		stored := rep
		stored.Key, stored.ReplyTo = SessionKey{}, ""
		// The reply must be persisted even if the turn's context ended.
		id, err := r.Store.FinishTurn(context.WithoutCancel(ctx), q.ID, t, state, stored, last)
		if errors.Is(err, ErrFenced) {
			log.Warn().Msg("reply not persisted: another process has taken this session over and answers it")
			return Reply{}, outcomeFenced, false
		}
		if err != nil {
			log.Error().Err(err).Msg("persist reply")
			return Reply{}, "", false
		}
		rep.ID = id
		rep.CreatedAt = r.Now()
		return rep, outcome, true
	}
	finish := func(t TurnID, state TurnState, kind ReplyKind, text, outcome string) (Reply, string, bool) {
		return finishStep(t, state, kind, text, outcome, nil)
	}

	if !q.Running && r.Access != nil {
		// Before commands, too: a denied user is not served at all. A
		// failure to read the list refuses (fails closed).
		denied, err := r.Access.Denied(ctx, q.Key.Principal)
		if err != nil && ctx.Err() != nil {
			// The turn was stopped (this replica lost the session's
			// partition, or the process stops): nothing is refused, the
			// message stays for whoever runs the session next.
			log.Info().Msg("turn stopped before it began: its context ended; the message stays queued")
			return Reply{}, "", false
		}
		if err != nil {
			ref := NewRef()
			log.Error().Err(err).Str("ref", ref).Msg("read the deny list; the message is refused")
			return finish(0, TurnFailed, ReplyError, fmt.Sprintf("Sorry, I could not check your access (ref %s).", ref), "error")
		}
		if denied {
			return finish(0, TurnDone, ReplyNotice, deniedText, "denied")
		}
	}
	if !q.Running {
		if cmd, ok := r.parseCommand(q.Text); ok {
			text, err := r.command(ctx, q, cmd)
			if err != nil {
				ref := NewRef()
				log.Error().Err(err).Str("ref", ref).Str("command", cmd.name).Msg("command failed")
				return finish(0, TurnFailed, ReplyError, fmt.Sprintf("Sorry, /%s failed (ref %s).", cmd.name, ref), "error")
			}
			return finish(0, TurnDone, ReplyNotice, text, "command")
		}
		if !r.allowTurn(ctx, q.Key.Principal) {
			return finish(0, TurnDone, ReplyNotice, fmt.Sprintf(
				"You are sending messages faster than I can take them (at most %d a minute). "+
					"Please wait a moment and send that again.", r.limits.RatePerMinute), "rate_limited")
		}
		if msg := r.overBudget(ctx, q, &log); msg != "" {
			return finish(0, TurnDone, ReplyNotice, msg, "over_budget")
		}
	}

	user := llm.Message{Role: llm.RoleUser, Content: q.Text}
	var fileNotes []string
	var threadTaint, fileTaint string
	if !q.Running {
		// The thread's new messages enter with the question (thread.go);
		// a resumed turn has its question stored already.
		user.Content, threadTaint = r.withThread(ctx, q, &log)
		if len(q.Files) > 0 {
			// Downloaded before the turn starts: a crash meanwhile leaves
			// the message queued, and its files are fetched again.
			user.Parts, fileNotes, fileTaint = r.ingest(ctx, q)
		}
	}
	tid, sess, resumed, err := r.Store.StartTurn(ctx, q.ID, &user)
	if errors.Is(err, ErrFenced) {
		// The session is another process's now, which starts the turn.
		log.Warn().Msg("turn not started: another process has taken this session over")
		return Reply{}, outcomeFenced, false
	}
	if err != nil {
		ref := NewRef()
		log.Error().Err(err).Str("ref", ref).Msg("start turn")
		return finish(0, TurnFailed, ReplyError, fmt.Sprintf("Sorry, I could not start on that (ref %s).", ref), "error")
	}
	log = log.With().Int64("turn", int64(tid)).Logger()
	if resumed {
		log.Info().Msg("resuming a turn interrupted by a restart")
	}

	r.mu.Lock()
	r.replyTo[tid] = q.ReplyTo
	r.mu.Unlock()
	r.startTaint(ctx, tid, sess)
	// Before any model call: other people's messages, or a file's
	// content, are in the question.
	if threadTaint != "" {
		r.Taint(ctx, tid, threadTaint)
	}
	if fileTaint != "" {
		r.Taint(ctx, tid, fileTaint)
	}
	if resumed && r.TurnTaint(tid) == "" {
		// A crash between StartTurn and the marks above left the
		// question stored with its untrusted content, unmarked.
		if src := r.storedTaint(ctx, sess.ID, tid); src != "" {
			r.Taint(ctx, tid, src)
		}
	}
	defer func() {
		r.mu.Lock()
		delete(r.replyTo, tid)
		r.mu.Unlock()
		r.endTaint(tid)
	}()
	tctx, cancel := context.WithTimeout(ctx, r.limits.TurnTimeout)
	defer cancel()
	r.mu.Lock()
	ch := r.channels[q.Key.Principal.Platform]
	r.mu.Unlock()
	if t, ok := ch.(Typer); ok {
		stop := t.Working(tctx, q.Key, q.ReplyTo)
		defer stop()
	}
	// Ended before the indicator stops, so that no tool's status is shown
	// after it was cleared.
	defer r.startStatus(tctx, tid, ch, q.Key, q.ReplyTo)()
	text, unseen, last, err := r.loop(tctx, q, tid, sess, resumed)
	switch {
	case err == nil:
		if len(unseen) > 0 && r.vision.tell(q.Key.Principal) {
			fileNotes = append(fileNotes, fmt.Sprintf("The model I use cannot see images, so I could not look at %s.", strings.Join(unseen, ", ")))
		}
		if len(fileNotes) > 0 {
			text = "Note: " + strings.Join(fileNotes, " ") + "\n\n" + text
		}
		if strings.Contains(q.Text, redactedMarker) {
			text = pastedSecretAdvice(r.hint(q.Key.Principal.Platform, CommandSecretAdd)) + "\n\n" + text
		}
		return finishStep(tid, TurnDone, ReplyAnswer, text, "answer", last)
	case ctx.Err() != nil || errors.Is(err, errShutdown):
		// The runtime is stopping; leave the turn running so it resumes.
		return Reply{}, "", false
	case errors.Is(err, ErrFenced):
		// The session is another process's now, which resumes the turn.
		log.Warn().Msg("turn stopped: another process has taken this session over")
		return Reply{}, outcomeFenced, false
	}
	ref := NewRef()
	log.Error().Err(err).Str("ref", ref).Msg("turn failed")
	return finish(tid, TurnFailed, ReplyError, userError(err, tctx, r.limits, ref, r.hint(q.Key.Principal.Platform, CommandNew)), "error")
}

// loop calls the model and the tools until the model answers without tool
// calls, the step limit is reached or the deadline passes. The final step,
// when there is one, is returned unrecorded: FinishTurn records it with the
// reply, in one transaction. unseen names the images the model was not
// shown for want of vision.
func (r *Runtime) loop(ctx context.Context, q QueuedInbound, tid TurnID, sess Session, resumed bool) (text string, unseen []string, last *Step, err error) {
	var ts turnSummary
	text, last, err = r.steps(ctx, q, tid, sess, resumed, &ts)
	return text, ts.unseen, last, err
}

func (r *Runtime) steps(ctx context.Context, q QueuedInbound, tid TurnID, sess Session, resumed bool, ts *turnSummary) (string, *Step, error) {
	var tools []llm.Tool
	if r.Tools != nil {
		var err error
		tools, err = r.Tools.Tools(ctx, q.Key.Principal)
		if err != nil {
			return "", nil, fmt.Errorf("list tools: %w", err)
		}
	}
	var stream *streamRedactor
	r.mu.Lock()
	ch := r.channels[q.Key.Principal.Platform]
	r.mu.Unlock()
	// A turn interrupted while it streamed is not streamed again: its
	// preview, posted before the restart, is the message its reply is
	// delivered into, and a second one would be left behind.
	if s, ok := ch.(Streamer); ok && q.Preview == "" {
		stream = &streamRedactor{emit: func(d string) { s.Stream(ctx, q.ID, q.Key, q.ReplyTo, d) },
			redact: func(t string) string { return r.redact(ctx, q.Key.Principal, t, "reply") }}
	}

	if resumed {
		if err := r.finishInterrupted(ctx, q, tid, sess, tools); err != nil {
			return "", nil, err
		}
	}
	call := ModelCall{Principal: q.Key.Principal, Session: sess.ID, Turn: tid, Purpose: PurposeTurn}
	for step := 1; step <= r.limits.MaxSteps; step++ {
		system, history, err := r.buildContext(ctx, call, q, &sess, ts)
		if err != nil {
			return "", nil, err
		}
		resp, err := r.complete(ctx, call, llm.Request{System: system, Messages: history, Tools: tools, OnDelta: stream.onDelta()})
		if err != nil && r.learnBlind(err, history) {
			// The model takes no images (Vision auto): the same step
			// again, with the images described.
			if system, history, err = r.buildContext(ctx, call, q, &sess, ts); err != nil {
				return "", nil, err
			}
			resp, err = r.complete(ctx, call, llm.Request{System: system, Messages: history, Tools: tools, OnDelta: stream.onDelta()})
		}
		stream.flush()
		if err != nil {
			return "", nil, err
		}
		msg := resp.Message
		msg.Role = llm.RoleAssistant
		// What the model wrote is stored and may be sent to tools: a secret
		// it produced (an invented token, say) is removed first.
		msg.Content = r.redact(ctx, q.Key.Principal, msg.Content, "reply")
		for i := range msg.ToolCalls {
			msg.ToolCalls[i].Arguments = r.redact(ctx, q.Key.Principal, msg.ToolCalls[i].Arguments, "tool_args")
		}
		st := &Step{Session: sess.ID, N: step, Model: r.LLM.Model(), Usage: resp.Usage, StopReason: resp.StopReason, Messages: []llm.Message{msg}}
		if len(msg.ToolCalls) == 0 {
			if strings.TrimSpace(msg.Content) == "" {
				return "(The model returned an empty answer. Try rephrasing, or " + r.hint(q.Key.Principal.Platform, CommandNew) + " to start over.)", st, nil
			}
			return msg.Content, st, nil
		}
		if err := r.Store.RecordStep(ctx, tid, *st); err != nil {
			return "", nil, err
		}
		results, changed, err := r.runTools(ctx, q, tid, step, tools, msg.ToolCalls)
		if err != nil {
			return "", nil, err
		}
		if changed {
			// A call changed what the user may use (they connected an
			// account): the next step offers the tools as they are now.
			if more, err := r.Tools.Tools(ctx, q.Key.Principal); err == nil {
				tools = more
			}
		}
		// The results are recorded (runTool); they go into the history even
		// when the turn's deadline passed during the calls, so that the next
		// turn reads them rather than an interrupted call.
		if err := r.Store.AppendMessages(context.WithoutCancel(ctx), sess.ID, tid, results...); err != nil {
			return "", nil, err
		}
	}
	return fmt.Sprintf("I stopped after %d steps without a final answer. Ask me to continue, or narrow the request.",
		r.limits.MaxSteps), nil, nil
}

// finishInterrupted completes the last step of a turn resumed after a
// restart, giving each of its tool calls without a result in the history
// one, in the order of the calls:
//   - a call whose result was recorded (it finished, and the process
//     stopped before the results were appended) gets that result;
//   - a call that was waiting for an approval (so had sent nothing that
//     changes anything) runs again;
//   - any other call was running and is reported to the model as
//     interrupted, never repeated.
func (r *Runtime) finishInterrupted(ctx context.Context, q QueuedInbound, tid TurnID, sess Session, tools []llm.Tool) error {
	stored, err := r.Store.Recent(ctx, sess.ID, 0)
	if err != nil {
		return fmt.Errorf("load history: %w", err)
	}
	last := -1
	for i, m := range stored {
		if m.Turn == tid && m.Message.Role == llm.RoleAssistant && len(m.Message.ToolCalls) > 0 {
			last = i
		}
	}
	if last < 0 {
		return nil
	}
	have := map[string]bool{}
	for _, m := range stored[last+1:] {
		if m.Message.Role != llm.RoleTool {
			return nil // the turn went on after this step
		}
		have[m.Message.ToolCallID] = true
	}
	calls := stored[last].Message.ToolCalls
	missing := 0
	for _, c := range calls {
		if !have[c.ID] {
			missing++
		}
	}
	if missing == 0 {
		return nil // the crash came during the next model call
	}
	recorded, err := r.Store.ToolResults(ctx, tid)
	if err != nil {
		return fmt.Errorf("load tool results: %w", err)
	}
	waiting := map[string]bool{}
	pending, err := r.Store.PendingApprovals(ctx)
	if err != nil {
		return err
	}
	for _, a := range pending {
		if a.Turn == tid {
			waiting[a.CallID] = true
		}
	}
	var (
		results []llm.Message
		rerun   []llm.ToolCall
		rerunAt []int // where each rerun's result goes in results
	)
	for _, c := range calls {
		if have[c.ID] {
			continue
		}
		res, ok := recorded[c.ID]
		switch {
		case ok:
			// Already recorded, and redacted, by runTool.
		case waiting[c.ID]:
			rerunAt = append(rerunAt, len(results))
			rerun = append(rerun, c)
			results = append(results, llm.Message{})
			continue
		default:
			res = ToolResult{Content: interruptedResult, IsError: true}
			if err := r.Store.FinishToolCall(ctx, tid, c.ID, res.Content, true); err != nil {
				r.Log.Warn().Err(err).Msg("record interrupted tool call")
			}
		}
		results = append(results, llm.Message{Role: llm.RoleTool, ToolCallID: c.ID, ToolName: c.Name, Content: res.Content, IsError: res.IsError})
	}
	if len(rerun) > 0 {
		more, _, err := r.runTools(ctx, q, tid, 0, tools, rerun)
		if err != nil {
			return err
		}
		for i, at := range rerunAt {
			results[at] = more[i]
		}
	}
	if len(results) == 0 {
		return nil
	}
	return r.Store.AppendMessages(ctx, sess.ID, tid, results...)
}

// runTools runs the calls of one step in parallel and returns their results
// in the order of the calls.
//
// A call cut short by the shutdown (its approval wait ended, or the grace
// ran out) abandons the step with errShutdown; the results of the other
// calls are recorded all the same, and the resumed turn uses them.
func (r *Runtime) runTools(ctx context.Context, q QueuedInbound, tid TurnID, step int, offered []llm.Tool, calls []llm.ToolCall) ([]llm.Message, bool, error) {
	results := make([]llm.Message, len(calls))
	var stopped, changed atomic.Bool
	sem := make(chan struct{}, r.limits.ToolParallelism)
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, ok := r.runTool(ctx, q, tid, step, offered, c)
			if !ok {
				stopped.Store(true)
			}
			if res.ToolsChanged {
				changed.Store(true)
			}
			results[i] = llm.Message{Role: llm.RoleTool, ToolCallID: c.ID, ToolName: c.Name, Content: res.Content, IsError: res.IsError}
		}()
	}
	wg.Wait()
	if stopped.Load() {
		return nil, false, errShutdown
	}
	return results, changed.Load(), nil
}

// runTool runs one call and records its result, also while the runtime
// stops: a call that finishes during the shutdown's grace is used when the
// turn resumes. ok is false, and nothing is recorded, when the shutdown cut
// the call short: its approval wait was abandoned (the resumed turn runs
// it again) or the grace ran out while it ran (the resumed turn reports it
// interrupted).
func (r *Runtime) runTool(ctx context.Context, q QueuedInbound, tid TurnID, step int, offered []llm.Tool, c llm.ToolCall) (res ToolResult, ok bool) {
	log := r.Log.With().Int64("turn", int64(tid)).Str("tool", c.Name).Str("call", c.ID).Logger()
	if err := r.Store.StartToolCall(ctx, tid, step, c); errors.Is(err, ErrFenced) {
		// The sessions are another process's now: it resumes the turn, and
		// the call must not run here.
		log.Warn().Msg("tool call not run: another process has taken this session over")
		return ToolResult{Content: interruptedResult, IsError: true}, false
	} else if err != nil {
		log.Error().Err(err).Msg("record tool call")
	}
	res = r.checkAndRun(ctx, q, tid, offered, c, &log)
	if r.wasAbandoned(tid, c.ID) || errors.Is(context.Cause(ctx), errShutdown) {
		return res, false
	}
	res.Content = r.redact(ctx, q.Key.Principal, res.Content, "tool_output")
	if res.File != nil {
		res = r.keepFile(context.WithoutCancel(ctx), q, tid, c.ID, res)
	}
	if res.Taint != "" {
		// Before the result is recorded: a turn resumed after it was
		// recorded is tainted by it.
		r.Taint(ctx, tid, TaintPrefixTool+c.Name+": "+res.Taint)
	}
	if err := r.Store.FinishToolCall(context.WithoutCancel(ctx), tid, c.ID, res.Content, res.IsError); errors.Is(err, ErrFenced) {
		log.Warn().Msg("tool result not recorded: another process has taken this session over")
	} else if err != nil {
		log.Error().Err(err).Msg("record tool result")
	}
	return res, true
}

func (r *Runtime) isStopping() bool {
	select {
	case <-r.stopping:
		return true
	default:
		return false
	}
}

func (r *Runtime) checkAndRun(ctx context.Context, q QueuedInbound, tid TurnID, offered []llm.Tool, c llm.ToolCall, log *zerolog.Logger) ToolResult {
	known := false
	for _, t := range offered {
		if t.Name == c.Name {
			known = true
			break
		}
	}
	if !known || r.Tools == nil {
		names := make([]string, len(offered))
		for i, t := range offered {
			names[i] = t.Name
		}
		avail := "none"
		if len(names) > 0 {
			avail = strings.Join(names, ", ")
		}
		return ToolResult{IsError: true, Content: fmt.Sprintf("unknown tool %q; available tools: %s", c.Name, avail)}
	}
	args := strings.TrimSpace(c.Arguments)
	if args == "" {
		args = "{}"
	}
	if !json.Valid([]byte(args)) {
		return ToolResult{IsError: true, Content: "the arguments are not valid JSON; call the tool again with a JSON object matching its schema"}
	}
	res, err := r.Tools.Run(ctx, ToolCall{ID: c.ID, Name: c.Name, Args: json.RawMessage(args), Key: q.Key, Turn: tid, Taint: r.TurnTaint(tid)})
	if err != nil {
		log.Warn().Err(err).Msg("tool call could not run")
		return ToolResult{IsError: true, Content: "the tool could not be run: " + shortReason(err)}
	}
	return res
}

// streamRedactor passes streamed text to a channel whole words at a time, so
// that a token split across deltas is still seen whole by the redactor.
type streamRedactor struct {
	emit   func(string)
	redact func(string) string
	held   string
}

func (s *streamRedactor) onDelta() func(string) {
	if s == nil {
		return nil
	}
	return func(d string) {
		s.held += d
		cut := strings.LastIndexAny(s.held, " \n\t")
		if cut < 0 {
			return
		}
		out := s.held[:cut+1]
		s.held = s.held[cut+1:]
		s.emit(s.redact(out))
	}
}

func (s *streamRedactor) flush() {
	if s == nil || s.held == "" {
		return
	}
	out := s.held
	s.held = ""
	s.emit(s.redact(out))
}

// redactedMarker starts the text that replaces a secret found in a message.
const redactedMarker = "[REDACTED:"

// pastedSecretAdvice is the notice for a message that had a secret in it;
// add is how the user's channel stores one.
func pastedSecretAdvice(add string) string {
	return "Your message contained what looks like a secret, so I removed it before storing " +
		"it or sending it anywhere. To let tools use a credential, store it in the vault instead: " +
		add + " (the value is asked for separately and never shown to the model)."
}

// shortReason is an error text short enough for the model.
func shortReason(err error) string {
	s := err.Error()
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// userError is what a chat user reads when a turn fails: short, actionable,
// with the reference id of the log line that has the details.
// newCmd is how the user's channel starts a fresh conversation.
func userError(err error, tctx context.Context, l Limits, ref, newCmd string) string {
	if errors.Is(tctx.Err(), context.DeadlineExceeded) {
		return fmt.Sprintf("Sorry, that took longer than the %s a turn may take, so I stopped. Try a smaller request. (ref %s)", l.TurnTimeout, ref)
	}
	switch llm.KindOf(err) {
	case llm.ErrRateLimit:
		return fmt.Sprintf("The model provider is rate limiting us right now. Please try again in a minute. (ref %s)", ref)
	case llm.ErrServer, llm.ErrUnreachable:
		return fmt.Sprintf("I could not reach the model just now. Please try again shortly. (ref %s)", ref)
	case llm.ErrTimeout:
		return fmt.Sprintf("The model took too long to answer. Please try again. (ref %s)", ref)
	case llm.ErrAuth, llm.ErrModel:
		return fmt.Sprintf("The gateway's model settings need attention from an operator. (ref %s)", ref)
	case llm.ErrBadResponse, llm.ErrBadRequest:
		return fmt.Sprintf("The model returned something I could not use. Please try again, or %s to start over. (ref %s)", newCmd, ref)
	}
	return fmt.Sprintf("Sorry, something went wrong on my side. (ref %s)", ref)
}
