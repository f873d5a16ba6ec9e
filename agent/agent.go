package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/talonhq/talon/agent/llm"
)

// Principal is one person on one platform: the owner of sessions, secrets
// and rate limits. Written as "platform:workspace:user", e.g.
// "slack:T123:U456", "discord::1234", "terminal::local".
type Principal struct {
	Platform  string
	Workspace string
	User      string
}

func (p Principal) String() string { return p.Platform + ":" + p.Workspace + ":" + p.User }

// ParsePrincipal reads the "platform:workspace:user" form.
func ParsePrincipal(s string) (Principal, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return Principal{}, fmt.Errorf("principal %q: want platform:workspace:user, e.g. slack:T123:U456 or terminal::local", s)
	}
	return Principal{Platform: parts[0], Workspace: parts[1], User: parts[2]}, nil
}

// Conversation is a place on a platform: a DM or channel, and optionally a
// thread in it. The terminal has one conversation with empty fields.
type Conversation struct {
	Channel string
	Thread  string
}

// SessionKey names the conversation one principal has in one place. Two
// people in one thread have two keys, so their contexts never mix.
type SessionKey struct {
	Principal    Principal
	Conversation Conversation
}

func (k SessionKey) String() string {
	return k.Principal.String() + "/" + k.Conversation.Channel + "/" + k.Conversation.Thread
}

// Identifiers of persisted rows.
type (
	SessionID  int64
	InboundID  int64
	TurnID     int64
	ReplyID    int64
	ApprovalID int64
)

// Inbound is a message a channel received and wants answered.
type Inbound struct {
	// DedupeKey is unique per platform message ("slack:T1:C1:1700000000.000100").
	// A second Inbound with the same key is dropped.
	DedupeKey string
	Key       SessionKey
	Text      string
	// Files are the files attached to the message; a message may have
	// files and no text.
	Files []File
	// ReplyTo is opaque adapter data that tells it where to post the reply
	// (thread, message to edit, …). It is stored and handed back in Reply.
	ReplyTo    string
	ReceivedAt time.Time
	// Server is the Discord server (guild) the message was sent in: ""
	// in a direct message, and on platforms whose principal names its
	// workspace (Slack). Budgets.WorkspaceMonthly bounds each server.
	Server string
}

// QueuedInbound is an accepted Inbound with its row id and state.
type QueuedInbound struct {
	ID InboundID
	Inbound
	// Running is true when a turn for it had started (and so was interrupted
	// if seen at start-up).
	Running bool
	// Preview is the platform message that showed the answer while an
	// interrupted turn was generating it (Outbox.RecordPreview), "" if
	// none: the resumed turn's reply is delivered into it.
	Preview string
}

// Session is the current conversation state for one SessionKey. /new starts
// a fresh one; old sessions stay in the database.
type Session struct {
	ID        SessionID
	Key       SessionKey
	CreatedAt time.Time
	// Summary condenses the messages up to SummaryUpTo (compaction).
	Summary     string
	SummaryUpTo int64
	// Taint is the source of the first taint of any of its turns (see
	// Runtime.Taint), "" when none read untrusted content.
	Taint string
}

// StoredMessage is a history entry.
type StoredMessage struct {
	ID        int64
	Session   SessionID
	Turn      TurnID
	Message   llm.Message
	CreatedAt time.Time
}

// ReplyKind says what a Reply is.
type ReplyKind string

// The kinds of Reply.
const (
	ReplyAnswer ReplyKind = "answer" // the model's reply
	ReplyNotice ReplyKind = "notice" // a command's answer or a polite refusal
	ReplyError  ReplyKind = "error"  // a failure, with a reference id
)

