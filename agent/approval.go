package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// ApprovalRequest is a tool call, or one request inside it, that needs the
// session owner's approval before it runs.
type ApprovalRequest struct {
	Key    SessionKey
	Turn   TurnID
	CallID string
	Tool   string
	// Description names the action in one line ("POST
	// https://api.github.com/repos/o/r/issues", "run tool deploy"). With
	// Turn and CallID it tells the requests of one call apart, so a
	// resumed call finds its approval again.
	Description string
	// Method, Host and Path describe the HTTP request to approve, for a
	// request of a call: Path with the query's names but not their values.
	Method, Host, Path string
	// Args are the call's arguments, for the approval of a whole call.
	Args json.RawMessage
	// Reason is set for a request asked because the turn read untrusted
	// content (see Runtime.Taint): why it is asked. Path then holds the
	// query's values too, since they are the data that would leave;
	// URLBytes and BodyBytes are the lengths of the whole URL and body.
	Reason              string
	URLBytes, BodyBytes int
}

// NotifyPrivately shows n to key's principal only, in the conversation
// of turn, through a channel that can (Noticer). ok is false when the
// channel cannot show a private message.
func (r *Runtime) NotifyPrivately(ctx context.Context, key SessionKey, turn TurnID, n Notice) (bool, error) {
	r.init()
	r.mu.Lock()
	ch := r.channels[key.Principal.Platform]
	replyTo := r.replyTo[turn]
	r.mu.Unlock()
	nc, ok := ch.(Noticer)
	if !ok {
		return false, nil
	}
	if err := nc.NoticePrivately(ctx, key, replyTo, n); err != nil {
		return false, err
	}
	return true, nil
}

// RequestApproval asks the owner of req.Key and waits for the answer. The
// approval is persisted first, so a restart keeps it: the resumed turn asks
// again with the same description and finds the same approval (and its
// decision, if one was made), and the channel shows it again in the
// platform message it returned the first time. What the owner is shown
// (the description, the request's method, host and path, or the call's
// arguments) is redacted for their secrets and known token formats and
// bounded here, so that every channel shows the same safe text. It is denied when the channel cannot ask,
// when the owner denies, and when it expires (ApprovalTimeout, or the end of
// the turn). When the runtime is stopping it returns an error at once and
// the approval stays pending: the call is abandoned, not recorded, and the
// resumed turn runs it again, which asks again.
func (r *Runtime) RequestApproval(ctx context.Context, req ApprovalRequest) (bool, error) {
	r.init()
	r.mu.Lock()
	ch := r.channels[req.Key.Principal.Platform]
	replyTo := r.replyTo[req.Turn]
	r.mu.Unlock()
	asker, ok := ch.(Asker)
	if !ok {
		return false, nil
	}

	timeout := r.ApprovalTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	// What the owner is shown is redacted here, once, so that every
	// channel shows the same and none can forget to.
	a, _, err := r.Store.CreateApproval(ctx, Approval{
		Turn: req.Turn, CallID: req.CallID, Tool: req.Tool,
		Description: clip(visible(r.redact(ctx, req.Key.Principal, req.Description, "approval")), 500),
		Detail:      r.approvalDetail(ctx, req),
		Key:         req.Key, ReplyTo: replyTo, ExpiresAt: r.Now().Add(timeout),
	})
	if err != nil {
		return false, fmt.Errorf("agent: request approval: %w", err)
	}
	switch a.State {
	case ApprovalApproved:
		return true, nil
	case ApprovalDenied, ApprovalExpired:
		return false, nil
	}
	if r.isStopping() || released(ctx) {
		// Asked during the shutdown's drain: nothing was sent yet, and the
		// approval is persisted, so the resumed turn runs the call again and
		// asks then.
		r.abandon(req.Turn, req.CallID)
		return false, errShutdown
	}

	wait := make(chan ApprovalState, 1)
	r.mu.Lock()
	r.waiters[a.ID] = append(r.waiters[a.ID], wait)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		ws := r.waiters[a.ID]
		for i, w := range ws {
			if w == wait {
				r.waiters[a.ID] = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(r.waiters[a.ID]) == 0 {
			delete(r.waiters, a.ID)
		}
	}()

	// A decision may come as soon as the prompt is posted, before its
	// message is stored: announce then waits for the message (ask.done).
	ask := &asking{done: make(chan struct{})}
	r.mu.Lock()
	r.asks[a.ID] = ask
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.asks[a.ID] == ask {
			delete(r.asks, a.ID)
		}
	}()
	msg, err := asker.AskApproval(ctx, promptOf(a))
	if err == nil && msg != "" && msg != a.Message {
		if err := r.Store.SetApprovalMessage(context.WithoutCancel(ctx), a.ID, msg); err != nil {
			r.Log.Warn().Err(err).Int64("approval", int64(a.ID)).Msg("could not store the approval prompt's message; after a restart it is posted again")
		}
	}
	ask.message = msg
	close(ask.done)
	if err != nil && released(ctx) {
		r.abandon(req.Turn, req.CallID)
		return false, errShutdown
	}
	if err != nil {
		r.Log.Warn().Err(err).Int64("approval", int64(a.ID)).Msg("could not ask for approval; denying")
		r.settle(context.WithoutCancel(ctx), a.ID, ApprovalDenied, "")
		return false, nil
	}
	timer := time.NewTimer(max(a.ExpiresAt.Sub(r.Now()), 0))
	defer timer.Stop()
	select {
	case st := <-wait:
		return st == ApprovalApproved, nil
	case <-timer.C:
	case <-r.stopping:
		r.abandon(req.Turn, req.CallID)
		return false, errShutdown
	case <-ctx.Done():
		if released(ctx) {
			// Its Scope ended: the turn resumes where its session is
			// served now, and asks there.
			r.abandon(req.Turn, req.CallID)
			return false, ctx.Err()
		}
		select {
		case <-r.stopping:
			r.abandon(req.Turn, req.CallID)
			return false, ctx.Err()
		default:
		}
	}
	st := r.settle(context.WithoutCancel(ctx), a.ID, ApprovalExpired, "")
	return st == ApprovalApproved, nil
}