// Reply is an outbound message, persisted before delivery.
type Reply struct {
	ID      ReplyID
	Inbound InboundID
	Turn    TurnID
	Key     SessionKey
	ReplyTo string
	Kind    ReplyKind
	Text    string
	// CreatedAt is when it was persisted.
	CreatedAt time.Time

	// Posted are the parts of the reply that earlier attempts posted, in
	// this process or an earlier one (they are persisted), in the order of
	// N. A channel posts only the parts not in it, so that a delivery cut
	// short by a failure or a crash continues where it stopped. A part
	// with Preview set is the message that showed the answer while it was
	// generated: the channel edits it into part N.
	Posted []PostedPart
	// Resumed is set when an earlier attempt may have posted a part
	// without recording it (the process died between the two, or a call
	// failed after the platform carried it out). A channel that can find
	// such parts on the platform (Slack: message metadata) or have the
	// platform drop a repeated post (Discord: an enforced nonce) does so.
	// It is not persisted.
	Resumed bool
	// Files are files for the user that the turn's tools returned, in the
	// order they were returned, sent after the text. The runtime loads
	// them before Deliver (they are persisted with the turn, see
	// TurnFileStore); a channel numbers their parts after the text's.
	Files []OutFile

	// Record, when not nil, records that part p of the reply was posted. A
	// channel that posts a reply in parts calls it right after each part
	// is posted and before it posts the next, so that a later attempt
	// skips it; the runtime sets it for Deliver (it is not persisted).
	Record func(ctx context.Context, p PostedPart)
}

// PostedPart is one message of a reply that a channel posted.
type PostedPart struct {
	// N numbers the parts of the reply from 0, as the channel splits its
	// text (the same text always splits the same way).
	N int
	// PlatformID is the platform's id of the message (a Slack ts, a
	// Discord snowflake); "" when it has none (an ephemeral answer).
	PlatformID string
	// Preview marks the message that showed the answer while it was
	// generated: it shows a beginning of the answer, not part N yet.
	Preview bool
}

// PostedPart returns the part n of r that is posted, if it is.
func (r Reply) PostedPart(n int) (PostedPart, bool) {
	for _, p := range r.Posted {
		if p.N == n {
			return p, true
		}
	}
	return PostedPart{}, false
}

// Step is one model call of a turn as it is persisted: the tokens it used,
// why the model stopped, and the messages it adds to the session's history.
type Step struct {
	// Session is the turn's session, whose history Messages are appended to.
	Session SessionID
	// N numbers the model calls of a turn from 1; recording the same N again
	// (a resumed turn) replaces the earlier record.
	N int
	// Model names the model that answered; Usage is what its provider
	// reported for the call.
	Model      string
	Usage      llm.Usage
	StopReason string
	// Messages are appended in order, within the turn.
	Messages []llm.Message
}

// TurnState is the outcome of a turn.
type TurnState string

// The states a finished turn can have.
const (
	TurnDone   TurnState = "done"
	TurnFailed TurnState = "failed"
)

// Store is what the runtime needs from persistence. Every method is safe for
// concurrent use.
type Store interface {
	Inbox
	History
	Outbox
	Approvals
}

// Approval is a persisted request for a session owner's decision.
type Approval struct {
	ID          ApprovalID
	Turn        TurnID
	CallID      string
	Tool        string
	Description string
	// Detail is what the call or request would do, as the owner is shown
	// it (redacted and bounded before it is stored).
	Detail  ApprovalDetail
	Key     SessionKey
	ReplyTo string
	// Message is the platform message that shows the prompt (opaque channel
	// data, as AskApproval returned it), "" until one is posted.
	Message   string
	State     ApprovalState
	CreatedAt time.Time
	ExpiresAt time.Time
	DecidedAt time.Time
	// DecidedBy is the principal who decided, "" for an expiry.
	DecidedBy string
}

// Approvals keeps approvals so that a pending one survives a restart.
type Approvals interface {
	// CreateApproval persists a pending approval, unless one exists for the
	// same turn, call and description: then it returns that one and
	// created is false.
	CreateApproval(ctx context.Context, a Approval) (got Approval, created bool, err error)
	// GetApproval returns an approval by id; an unknown id is an error
	// wrapping ErrUnknownApproval.
	GetApproval(ctx context.Context, id ApprovalID) (Approval, error)
	// DecideApproval moves a pending approval to state (compare-and-set). It
	// returns the approval as it is afterwards and whether this call
	// changed it.
	DecideApproval(ctx context.Context, id ApprovalID, state ApprovalState, by string) (Approval, bool, error)
	// PendingApprovals lists approvals still pending, oldest first.
	PendingApprovals(ctx context.Context) ([]Approval, error)
	// SetApprovalMessage records the platform message that shows an
	// approval's prompt.
	SetApprovalMessage(ctx context.Context, id ApprovalID, message string) error
}

// Inbox keeps accepted messages until their turn ends.
type Inbox interface {
	// AcceptInbound persists in and queues it. If its DedupeKey was seen
	// before, nothing is written and dup is true.
	AcceptInbound(ctx context.Context, in Inbound) (q QueuedInbound, dup bool, err error)
	// Pending lists accepted messages whose turn has not finished, in the
	// order they were accepted.
	Pending(ctx context.Context) ([]QueuedInbound, error)
	// StartTurn marks the inbound running, resolving the active session of
	// its key (creating it if needed). On the first start it creates the turn
	// and, in the same transaction, appends user (if not nil) to the
	// session's history. If the turn had already started (a restart), it
	// returns that turn with resumed set. Under a superseded fencing token
	// (ctx's Fence) it fails with ErrFenced and writes nothing.
	StartTurn(ctx context.Context, id InboundID, user *llm.Message) (t TurnID, s Session, resumed bool, err error)
	// RecordStep notes one model call of a turn and appends the messages it
	// produced to the session's history, atomically.
	RecordStep(ctx context.Context, t TurnID, st Step) error
	// StartToolCall and FinishToolCall record a tool call's life.
	StartToolCall(ctx context.Context, t TurnID, step int, call llm.ToolCall) error
	FinishToolCall(ctx context.Context, t TurnID, callID string, result string, isError bool) error
	// ToolResults returns the results FinishToolCall recorded for turn t's
	// calls, by call id; a call started but not finished has none.
	ToolResults(ctx context.Context, t TurnID) (map[string]ToolResult, error)
	// AmendInbound changes a queued inbound (its turn not started) found by
	// dedupe key: a.Cancel marks it done with no reply, otherwise its text
	// becomes a.Text. changed is false when it is unknown or already
	// started, or when a.Edited is older than the Edited of an edit
	// applied to it before (a deletion is applied whatever its time; an
	// edit without a time is applied, and keeps the newest time).
	AmendInbound(ctx context.Context, dedupeKey string, a Amendment) (id InboundID, changed bool, err error)
	// TaintTurn records that turn t read untrusted content from source;
	// the first source of the turn, and of its session (Session.Taint), is
	// kept.
	TaintTurn(ctx context.Context, t TurnID, source string) error
	// FinishTurn ends the turn and its inbound and persists r, atomically;
	// when last is not nil, the turn's final model call is recorded (as by
	// RecordStep) in the same transaction. t may be 0 for an inbound answered
	// without a turn (never started). When r.Key is zero the reply goes where
	// the inbound came from (its key and ReplyTo).
	FinishTurn(ctx context.Context, id InboundID, t TurnID, state TurnState, r Reply, last *Step) (ReplyID, error)
}

// History is a session's conversation record.
type History interface {
	// ActiveSession returns the current session of k, creating it if needed.
	ActiveSession(ctx context.Context, k SessionKey) (Session, error)
	// NewSession retires the current session of k and starts a fresh one.
	NewSession(ctx context.Context, k SessionKey) (Session, error)
	// Recent returns up to limit messages after the session's summary point,
	// oldest first.
	Recent(ctx context.Context, s SessionID, limit int) ([]StoredMessage, error)
	// AppendMessages adds messages to a session's history within turn t.
	AppendMessages(ctx context.Context, s SessionID, t TurnID, msgs ...llm.Message) error
	// SetSummary records a compaction summary covering messages up to upTo.
	SetSummary(ctx context.Context, s SessionID, summary string, upTo int64) error
	// SessionStats counts the messages and turns of a session.
	SessionStats(ctx context.Context, s SessionID) (messages, turns int, err error)
}