// settle moves a pending approval to state, wakes its waiters and tells
// the channel. It returns the approval's final state (a concurrent
// decision may have won).
func (r *Runtime) settle(ctx context.Context, id ApprovalID, state ApprovalState, by string) ApprovalState {
	a, changed, err := r.Store.DecideApproval(ctx, id, state, by)
	if err != nil {
		r.Log.Error().Err(err).Int64("approval", int64(id)).Msg("settle approval")
		return ApprovalDenied
	}
	if changed {
		r.announce(ctx, a)
	}
	return a.State
}

// asking is a prompt being posted: done is closed when AskApproval has
// returned, and message is then the message it returned.
type asking struct {
	done    chan struct{}
	message string
}

// askWait bounds how long announce waits for a prompt being posted.
const askWait = 10 * time.Second

// announce wakes the waiters of a decided approval and updates the prompt.
func (r *Runtime) announce(ctx context.Context, a Approval) {
	r.mu.Lock()
	// Before the waiters wake: RequestApproval forgets the ask when it
	// returns.
	ask := r.asks[a.ID]
	for _, w := range r.waiters[a.ID] {
		select {
		case w <- a.State:
		default:
		}
	}
	ch := r.channels[a.Key.Principal.Platform]
	r.mu.Unlock()
	if a.Message == "" && ask != nil {
		// Decided while its prompt was being posted (a quick click): the
		// outcome goes to the message the prompt is in.
		t := time.NewTimer(askWait)
		select {
		case <-ask.done:
			a.Message = ask.message
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	if asker, ok := ch.(Asker); ok {
		var by Principal
		if a.DecidedBy != "" {
			by, _ = ParsePrincipal(a.DecidedBy)
		}
		if err := asker.ApprovalDone(ctx, promptOf(a), a.State, by); err != nil {
			r.Log.Warn().Err(err).Int64("approval", int64(a.ID)).Msg("could not show the approval's outcome")
		}
	}
}

func promptOf(a Approval) ApprovalPrompt {
	return ApprovalPrompt{ID: a.ID, Key: a.Key, ReplyTo: a.ReplyTo, Tool: a.Tool, Description: a.Description,
		Detail: a.Detail, ExpiresAt: a.ExpiresAt, Message: a.Message}
}

// Bounds of an approval's detail besides MaxApprovalArgs, in bytes.
const (
	maxApprovalHost = 300
	maxApprovalPath = 500
	// maxApprovalReason bounds why a tainted turn's request is asked.
	maxApprovalReason = 600
	// approvalRedactSlack is how much of the arguments past what is shown
	// is redacted with it, so that a secret that begins within the shown
	// part is found whole (and a huge argument is not scanned whole).
	approvalRedactSlack = 16 << 10
)

// approvalDetail is what the owner is shown of req: the request's method,
// host and path, or the call's arguments as compact JSON, each redacted
// for the owner's secrets and known token formats, then bounded.
func (r *Runtime) approvalDetail(ctx context.Context, req ApprovalRequest) ApprovalDetail {
	p := req.Key.Principal
	d := ApprovalDetail{
		Method: clip(visible(req.Method), 16),
		Host:   clip(visible(r.redact(ctx, p, req.Host, "approval")), maxApprovalHost),
		Path:   clip(visible(r.redact(ctx, p, req.Path, "approval")), maxApprovalPath),
	}
	if req.Reason != "" {
		d.Reason = clip(visible(r.redact(ctx, p, req.Reason, "approval")), maxApprovalReason)
		d.URLBytes, d.BodyBytes = max(req.URLBytes, 0), max(req.BodyBytes, 0)
		if !isASCII(d.Host) {
			d.Reason += " (the host is not written in ASCII: it is not the host it may look like)"
		} else if strings.Contains(strings.ToLower(d.Host), "xn--") {
			d.Reason += " (the host is a name written in another script, shown in its xn-- form: check it is the one you mean)"
		}
	}
	if len(req.Args) == 0 {
		return d
	}
	args := compactArgs(req.Args)
	head := args
	if len(head) > MaxApprovalArgs+approvalRedactSlack {
		head = head[:MaxApprovalArgs+approvalRedactSlack]
	}
	shown := r.redact(ctx, p, head, "approval")
	d.Args = cut(shown, MaxApprovalArgs)
	d.ArgsOmitted = len(shown) - len(d.Args) + len(args) - len(head)
	return d
}

// isASCII reports whether s is plain ASCII.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// compactArgs is raw as compact JSON, with every control, format (such as
// a right-to-left override or an invisible tag character) and line or
// paragraph separator character written as a \u escape, so that what a
// person reads is what the tool gets: the JSON still means the same.
// Arguments that are not JSON are shown as one JSON string.
func compactArgs(raw []byte) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		b.Reset()
		q, _ := json.Marshal(strings.ToValidUTF8(string(raw), "\uFFFD"))
		b.Write(q)
	}
	s := strings.ToValidUTF8(plainHTML(b.String()), "\uFFFD")
	if !strings.ContainsFunc(s, hiddenRune) {
		return s
	}
	var out strings.Builder
	for _, c := range s {
		if !hiddenRune(c) {
			out.WriteRune(c)
			continue
		}
		if r1, r2 := utf16.EncodeRune(c); r1 != utf8.RuneError {
			fmt.Fprintf(&out, `\u%04x\u%04x`, r1, r2)
		} else {
			fmt.Fprintf(&out, `\u%04x`, c)
		}
	}
	return out.String()
}