// Outbox keeps replies until a channel has delivered them.
type Outbox interface {
	// Undelivered lists replies not yet delivered, oldest first, each with
	// the parts recorded as posted (Reply.Posted): those of RecordPart,
	// and the preview of RecordPreview as part 0 when part 0 itself is not
	// recorded.
	Undelivered(ctx context.Context) ([]Reply, error)
	// RecordPart records that part p of reply id was posted. Recording a
	// part again replaces it.
	RecordPart(ctx context.Context, id ReplyID, p PostedPart) error
	// RecordPreview records that platformID is the message showing the
	// answer to inbound id while it is generated; the reply to id starts
	// with it (its part 0, to be edited).
	RecordPreview(ctx context.Context, id InboundID, platformID string) error
	// MarkDelivered records a successful delivery and the platform's id.
	MarkDelivered(ctx context.Context, id ReplyID, platformID string) error
	// MarkFailed records a delivery that will not be tried again.
	MarkFailed(ctx context.Context, id ReplyID, reason string) error
}

// ToolCall is one call the model asked for, with who asked.
type ToolCall struct {
	ID   string
	Name string
	// Args is valid JSON (the runtime checks before calling).
	Args json.RawMessage
	Key  SessionKey
	Turn TurnID
	// Taint is the source of the turn's taint when the call was made (see
	// Runtime.Taint), "" when the turn had read no untrusted content. A
	// runner then asks the owner before the call sends data out.
	Taint string
}

// ToolResult is what a tool call produced. Failures of the tool are data
// (IsError), written so the model can act on them.
type ToolResult struct {
	Content string
	IsError bool
	// Taint, when not "", says the content is untrusted and names its
	// source ("example.org"): the runtime marks the turn tainted (see
	// Runtime.Taint) with "tool <name>: <Taint>".
	Taint string
	// ToolsChanged says the tools the user may use changed (they connected
	// an account): the runtime lists them again before the next step.
	ToolsChanged bool
	// File, when not nil, is a file the tool returned for the user: the
	// runtime checks it for leaks, keeps it and attaches it to the turn's
	// reply; the model gets a note naming it, never its bytes.
	File *OutFile
}

// ToolRunner runs tools for the agent. The sandbox implements it.
type ToolRunner interface {
	// Tools lists the tools principal p may use.
	Tools(ctx context.Context, p Principal) ([]llm.Tool, error)
	// Run runs one call. It returns an error only when the call could not
	// be attempted at all; a tool that fails returns IsError.
	Run(ctx context.Context, call ToolCall) (ToolResult, error)
}

// ToolMemory is how busy a ToolRunner's memory budget is: bytes of tool
// memory in use and the budget, calls waiting for memory now, and the
// calls that had to wait so far with their total time waiting.
type ToolMemory struct {
	Used, Limit uint64
	Waiting     int
	Waits       int64
	WaitTime    time.Duration
}

// ToolMemoryReporter is a ToolRunner with a memory budget (the sandbox):
// /status shows its ToolMemory.
type ToolMemoryReporter interface {
	ToolMemory() ToolMemory
}

// Channel delivers replies on one platform.
type Channel interface {
	// Platform is the Principal.Platform this channel serves.
	Platform() string
	// Deliver posts r and returns the platform's message id. It must be
	// safe to call again for the same r, after a failure or a crash: a
	// channel that posts r in several messages records each one as it is
	// posted (r.Record) and posts only those r.Posted does not list.
	Deliver(ctx context.Context, r Reply) (platformID string, err error)
}

// Streamer is a Channel that can show a reply while it is generated.
type Streamer interface {
	// Stream shows more text of the answer to inbound id. Delivery of the
	// final Reply follows. A channel that posts a message to show the
	// answer tells the runtime at once (Runtime.Previewed), so that the
	// reply's delivery, after a restart too, edits that message into its
	// first part rather than leave it and post the answer again.
	Stream(ctx context.Context, id InboundID, key SessionKey, replyTo string, delta string)
}

// ErrDuplicate is returned by Accept for an inbound already seen.
var ErrDuplicate = errors.New("agent: duplicate inbound")