// plainHTML writes the escapes \u003c, \u003e and \u0026 of JSON text
// (Go's encoder writes < > & so) as the characters they stand for, which
// the JSON means the same with and a person reads more easily; each
// channel escapes them for its platform.
func plainHTML(s string) string {
	if !strings.Contains(s, `\u00`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		if s[i+1] == 'u' && i+6 <= len(s) {
			switch strings.ToLower(s[i+2 : i+6]) {
			case "003c":
				b.WriteByte('<')
				i += 5
				continue
			case "003e":
				b.WriteByte('>')
				i += 5
				continue
			case "0026":
				b.WriteByte('&')
				i += 5
				continue
			}
		}
		// Any other escape, \\ included, stays as it is.
		b.WriteString(s[i : i+2])
		i++
	}
	return b.String()
}

// visible is s with every hidden character (hiddenRune) and invalid byte
// shown as U+FFFD, so that a terminal or a chat shows what is there.
func visible(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if !strings.ContainsFunc(s, hiddenRune) {
		return s
	}
	return strings.Map(func(c rune) rune {
		if hiddenRune(c) {
			return '\uFFFD'
		}
		return c
	}, s)
}

// hiddenRune reports whether c changes how the text around it looks, or is
// not seen: control and format characters, line and paragraph separators.
func hiddenRune(c rune) bool {
	return unicode.IsControl(c) || unicode.Is(unicode.Cf, c) || c == '\u2028' || c == '\u2029'
}

// clip cuts s to at most n bytes on a character boundary, marking a cut
// with "…".
func clip(s string, n int) string {
	if c := cut(s, n); len(c) < len(s) {
		return c + "…"
	}
	return s
}

// cut is the longest prefix of s of at most n bytes that ends on a
// character boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.RuneStart(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	if len(s) > 0 {
		if r, size := utf8.DecodeLastRuneInString(s); r == utf8.RuneError && size <= 1 {
			s = s[:len(s)-1]
		}
	}
	return s
}

// Decide records the owner's answer to an approval: compare-and-set from
// pending, so a double click or a second person changes nothing. It returns
// the approval's state after the call: ErrNotOwner when by is not the
// session's owner, ErrDecided (with the existing state) when it was decided
// already, ErrUnknownApproval for an unknown id.
func (r *Runtime) Decide(ctx context.Context, id ApprovalID, by Principal, approve bool) (ApprovalState, error) {
	r.init()
	a, err := r.Store.GetApproval(ctx, id)
	if err != nil {
		return "", fmt.Errorf("agent: decide approval %d: %w", id, err)
	}
	if a.Key.Principal != by {
		return a.State, ErrNotOwner
	}
	if a.State != ApprovalPending {
		return a.State, ErrDecided
	}
	state := ApprovalDenied
	if approve {
		state = ApprovalApproved
	}
	if !r.Now().Before(a.ExpiresAt) {
		state = ApprovalExpired
	}
	a, changed, err := r.Store.DecideApproval(ctx, id, state, by.String())
	if err != nil {
		return "", fmt.Errorf("agent: decide approval %d: %w", id, err)
	}
	if !changed {
		return a.State, ErrDecided
	}
	r.announce(ctx, a)
	if n, ok := r.Dispatch.(DecisionNotifier); ok {
		// The turn waiting for it may run in another process.
		n.Decided(ctx, id)
	}
	return a.State, nil
}

// amendLocal is Amend of a message queued in this process.
//
// The store is written without r.mu held, so queueing and the other
// sessions go on meanwhile. The message is marked as being amended first:
// its session's worker does not take it until the amendment is applied to
// the queue (or failed), so the store and the queue still change together,
// and a second Amend of the same message waits for the first.
func (r *Runtime) amendLocal(ctx context.Context, dedupeKey string, a Amendment) (bool, error) {
	var (
		qu   *queue
		q    QueuedInbound
		done chan struct{}
	)
	for {
		r.mu.Lock()
		var ok bool
		qu, q, ok = r.queuedLocked(dedupeKey)
		if !ok {
			r.mu.Unlock()
			return false, nil
		}
		busy := qu.amending[q.ID]
		if busy == nil {
			done = make(chan struct{})
			if qu.amending == nil {
				qu.amending = make(map[InboundID]chan struct{})
			}
			qu.amending[q.ID] = done
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	// The mark ends however Amend returns; apply, when set, changes the
	// queue in the same critical section. The message is still queued then:
	// only the worker takes it, and it waits while the mark is set.
	var apply func()
	defer func() {
		r.mu.Lock()
		if apply != nil {
			apply()
		}
		delete(qu.amending, q.ID)
		r.mu.Unlock()
		close(done)
	}()

	if !a.Cancel {
		a.Text = r.redact(ctx, q.Key.Principal, a.Text, "inbound")
	}
	_, changed, err := r.Store.AmendInbound(ctx, dedupeKey, a)
	if err != nil || !changed {
		return false, err
	}
	apply = func() {
		for i, it := range qu.items {
			if it.ID != q.ID {
				continue
			}
			if a.Cancel {
				qu.items = append(qu.items[:i], qu.items[i+1:]...)
				r.forgetLocked(it.ID)
				r.addPendingLocked(-1)
			} else {
				qu.items[i].Text = a.Text
			}
			break
		}
	}
	return true, nil
}

// queuedLocked finds the queued message with dedupeKey and its queue. ok is
// false when it is unknown or a worker has taken it (its turn started).
func (r *Runtime) queuedLocked(dedupeKey string) (qu *queue, q QueuedInbound, ok bool) {
	for _, qu := range r.queues {
		if qu.current == dedupeKey {
			return nil, QueuedInbound{}, false
		}
		for _, q := range qu.items {
			if q.DedupeKey == dedupeKey {
				return qu, q, true
			}
		}
	}
	return nil, QueuedInbound{}, false
}

// callRef names one tool call of one turn.
type callRef struct {
	turn TurnID
	call string
}

// abandon marks a call whose approval wait the shutdown ended: its result
// (a refusal the person never gave) must not be recorded.
func (r *Runtime) abandon(t TurnID, call string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.abandoned[callRef{t, call}] = true
}

// wasAbandoned reports, and forgets, whether abandon marked the call.
func (r *Runtime) wasAbandoned(t TurnID, call string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok := r.abandoned[callRef{t, call}]
	delete(r.abandoned, callRef{t, call})
	return ok
}
